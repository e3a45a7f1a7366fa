"""The SQLite registry: round trips, pragmas, atomic failures and comparison, on real files."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from evals.registry import SCHEMA_VERSION, Registry, default_path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "nested" / "registry.db") as reg:
        yield reg


def _results(run_id: str | None = None) -> list[dict]:
    return [
        {"name": "base", "error_rate": 0.62, "ci_low": 0.55, "ci_high": 0.69, "trainable_params": 0},
        {
            "name": "qtha-r8",
            "artifact": Path("runs/qtha/artifact"),
            "run_id": run_id,
            "error_rate": 0.36,
            "ci_low": 0.30,
            "ci_high": 0.43,
            "trainable_params": 221_184,
            "rouge_l": float("nan"),
            "per_seed": [0.35, 0.37],
        },
    ]


def _counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("evaluations", "results")
        )
    finally:
        conn.close()


def test_default_path_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QTHA_REGISTRY", str(tmp_path / "r.db"))
    assert default_path() == tmp_path / "r.db"
    monkeypatch.delenv("QTHA_REGISTRY")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_path() == tmp_path / "xdg" / "qtha" / "registry.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_path() == tmp_path / "home" / ".local" / "share" / "qtha" / "registry.db"


def test_registry_uses_env_path_when_none_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QTHA_REGISTRY", str(tmp_path / "env.db"))
    with Registry() as reg:
        assert reg.path == tmp_path / "env.db"
    assert (tmp_path / "env.db").exists()


def test_wal_and_foreign_keys_are_on(registry: Registry) -> None:
    assert registry.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert registry.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # WAL is a property of the file: a fresh connection sees it too.
    conn = sqlite3.connect(registry.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_run_round_trip_and_update(registry: Registry) -> None:
    run_id = registry.record_run(
        {"method": "qtha", "variant": "full", "model": "smollm2-135m", "steps": 100, "loss_first": 2.5,
         "loss_last": 1.25, "trainable_params": 221_184, "config_json": {"r": 8, "layers": 2}}
    )  # fmt: skip
    assert run_id.startswith("qtha-")
    (run,) = registry.list_runs()
    assert run["id"] == run_id and run["steps"] == 100 and run["loss_last"] == 1.25
    assert run["config_json"] == {"r": 8, "layers": 2}
    # The same id again updates the record instead of adding one.
    registry.record_run({"id": run_id, "method": "qtha", "model": "smollm2-135m", "steps": 200})
    (run,) = registry.list_runs()
    assert run["steps"] == 200


@pytest.mark.parametrize(
    ("run", "error", "message"),
    [
        ({"method": "qtha"}, ValueError, "'model'"),
        ({"method": "qtha", "model": "m", "stepz": 3}, ValueError, "unknown keys"),
        ({"method": "qtha", "model": "m", "steps": "100"}, TypeError, "run\\['steps'\\]"),
        ({"method": "qtha", "model": "m", "loss_last": float("inf")}, ValueError, "finite"),
        ({"method": "qtha", "model": "m", "config_json": "{not json"}, ValueError, "config_json"),
    ],
)
def test_record_run_validates(registry: Registry, run: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        registry.record_run(run)
    assert registry.list_runs() == []


def test_evaluation_round_trip(registry: Registry) -> None:
    run_id = registry.record_run({"method": "qtha", "model": "smollm2-135m"})
    payload = {"results": [{"name": "base"}], "report_md": "out/report.md"}
    eid = registry.record_evaluation(
        {"task": "gsm8k", "data": "gsm8k.jsonl", "model": "smollm2-135m", "limit": 50, "seeds": [0, 1, 2],
         "report_md": Path("out/report.md"), "report_html": "out/report.html", "json": payload},
        _results(run_id),
    )  # fmt: skip
    ev = registry.get_evaluation(eid)
    assert ev["task"] == "gsm8k" and ev["limit"] == 50 and ev["seeds"] == [0, 1, 2]
    assert ev["report_md"] == "out/report.md" and ev["json"] == payload
    base, qtha = ev["results"]
    assert base["name"] == "base" and base["error_rate"] == 0.62 and base["run_id"] is None
    assert qtha["run_id"] == run_id and qtha["artifact"] == "runs/qtha/artifact"
    assert qtha["trainable_params"] == 221_184 and qtha["ci_high"] == 0.43
    # The whole result dict is kept; NaN becomes null since JSON has no NaN.
    assert qtha["metrics"]["per_seed"] == [0.35, 0.37] and qtha["metrics"]["rouge_l"] is None

    (listed,) = registry.list_evaluations()
    assert listed["id"] == eid and "json" not in listed
    assert [r["name"] for r in listed["results"]] == ["base", "qtha-r8"]
    assert listed["results"][1]["error_rate"] == 0.36


def test_records_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with Registry(path) as reg:
        eid = reg.record_evaluation({"task": "counseling"}, [{"name": "base", "eval_loss": 2.1}])
    with Registry(path) as reg:
        assert reg.get_evaluation(eid)["results"][0]["eval_loss"] == 2.1


@pytest.mark.parametrize(
    ("bad_result", "message"),
    [
        ({"name": "lora-r8", "error_rate": "0.4"}, "results\\[2\\]\\['error_rate'\\]"),
        ({"name": "", "error_rate": 0.4}, "results\\[2\\]\\['name'\\]"),
        ({"name": "base", "error_rate": 0.4}, "used by an earlier result"),
        ({"name": "lora-r8", "run_id": "no-such-run"}, "not a recorded run"),
        ({"name": "lora-r8", "trainable_params": -5}, "trainable_params"),
    ],
)
def test_a_bad_result_leaves_nothing_written(registry: Registry, bad_result: dict, message: str) -> None:
    registry.record_evaluation({"task": "gsm8k"}, _results())  # an earlier, good evaluation
    before = _counts(registry.path)
    assert before == (1, 2)
    # The evaluation row and results[0:2] are written before results[2] fails: all must roll back.
    with pytest.raises((ValueError, TypeError), match=message):
        registry.record_evaluation({"task": "gsm8k"}, [*_results(), bad_result])
    assert _counts(registry.path) == before
    assert [e["id"] for e in registry.list_evaluations()] == [1]
    # The registry is still usable; the rolled-back evaluation's id was never taken.
    assert registry.record_evaluation({"task": "gsm8k"}, _results()) == 2


@pytest.mark.parametrize(
    ("evaluation", "results", "message"),
    [
        ({"data": "x"}, [{"name": "base"}], "'task'"),
        ({"task": "gsm8k", "limit": 0}, [{"name": "base"}], "limit"),
        ({"task": "gsm8k", "extra": 1}, [{"name": "base"}], "unknown keys"),
        ({"task": "gsm8k"}, [], "non-empty list"),
    ],
)
def test_record_evaluation_validates(
    registry: Registry, evaluation: dict, results: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        registry.record_evaluation(evaluation, results)
    assert _counts(registry.path) == (0, 0)


def test_unknown_evaluation_is_a_clear_error(registry: Registry) -> None:
    with pytest.raises(ValueError, match="no evaluations"):
        registry.get_evaluation(1)
    registry.record_evaluation({"task": "gsm8k"}, _results())
    with pytest.raises(ValueError, match=r"evaluation 7 is not in the registry .*known ids: 1\.\.1"):
        registry.get_evaluation(7)


def test_compare(registry: Registry) -> None:
    a = registry.record_evaluation({"task": "gsm8k", "limit": 50}, _results())
    b_results = [
        {"name": "base", "error_rate": 0.60, "trainable_params": 0},
        {"name": "lora-r8", "error_rate": 0.40, "trainable_params": 921_600},
    ]
    b = registry.record_evaluation({"task": "gsm8k", "limit": 100}, b_results)
    out = registry.compare(a, b)
    assert out["a"]["limit"] == 50 and out["b"]["limit"] == 100
    assert list(out["results"]) == ["base", "qtha-r8", "lora-r8"]
    base = out["results"]["base"]
    assert base["a"]["error_rate"] == 0.62 and base["b"]["error_rate"] == 0.60
    assert base["delta"]["error_rate"] == pytest.approx(-0.02)
    assert "ci_low" not in base["delta"]  # b has no interval
    assert out["results"]["qtha-r8"]["b"] is None and out["results"]["qtha-r8"]["delta"] == {}
    assert out["results"]["lora-r8"]["a"] is None
    with pytest.raises(ValueError, match="evaluation 99"):
        registry.compare(a, 99)


def test_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "not.db"
    bad.write_text("this is not sqlite, " * 100)
    with pytest.raises(ValueError, match="not a usable SQLite database"):
        Registry(bad)


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match="schema version"):
        Registry(path)
