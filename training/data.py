"""Training data: one chat-example schema, loaders for the domain data sets, splits.

Every data set, real or generated, becomes a list of :class:`ChatExample`: a chat (``system`` /
``user`` / ``assistant`` messages) whose LAST message is the assistant reply the model is trained to
produce. Tokenisation with assistant-only labels lives in :mod:`training.tokenize`.

A data set is named by a spec string, so the command line, the configs and the run manifests all say
the same thing::

    gsm8k:PATH                       GSM8K JSONL (question, answer with <<calc>> marks and '#### N')
    NAME:PATH@START:END              any file loader: only examples START..END in file order (a Python
                                     slice: gsm8k:train.jsonl@:-500 trains on all but the last 500 rows,
                                     gsm8k:train.jsonl@-500: evaluates on them)
    counselchat:PATH[#train|val|test|all]   CounselChat CSV (honours its 'split' column; default train)
    esconv:PATH                      ESConv JSONL dialogues: one example per supporter turn
    mentalchat16k:PATH               MentalChat16K CSV (instruction, input, output)
    cpsycoun:PATH                    CPsyCounD in LLaMA-Factory form (JSON list or JSONL)
    chat:PATH                        generic JSONL: {"messages": [...], "domain": ..., "answer": ...}
    hf:OWNER/NAME[#SPLIT]            a hub data set, through `datasets` (needs it installed and online)
    synthetic-math[:N]               built-in generators (training.synthetic), N defaults to 200
    synthetic-counseling[:N]

Loading is strict by default: a malformed row raises :class:`DataError` naming the file, the line
(JSONL), row (CSV, 1-based, header not counted) or item (JSON list), and the field. ``skip_bad=True``
skips such rows and counts them. Exact duplicates (same messages) are dropped and counted, because
repeated rows (CounselChat has 80 in train) silently over-weight some replies.

Every loader of a domain uses that domain's system prompt from :mod:`quantum_adapters.domains`, so
that training prompts match serving prompts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from quantum_adapters.domains import COUNSELING, DOMAINS, MATH
from training.examples import ChatExample, message_problem, normalize_number
from training.synthetic import synthetic_counseling, synthetic_math

__all__ = ["DataError", "DataReport", "domain_of", "load", "load_many", "split"]

_DEFAULT_SYNTHETIC_N = 200


class DataError(ValueError):
    """A data set cannot be read; the message names the file, line/row/item and field."""


@dataclass
class DataReport:
    """What a load did: counts a run manifest records next to the spec strings."""

    loaded: int = 0
    """Examples returned."""
    skipped_bad: int = 0
    """Malformed rows skipped (only with ``skip_bad=True``; otherwise the first one raises)."""
    duplicates: int = 0
    """Examples dropped because an earlier one had exactly the same messages."""
    too_long: int = 0
    """Examples whose prompt alone does not fit ``max_len`` (set by ``training.tokenize.encode_all``)."""
    per_source: dict[str, int] = field(default_factory=dict)
    """Examples returned per spec string."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# public API


