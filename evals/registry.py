"""The registry: every training run and every evaluation, recorded in one SQLite file.

Location (``default_path()``), first that applies:

1. ``$QTHA_REGISTRY``, a path to the database file (``QTHA_REGISTRY=./registry.db qtha-eval history``);
2. ``$XDG_DATA_HOME/qtha/registry.db``;
3. ``~/.local/share/qtha/registry.db``.

The file is opened with sqlite-utils in WAL journal mode (readers never block the one writer, so a
report can be read while a training run records itself) and with ``PRAGMA foreign_keys = ON``, which
SQLite leaves off unless each connection asks.

Tables::

    runs         id TEXT pk | created | method | variant | model | data | steps | loss_first | loss_last
                 | trainable_params | artifact | config_json | metrics_path
    evaluations  id INTEGER pk autoincrement | created | task | data | model | limit | seeds
                 | report_md | report_html | json
    results      id INTEGER pk autoincrement | evaluation_id -> evaluations.id | name | artifact
                 | run_id -> runs.id (nullable) | error_rate | eval_loss | token_error_rate
                 | safety_pass_rate | ci_low | ci_high | trainable_params | metrics_json
                 (one row per evaluated model; ``name`` unique within an evaluation, ``base`` for the
                 base model)

JSON columns (``config_json``, ``seeds``, ``json``, ``metrics_json``) hold JSON text and come back
decoded. JSON has no NaN or infinity, so non-finite floats inside them are stored as ``null``; the
metric columns themselves refuse non-finite values.

An evaluation and its results are written in one transaction: if any result is invalid, nothing of
that evaluation is written.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlite_utils

__all__ = ["METRIC_COLUMNS", "SCHEMA_VERSION", "Registry", "default_path"]

SCHEMA_VERSION = 1

METRIC_COLUMNS = ("error_rate", "eval_loss", "token_error_rate", "safety_pass_rate", "ci_low", "ci_high")
"""Metrics that get a column of their own in ``results`` (all of a result's keys are in metrics_json)."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        created TEXT NOT NULL,
        method TEXT NOT NULL,
        variant TEXT,
        model TEXT NOT NULL,
        data TEXT,
        steps INTEGER,
        loss_first REAL,
        loss_last REAL,
        trainable_params INTEGER,
        artifact TEXT,
        config_json TEXT,
        metrics_path TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS evaluations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created TEXT NOT NULL,
        task TEXT NOT NULL,
        data TEXT,
        model TEXT,
        "limit" INTEGER,
        seeds TEXT,
        report_md TEXT,
        report_html TEXT,
        json TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        evaluation_id INTEGER NOT NULL REFERENCES evaluations(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        artifact TEXT,
        run_id TEXT REFERENCES runs(id),
        error_rate REAL,
        eval_loss REAL,
        token_error_rate REAL,
        safety_pass_rate REAL,
        ci_low REAL,
        ci_high REAL,
        trainable_params INTEGER,
        metrics_json TEXT NOT NULL,
        UNIQUE (evaluation_id, name)
    )""",
    "CREATE INDEX IF NOT EXISTS results_by_evaluation ON results (evaluation_id)",
)

_RUN_TEXT = ("id", "created", "method", "variant", "model", "data", "artifact", "metrics_path")
_RUN_INT = ("steps", "trainable_params")
_RUN_FLOAT = ("loss_first", "loss_last")
_RUN_KEYS = (*_RUN_TEXT, *_RUN_INT, *_RUN_FLOAT, "config_json")
_EVAL_TEXT = ("created", "task", "data", "model", "report_md", "report_html")
_EVAL_KEYS = (*_EVAL_TEXT, "limit", "seeds", "json")
_RESULT_SUMMARY = ("name", "artifact", "run_id", *METRIC_COLUMNS, "trainable_params")


def default_path() -> Path:
    """Where the registry lives unless a path is given (see the module docstring)."""
    if env := os.environ.get("QTHA_REGISTRY"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "qtha" / "registry.db"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None and paths by str, ready for strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _to_json(value: Any, where: str) -> str:
    try:
        return json.dumps(_json_safe(value), allow_nan=False)
    except TypeError as exc:
        raise TypeError(f"{where}: expected JSON-serialisable data; {exc}") from exc


def _text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{where}: expected a str or None; got {type(value).__name__} {value!r}")


def _int(value: Any, where: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: expected an int or None; got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: expected an int >= {minimum}; got {value}")
    return int(value)


def _float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: expected a number or None; got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite number or None; got {value!r}")
    return float(value)


def _check_keys(row: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(row, Mapping):
        raise TypeError(f"{where}: expected a dict; got {type(row).__name__}")
    unknown = sorted(set(row) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected keys among {list(allowed)}")


class Registry:
    """One SQLite registry file of training runs, evaluations and their per-model results.

    ``path`` defaults to ``default_path()``; its folder is created. Use as a context manager, or call
    ``close()``, to release the file.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_path()
        if self.path.is_dir():
            raise ValueError(f"Registry: expected a database file path; got the folder {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(self.path)
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ValueError(f"Registry: {self.path} is not a usable SQLite database: {exc}") from exc
        except ValueError:
            self.db.close()
            raise

    def _setup(self) -> None:
        self.db.execute("PRAGMA foreign_keys = ON")
        self.db.enable_wal()
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"Registry: {self.path} has schema version {version}; this qtha reads version "
                f"{SCHEMA_VERSION} (upgrade qtha, or set QTHA_REGISTRY to another file)"
            )
        with self.db.atomic():
            for statement in _SCHEMA:
                self.db.execute(statement)
        self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs -------------------------------------------------------------------------------------

    def record_run(self, run: dict[str, Any]) -> str:
        """Record a training run; returns its id.

        Keys are the ``runs`` columns; ``method`` and ``model`` are required. ``id`` defaults to
        ``<method>-<12 hex digits>`` and ``created`` to now (UTC, ISO 8601). ``config_json`` is a
        JSON-serialisable mapping (or JSON text). Recording a run again under the same id updates
        its record, so a re-run replaces what the earlier one wrote.
        """
        _check_keys(run, _RUN_KEYS, "record_run")
        row: dict[str, Any] = {k: _text(run.get(k), f"run[{k!r}]") for k in _RUN_TEXT}
        row.update({k: _int(run.get(k), f"run[{k!r}]") for k in _RUN_INT})
        row.update({k: _float(run.get(k), f"run[{k!r}]") for k in _RUN_FLOAT})
        for key in ("method", "model"):
            if not row[key]:
                raise ValueError(f"record_run: expected a non-empty {key!r}; got {run.get(key)!r}")
        config = run.get("config_json")
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as exc:
                raise ValueError(f"run['config_json']: expected JSON text or a mapping; {exc}") from exc
        row["config_json"] = None if config is None else _to_json(config, "run['config_json']")
        row["id"] = row["id"] or f"{row['method']}-{uuid.uuid4().hex[:12]}"
        row["created"] = row["created"] or _now()
        with self.db.atomic():
            self.db["runs"].upsert(row, pk="id")
        return row["id"]

    def list_runs(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first, with ``config_json`` decoded."""
        rows = self.db.query("SELECT * FROM runs ORDER BY created, id")
        return [{**r, "config_json": _loads(r["config_json"])} for r in rows]

    # --- evaluations ------------------------------------------------------------------------------

    def record_evaluation(self, evaluation: dict[str, Any], results: list[dict[str, Any]]) -> int:
        """Record one evaluation and its per-model results atomically; returns the evaluation id.

        ``evaluation`` keys: ``task`` (required), ``data``, ``model``, ``limit``, ``seeds`` (any
        JSON, e.g. ``[0, 1, 2]``), ``report_md``, ``report_html``, ``json`` (the command's JSON
        payload), ``created`` (defaults to now). Each result needs a unique ``name``; ``artifact``,
        ``run_id`` (a recorded run's id, or None), the ``METRIC_COLUMNS`` and ``trainable_params`` fill
        their columns, and the whole result dict is kept in ``metrics_json``.

        The evaluation row and the results are written in one transaction, each result checked as it
        is written: a bad result (wrong type, duplicate name, unknown ``run_id``) raises and leaves
        nothing of this evaluation behind.
        """
        _check_keys(evaluation, _EVAL_KEYS, "record_evaluation")
        row: dict[str, Any] = {k: _text(evaluation.get(k), f"evaluation[{k!r}]") for k in _EVAL_TEXT}
        if not row["task"]:
            raise ValueError(
                f"record_evaluation: expected a non-empty 'task'; got {evaluation.get('task')!r}"
            )
        row["created"] = row["created"] or _now()
        row["limit"] = _int(evaluation.get("limit"), "evaluation['limit']", minimum=1)
        row["seeds"] = _to_json(evaluation.get("seeds"), "evaluation['seeds']")
        row["json"] = _to_json(evaluation.get("json"), "evaluation['json']")
        if not isinstance(results, list) or not results:
            raise ValueError(f"record_evaluation: expected a non-empty list of results; got {results!r:.200}")
        with self.db.atomic():
            evaluation_id = self.db["evaluations"].insert(row).last_pk
            for i, result in enumerate(results):
                self._insert_result(evaluation_id, i, result)
        return int(evaluation_id)

    def _insert_result(self, evaluation_id: int, index: int, result: dict[str, Any]) -> None:
        where = f"results[{index}]"
        if not isinstance(result, Mapping):
            raise TypeError(f"{where}: expected a dict; got {type(result).__name__}")
        name = result.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}['name']: expected a non-empty str; got {name!r}")
        row: dict[str, Any] = {
            "evaluation_id": evaluation_id,
            "name": name,
            "artifact": _text(result.get("artifact"), f"{where}['artifact']"),
            "run_id": _text(result.get("run_id"), f"{where}['run_id']"),
            "trainable_params": _int(result.get("trainable_params"), f"{where}['trainable_params']"),
            "metrics_json": _to_json(result, where),
        }
        row.update({k: _float(result.get(k), f"{where}[{k!r}]") for k in METRIC_COLUMNS})
        try:
            self.db["results"].insert(row)
        except sqlite3.IntegrityError as exc:
            # Name the constraint in the caller's terms; SQLite only says which kind failed.
            if row["run_id"] is not None and not self._exists("runs", "id = ?", [row["run_id"]]):
                raise ValueError(
                    f"{where}['run_id']: {row['run_id']!r} is not a recorded run "
                    "(record_run it first, or pass None)"
                ) from exc
            if self._exists("results", "evaluation_id = ? AND name = ?", [evaluation_id, name]):
                raise ValueError(
                    f"{where}['name']: {name!r} is used by an earlier result; names must be unique"
                ) from exc
            raise ValueError(f"{where}: cannot be recorded: {exc}") from exc

    def _exists(self, table: str, where: str, params: list[Any]) -> bool:
        return self.db.execute(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", params).fetchone() is not None

    def list_evaluations(self) -> list[dict[str, Any]]:
        """Every evaluation, oldest first, each with a short ``results`` list (names and main metrics).

        The stored ``json`` payload is left out here; ``get_evaluation`` has it.
        """
        evaluations = list(
            self.db.query(
                'SELECT id, created, task, data, model, "limit", seeds, report_md, report_html '
                "FROM evaluations ORDER BY id"
            )
        )
        summaries: dict[int, list[dict[str, Any]]] = {e["id"]: [] for e in evaluations}
        columns = ", ".join(_RESULT_SUMMARY)
        for r in self.db.query(f"SELECT evaluation_id, {columns} FROM results ORDER BY id"):
            summaries[r.pop("evaluation_id")].append(r)
        return [{**e, "seeds": _loads(e["seeds"]), "results": summaries[e["id"]]} for e in evaluations]

    def get_evaluation(self, id: int) -> dict[str, Any]:
        """One evaluation with all its columns (``json`` decoded) and its full ``results``.

        Each result carries its columns and ``metrics``, the result dict as it was recorded.
        Raises ValueError naming the registry file when ``id`` is not recorded.
        """
        rows = list(self.db.query("SELECT * FROM evaluations WHERE id = ?", [id]))
        if not rows:
            known = [r["id"] for r in self.db.query("SELECT id FROM evaluations ORDER BY id")]
            shown = f"known ids: {known[0]}..{known[-1]}" if known else "the registry has no evaluations"
            raise ValueError(f"evaluation {id!r} is not in the registry {self.path} ({shown})")
        evaluation = rows[0]
        evaluation["seeds"] = _loads(evaluation["seeds"])
        evaluation["json"] = _loads(evaluation["json"])
        results = []
        for r in self.db.query("SELECT * FROM results WHERE evaluation_id = ? ORDER BY id", [id]):
            r["metrics"] = _loads(r.pop("metrics_json"))
            results.append(r)
        evaluation["results"] = results
        return evaluation

    def compare(self, id_a: int, id_b: int) -> dict[str, Any]:
        """Two evaluations side by side, per result name.

        Returns ``{'a': {...}, 'b': {...}, 'results': {name: {'a': metrics | None, 'b': metrics | None,
        'delta': {metric: b - a}}}}`` where ``a``/``b`` at the top are the evaluations' columns (without
        results and json), the metrics are the ``METRIC_COLUMNS`` and ``trainable_params``, and
        ``delta`` holds the metrics both sides have. Names appear in ``a``'s order, then ``b``'s new ones.
        """
        sides = {"a": self.get_evaluation(id_a), "b": self.get_evaluation(id_b)}
        metric_keys = (*METRIC_COLUMNS, "trainable_params")
        per_side = {
            side: {r["name"]: {k: r[k] for k in metric_keys} for r in ev["results"]}
            for side, ev in sides.items()
        }
        names = list(per_side["a"]) + [n for n in per_side["b"] if n not in per_side["a"]]
        out_results: dict[str, Any] = {}
        for name in names:
            a, b = per_side["a"].get(name), per_side["b"].get(name)
            delta = {}
            if a is not None and b is not None:
                delta = {k: b[k] - a[k] for k in metric_keys if a[k] is not None and b[k] is not None}
            out_results[name] = {"a": a, "b": b, "delta": delta}
        header = {
            side: {k: v for k, v in ev.items() if k not in ("results", "json")} for side, ev in sides.items()
        }
        return {**header, "results": out_results}


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