def load(
    spec: str, *, skip_bad: bool = False, seed: int = 0, limit: int | None = None
) -> tuple[list[ChatExample], DataReport]:
    """Load one data set named by ``spec`` (grammar in the module docstring).

    ``seed`` seeds the generators (real files are returned in file order); ``limit`` stops after that
    many examples. Raises :class:`DataError` for an unknown name, a missing file, a malformed row
    (unless ``skip_bad``), or a hub data set that cannot be fetched.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit: expected None or an integer >= 0; got {limit!r}")
    spec = spec.strip()
    name, sep, arg = spec.partition(":")
    name = name.strip().lower()
    report = DataReport()
    if name in _GENERATORS:
        examples = _generate(name, arg if sep else "", seed, spec)
        rows: Iterable[list[ChatExample]] = [examples]
    elif name == "hf":
        rows = _hub_examples(arg, skip_bad, report)
    elif name in _FILE_LOADERS:
        if not sep or not arg.strip():
            raise DataError(
                f"data spec {spec!r}: {name} needs a file: use {name}:PATH (or hf:OWNER/NAME for the hub)"
            )
        arg, window = _row_window(arg.strip(), spec)
        rows = _file_examples(name, arg, skip_bad, report)
        if window is not None:
            rows = [list(_flatten(rows))[window]]
    else:
        raise DataError(f"data spec {spec!r}: unknown data set {name!r}; known: {', '.join(_known_names())}")
    out = _dedupe(_flatten(rows), report, seen=set(), limit=limit)
    report.loaded = len(out)
    report.per_source[spec] = len(out)
    return out, report


def load_many(specs: str | list[str], **kw: Any) -> tuple[list[ChatExample], DataReport]:
    """Load several specs (a list or one comma-separated string) and merge them.

    Keyword arguments go to :func:`load` (``limit`` applies per spec). Duplicates across specs are
    dropped too, keeping the first; the merged report sums the counts.
    """
    if isinstance(specs, str):
        specs = [s for s in (part.strip() for part in specs.split(",")) if s]
    if not specs:
        raise DataError("no data specs given; expected e.g. 'gsm8k:PATH' or 'synthetic-math:200'")
    merged = DataReport()
    seen: set[tuple] = set()
    out: list[ChatExample] = []
    for spec in specs:
        examples, report = load(spec, **kw)
        kept = _dedupe(examples, merged, seen=seen, limit=None)
        out.extend(kept)
        merged.skipped_bad += report.skipped_bad
        merged.duplicates += report.duplicates
        merged.too_long += report.too_long
        merged.per_source[spec.strip()] = merged.per_source.get(spec.strip(), 0) + len(kept)
    merged.loaded = len(out)
    return out, merged


def split(
    examples: list[ChatExample], dev_fraction: float = 0.05, seed: int = 0, min_dev: int = 1
) -> tuple[list[ChatExample], list[ChatExample]]:
    """Deterministic train/dev split: ``(train, dev)``, each in the input order.

    Examples are assigned by a sha256 of ``seed`` and their content (or their ``meta["group"]``, so
    all turns of one dialogue, or all answers to one question, fall on the same side and the dev set
    measures unseen conversations). The same seed and data give the same split on any machine and any
    Python hash seed. The dev set has at least ``max(min_dev, round(dev_fraction * len(examples)))``
    examples (a little more when a group straddles the cut).
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction: expected 0 <= value < 1; got {dev_fraction!r}")
    if min_dev < 0:
        raise ValueError(f"min_dev: expected an integer >= 0; got {min_dev!r}")
    n_dev = max(min_dev, round(dev_fraction * len(examples)))
    if n_dev == 0:
        return list(examples), []
    if n_dev >= len(examples):
        raise ValueError(
            f"split: cannot hold out {n_dev} dev examples from {len(examples)}; expected more examples "
            "or a smaller dev_fraction / min_dev"
        )
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.meta.get("group") or _fingerprint(ex), []).append(i)
    order = sorted(groups, key=lambda g: hashlib.sha256(f"{seed}\x00{g}".encode()).digest())
    dev_idx: set[int] = set()
    for g in order:
        if len(dev_idx) >= n_dev:
            break
        dev_idx.update(groups[g])
    if len(dev_idx) == len(examples):
        raise ValueError(
            f"split: the {len(examples)} examples form only {len(groups)} group(s) (meta['group']); "
            "cannot leave any for training"
        )
    train = [ex for i, ex in enumerate(examples) if i not in dev_idx]
    dev = [ex for i, ex in enumerate(examples) if i in dev_idx]
    return train, dev


def domain_of(examples: Iterable[ChatExample]) -> str:
    """The majority domain (ties go to the name first in alphabetical order)."""
    counts = Counter(ex.domain for ex in examples)
    if not counts:
        raise ValueError("domain_of: expected at least one example; got none")
    return min(counts, key=lambda d: (-counts[d], d))


# --------------------------------------------------------------------------------------------------
# driver


class _BadRow(ValueError):
    """A malformed row; the driver adds the file and line/row before it reaches the user."""


# A row reader yields (where, row): `where` is "line 12" / "row 3" / "item 4", row a dict or the
# _BadRow that parsing it raised (so that skip_bad can go on past it).
_Reader = Callable[[Path, str | None], Iterator[tuple[str, dict | _BadRow]]]
_Converter = Callable[[dict, str], list[ChatExample]]


def _file_examples(name: str, arg: str, skip_bad: bool, report: DataReport) -> Iterator[list[ChatExample]]:
    reader, convert, takes_split = _FILE_LOADERS[name]
    path_text, split_name = arg, None
    if takes_split and "#" in arg:
        path_text, _, split_name = arg.rpartition("#")
        split_name = split_name.strip().lower()
    path = Path(path_text).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{name}: data file {str(path)!r} {what}")
    return _convert_rows(reader(path, split_name), convert, f"{name}:{path}", str(path), skip_bad, report)


def _convert_rows(
    rows: Iterator[tuple[str, dict | _BadRow]],
    convert: _Converter,
    source_prefix: str,
    label: str,
    skip_bad: bool,
    report: DataReport,
) -> Iterator[list[ChatExample]]:
    for where, row in rows:
        try:
            if isinstance(row, _BadRow):
                raise row
            examples = convert(row, f"{source_prefix}#{where}")
        except _BadRow as exc:
            if not skip_bad:
                raise DataError(f"{label} {where}: {exc}") from None
            report.skipped_bad += 1
            continue
        yield examples


def _flatten(chunks: Iterable[list[ChatExample]]) -> Iterator[ChatExample]:
    for chunk in chunks:
        yield from chunk


def _dedupe(
    examples: Iterable[ChatExample], report: DataReport, seen: set[tuple], limit: int | None
) -> list[ChatExample]:
    out: list[ChatExample] = []
    if limit == 0:
        return out
    for ex in examples:
        key = tuple((m["role"], m["content"]) for m in ex.messages)
        if key in seen:
            report.duplicates += 1
            continue
        seen.add(key)
        out.append(ex)
        if limit is not None and len(out) >= limit:
            break
    return out


def _fingerprint(ex: ChatExample) -> str:
    return hashlib.sha256(json.dumps(ex.messages, sort_keys=True).encode()).hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def _generate(name: str, arg: str, seed: int, spec: str) -> list[ChatExample]:
    n = _DEFAULT_SYNTHETIC_N
    if arg.strip():
        try:
            n = int(arg)
        except ValueError:
            raise DataError(
                f"data spec {spec!r}: expected {name}[:N] with N an integer; got {arg!r}"
            ) from None
        if n < 0:
            raise DataError(f"data spec {spec!r}: N expected >= 0; got {n}")
    return _GENERATORS[name](n, seed)


def _row_window(arg: str, spec: str) -> tuple[str, slice | None]:
    """Split a trailing ``@START:END`` (a Python slice over the file's examples, in file order) off a path,
    e.g. ``gsm8k:train.jsonl@:-500`` (all but the last 500) and ``gsm8k:train.jsonl@-500:`` (the last 500)."""
    path, at, window = arg.rpartition("@")
    if not at or ":" not in window:
        return arg, None
    start, _, end = window.partition(":")
    try:
        bounds = [int(v) if v.strip() else None for v in (start, end)]
    except ValueError:
        raise DataError(
            f"data spec {spec!r}: expected @START:END with integers (e.g. @:-500); got @{window}"
        ) from None
    return path, slice(*bounds)


def _known_names() -> list[str]:
    return [f"{n}:PATH" for n in _FILE_LOADERS] + ["hf:OWNER/NAME"] + [f"{n}[:N]" for n in _GENERATORS]


# --------------------------------------------------------------------------------------------------
# readers


def _jsonl_rows(path: Path, split_name: str | None) -> Iterator[tuple[str, dict | _BadRow]]:
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            yield f"line {lineno}", _parse_json_object(line)


def _parse_json_object(text: str) -> dict | _BadRow:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return _BadRow(f"invalid JSON ({exc})")
    if not isinstance(row, dict):
        return _BadRow(f"expected a JSON object; got {type(row).__name__}")
    return row


def _json_items(path: Path, split_name: str | None) -> Iterator[tuple[str, dict | _BadRow]]:
    """A JSON list of objects (LLaMA-Factory's form), or JSONL when the file does not start with '['."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.lstrip().startswith("["):
        yield from _jsonl_rows(path, split_name)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from None
    for i, item in enumerate(items):
        if isinstance(item, dict):
            yield f"item {i}", item
        else:
            yield f"item {i}", _BadRow(f"expected a JSON object; got {type(item).__name__}")


def _csv_rows(
    path: Path, split_name: str | None, required: tuple[str, ...] = ()
) -> Iterator[tuple[str, dict | _BadRow]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; expected {list(required)}; got {columns}")
        rowno = 0
        try:
            for rowno, row in enumerate(reader, 1):
                if None in row:  # more cells than header columns
                    yield (
                        f"row {rowno}",
                        _BadRow(f"{len(row[None])} cell(s) more than the {len(columns)} columns"),
                    )
                    continue
                yield f"row {rowno}", row
        except csv.Error as exc:
            raise DataError(f"{path} row {rowno + 1}: CSV error ({exc})") from None


def _counselchat_rows(path: Path, split_name: str | None) -> Iterator[tuple[str, dict | _BadRow]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        has_split = "split" in (csv.DictReader(f).fieldnames or [])
    if split_name is None:
        split_name = "train" if has_split else "all"
    if split_name != "all" and not has_split:
        raise DataError(f"{path}: no 'split' column, so '#{split_name}' cannot be selected; use '#all'")
    if split_name not in ("train", "val", "test", "all"):
        raise DataError(
            f"counselchat:{path}: split expected one of train, val, test, all; got {split_name!r}"
        )
    for where, row in _csv_rows(path, None, required=("questionTitle", "questionText", "answerText")):
        if split_name == "all" or isinstance(row, _BadRow) or (row.get("split") or "").strip() == split_name:
            yield where, row


def _mentalchat_rows(path: Path, split_name: str | None) -> Iterator[tuple[str, dict | _BadRow]]:
    return _csv_rows(path, None, required=("input", "output"))


# --------------------------------------------------------------------------------------------------
# row converters: dict -> examples, raising _BadRow(field ...) for malformed rows


def _text(row: dict, key: str, *, required: bool = True) -> str:
    """The cleaned string in ``row[key]``; _BadRow if it is missing, not a string, or (required) empty."""
    if key not in row or row[key] is None:
        if required:
            raise _BadRow(f"field {key!r} is missing")
        return ""
    value = row[key]
    if not isinstance(value, str):
        raise _BadRow(f"field {key!r}: expected a string; got {type(value).__name__} {value!r:.60}")
    value = _clean(value)
    if required and not value:
        raise _BadRow(f"field {key!r} is empty")
    return value


def _clean(text: str) -> str:
    """Normalise line endings and stray indentation; keep paragraphs (at most one blank line)."""
    lines = [line.strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_CALC_MARK = re.compile(r"<<[^<>]*>>")


def _gsm8k_row(row: dict, source: str) -> list[ChatExample]:
    question, solution = _text(row, "question"), _text(row, "answer")
    body, sep, final = solution.rpartition("####")
    if not sep:
        raise _BadRow("field 'answer' has no final '#### N' line")
    number = normalize_number(final)
    if number is None:
        raise _BadRow(f"field 'answer': final answer {final.strip()!r} is not a number")
    body = _CALC_MARK.sub("", body).strip()
    target = f"{body}\n#### {number}" if body else f"#### {number}"
    return [ChatExample.single_turn(MATH.name, question, target, source=source, answer=number)]


# CounselChat answers were scraped from HTML paragraphs and often lost the space between them
# ("self-esteem.Otherwise"); put it back where a sentence end runs into a capitalised word.
_JOINED_SENTENCES = re.compile(r"(?<=[a-z][.!?])(?=[A-Z][a-z])")


def _counselchat_row(row: dict, source: str) -> list[ChatExample]:
    title = _text(row, "questionTitle", required=False)
    body = _text(row, "questionText", required=False)
    if not title and not body:
        raise _BadRow("fields 'questionTitle' and 'questionText' are both empty")
    answer = _JOINED_SENTENCES.sub(" ", _text(row, "answerText"))
    user = f"{title}\n\n{body}" if title and body else title or body
    meta = {"group": "counselchat:" + _digest(title, body)}
    for key in ("questionID", "topic", "upvotes", "views", "split"):
        if row.get(key):
            meta[key] = row[key].strip()
    return [ChatExample.single_turn(COUNSELING.name, user, answer, source=source, meta=meta)]


_ESCONV_ROLES = {"usr": "user", "sys": "assistant"}


def _esconv_row(row: dict, source: str) -> list[ChatExample]:
    """One example per supporter turn that follows at least one seeker turn.

    Consecutive turns of one speaker are merged (joined by a space: they are chat lines of one reply).
    Supporter turns before the seeker's first words stay in the context but are not targets. The
    ``situation`` is kept in meta, not in the prompt, because serving never has it.
    """
    dialog = row.get("dialog")
    if not isinstance(dialog, list) or not dialog:
        raise _BadRow(f"field 'dialog': expected a non-empty list of turns; got {type(dialog).__name__}")
    turns: list[dict[str, Any]] = []  # merged: role, content, strategies
    for i, turn in enumerate(dialog):
        if not isinstance(turn, dict):
            raise _BadRow(f"field 'dialog[{i}]': expected an object; got {type(turn).__name__}")
        speaker = turn.get("speaker")
        role = _ESCONV_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise _BadRow(
                f"field 'dialog[{i}].speaker': expected 'usr' or 'sys'; got {turn.get('speaker')!r}"
            )
        text = _text(turn, "text", required=False) if "text" in turn else None
        if text is None:
            raise _BadRow(f"field 'dialog[{i}].text' is missing")
        if not text:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += " " + text
        else:
            turns.append({"role": role, "content": text, "strategies": []})
        if turn.get("strategy"):
            turns[-1]["strategies"].append(turn["strategy"])
    group = "esconv:" + _digest(*(t["content"] for t in turns))
    info = {k: row[k] for k in ("emotion_type", "problem_type", "situation") if isinstance(row.get(k), str)}
    out: list[ChatExample] = []
    system = {"role": "system", "content": COUNSELING.system_prompt}
    for k, turn in enumerate(turns):
        if turn["role"] != "assistant" or not any(t["role"] == "user" for t in turns[:k]):
            continue
        out.append(
            ChatExample(
                messages=[system, *({"role": t["role"], "content": t["content"]} for t in turns[: k + 1])],
                domain=COUNSELING.name,
                source=f"{source} turn {k}",
                meta={**info, "strategies": turn["strategies"], "group": group},
            )
        )
    if not out:
        raise _BadRow("field 'dialog': no supporter ('sys') turn follows a seeker ('usr') turn")
    return out


def _mentalchat_row(row: dict, source: str) -> list[ChatExample]:
    system = _text(row, "instruction", required=False) or None  # None: the domain's prompt
    user, reply = _text(row, "input"), _text(row, "output")
    return [ChatExample.single_turn(COUNSELING.name, user, reply, system=system, source=source)]


def _cpsycoun_row(row: dict, source: str) -> list[ChatExample]:
    """LLaMA-Factory alpaca form: user = instruction + "\\n" + input; history = [[q, a], ...] before it."""
    instruction = _text(row, "instruction", required=False)
    extra = _text(row, "input", required=False)
    user = "\n".join(t for t in (instruction, extra) if t)
    if not user:
        raise _BadRow("fields 'instruction' and 'input' are both empty")
    history = row.get("history") or []
    if not isinstance(history, list):
        raise _BadRow(
            f"field 'history': expected a list of [question, answer] pairs; got {type(history).__name__}"
        )
    messages = [
        {"role": "system", "content": _text(row, "system", required=False) or COUNSELING.system_prompt}
    ]
    for i, pair in enumerate(history):
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(t, str) and t.strip() for t in pair)
        ):
            raise _BadRow(
                f"field 'history[{i}]': expected [question, answer] with non-empty strings; got {pair!r:.80}"
            )
        messages += [
            {"role": "user", "content": _clean(pair[0])},
            {"role": "assistant", "content": _clean(pair[1])},
        ]
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row, "output")}]
    return [ChatExample(messages=messages, domain=COUNSELING.name, source=source)]


_FINAL_ANSWER = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)


def _chat_row(row: dict, source: str) -> list[ChatExample]:
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise _BadRow(
            f"field 'messages': expected a list of {{role, content}} objects; got {type(messages).__name__}"
        )
    problem = message_problem(messages)
    if problem:
        raise _BadRow(f"field 'messages': {problem}")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    final = _FINAL_ANSWER.findall(messages[-1]["content"])
    domain = row.get("domain") or (MATH.name if final else COUNSELING.name)
    if not isinstance(domain, str) or domain not in DOMAINS:
        raise _BadRow(f"field 'domain': expected one of {tuple(DOMAINS)}; got {domain!r}")
    answer = None
    if row.get("answer") is not None:
        answer = normalize_number(str(row["answer"]))
        if answer is None:
            raise _BadRow(f"field 'answer': expected a number; got {row['answer']!r}")
    elif domain == MATH.name and final:
        answer = normalize_number(final[-1])
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": DOMAINS[domain].system_prompt})
    return [ChatExample(messages=messages, domain=domain, source=source, answer=answer)]


_FILE_LOADERS: dict[str, tuple[_Reader, _Converter, bool]] = {
    "gsm8k": (_jsonl_rows, _gsm8k_row, False),
    "counselchat": (_counselchat_rows, _counselchat_row, True),
    "esconv": (_jsonl_rows, _esconv_row, False),
    "mentalchat16k": (_mentalchat_rows, _mentalchat_row, False),
    "cpsycoun": (_json_items, _cpsycoun_row, False),
    "chat": (_jsonl_rows, _chat_row, False),
}
_GENERATORS: dict[str, Callable[[int, int], list[ChatExample]]] = {
    "synthetic-math": synthetic_math,
    "synthetic-counseling": synthetic_counseling,
}


# --------------------------------------------------------------------------------------------------
# hub


def _hub_converter(columns: set[str], first: dict) -> _Converter | None:
    """Pick the row converter from a hub data set's columns (the hub copies use the files' columns)."""
    if "messages" in columns:
        return _chat_row
    if {"question", "answer"} <= columns:
        return _gsm8k_row
    if {"questionTitle", "answerText"} <= columns:
        return _counselchat_row
    if "dialog" in columns:
        return _esconv_row
    if columns == {"text"} and isinstance(first.get("text"), str) and '"dialog"' in first["text"]:
        # thu-coai/esconv stores each dialogue as a JSON string in a 'text' column
        return lambda row, source: _esconv_row(_json_text(row), source)
    if {"instruction", "output"} <= columns:
        return _cpsycoun_row if "history" in columns else _mentalchat_row
    return None


def _json_text(row: dict) -> dict:
    parsed = _parse_json_object(row["text"])
    if isinstance(parsed, _BadRow):
        raise _BadRow(f"field 'text': {parsed}")
    return parsed


def _hub_examples(arg: str, skip_bad: bool, report: DataReport) -> Iterator[list[ChatExample]]:
    repo, _, hub_split = arg.strip().partition("#")
    repo, hub_split = repo.strip(), hub_split.strip() or "train"
    if repo.count("/") != 1:
        raise DataError(f"hub data set: expected hf:OWNER/NAME[#SPLIT]; got {arg!r}")
    hint = "download the file and pass it with the NAME:PATH form (e.g. gsm8k:/data/gsm8k/train.jsonl)"
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"hf:{repo}: the 'datasets' package is not installed (pip install datasets); {hint}"
        ) from None
    try:
        ds = datasets.load_dataset(repo, split=hub_split)
    except Exception as exc:  # offline / not found / no such split all surface as different types
        raise DataError(
            f"hf:{repo}#{hub_split}: cannot load from the hub ({type(exc).__name__}: {exc}); {hint}"
        ) from None
    columns = set(ds.column_names)
    convert = _hub_converter(columns, ds[0] if len(ds) else {})
    if convert is None:
        raise DataError(f"hf:{repo}: no loader knows the columns {sorted(columns)}; {hint}")
    rows = ((f"row {i}", dict(r)) for i, r in enumerate(ds, 1))
    return _convert_rows(rows, convert, f"hf:{repo}", f"hf:{repo}#{hub_split}", skip_bad, report)
