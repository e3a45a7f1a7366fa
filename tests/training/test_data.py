"""Loaders, reports, dedupe and splits: small fixture files here, and the real data sets when present."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantum_adapters.domains import COUNSELING, MATH
from training.data import DataError, DataReport, domain_of, load, load_many, split
from training.examples import ChatExample, normalize_number

REAL = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data sets not found at {REAL}")
REPO = Path(__file__).resolve().parents[2]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


# ------------------------------------------------------------------ gsm8k

GSM_ROWS = [
    {
        "question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
        "answer": "In May she sold 48/2 = <<48/2=24>>24.\nIn total 48+24 = <<48+24=72>>72.\n#### 72",
    },
    {
        "question": "A farm has 1,000 hens and buys 200 more. How many?",
        "answer": "1000+200=<<1000+200=1200>>1200\n#### 1,200",
    },
    {"question": "Half of 7?", "answer": "7/2 = <<7/2=3.5>>3.5\n#### 3.50"},
]


def test_gsm8k_strips_calculator_marks_and_normalises_answer(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", GSM_ROWS)
    examples, report = load(f"gsm8k:{path}")
    assert [e.answer for e in examples] == ["72", "1200", "3.5"]
    first = examples[0]
    assert first.domain == "math" and not first.synthetic
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant"]
    assert first.messages[0]["content"] == MATH.system_prompt
    assert first.messages[1]["content"] == GSM_ROWS[0]["question"]
    assert first.target == "In May she sold 48/2 = 24.\nIn total 48+24 = 72.\n#### 72"
    assert examples[1].target.endswith("\n#### 1200")
    assert first.source == f"gsm8k:{path}#line 1"
    assert report.loaded == 3 and report.skipped_bad == 0 and report.duplicates == 0
    assert report.per_source == {f"gsm8k:{path}": 3}


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question": "q", "answer": "1 #### 1"', "line 2: invalid JSON"),
        ({"answer": "#### 4"}, "line 2: field 'question' is missing"),
        ({"question": "q", "answer": "   "}, "line 2: field 'answer' is empty"),
        ({"question": "q", "answer": "no final line"}, "line 2: field 'answer' has no final '#### N' line"),
        (
            {"question": "q", "answer": "x\n#### seven"},
            "line 2: field 'answer': final answer 'seven' is not a number",
        ),
        ({"question": 5, "answer": "#### 5"}, "line 2: field 'question': expected a string; got int"),
        ([1, 2], "line 2: expected a JSON object; got list"),
    ],
)
def test_gsm8k_malformed_rows_name_file_line_field(tmp_path, bad_line, message):
    path = write_jsonl(tmp_path / "train.jsonl", [GSM_ROWS[0], bad_line, GSM_ROWS[1]])
    with pytest.raises(DataError, match="train.jsonl " + message.replace("(", r"\(")) as info:
        load(f"gsm8k:{path}")
    assert str(path) in str(info.value)
    examples, report = load(f"gsm8k:{path}", skip_bad=True)
    assert [e.answer for e in examples] == ["72", "1200"]
    assert report.skipped_bad == 1 and report.loaded == 2


def test_duplicates_dropped_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GSM_ROWS[0], GSM_ROWS[1], GSM_ROWS[0], GSM_ROWS[2]])
    examples, report = load(f"gsm8k:{path}")
    assert report.loaded == 3 and report.duplicates == 1
    assert [e.source.rsplit("#", 1)[1] for e in examples] == ["line 1", "line 2", "line 4"]
    examples, report = load(f"gsm8k:{path}", limit=2)
    assert len(examples) == 2 and report.loaded == 2


def test_blank_lines_are_not_rows(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GSM_ROWS[0]) + "\n\n  \n" + json.dumps(GSM_ROWS[1]) + "\n", encoding="utf-8")
    examples, _ = load(f"gsm8k:{path}")
    assert [e.source.rsplit("#", 1)[1] for e in examples] == ["line 1", "line 4"]


# ------------------------------------------------------------------ counselchat

CC_HEADER = [
    "",
    "questionID",
    "questionTitle",
    "questionText",
    "topic",
    "therapistInfo",
    "answerText",
    "upvotes",
    "views",
    "split",
]


def cc_row(i: int, qid: int, title: str, text: str, answer: str, split_name: str) -> list[str]:
    return [str(i), str(qid), title, text, "anxiety", "A. Therapist", answer, "1", "10", split_name]


def test_counselchat_splits_user_message_and_cleaning(tmp_path):
    rows = [
        cc_row(
            0,
            0,
            "Why am I anxious?",
            "I worry.\r\n   All the time.",
            "Worry is common.Try breathing.",
            "train",
        ),
        cc_row(1, 0, "Why am I anxious?", "I worry.\r\n   All the time.", "Talk to someone.", "train"),
        cc_row(
            2,
            0,
            "Why am I anxious?",
            "I worry.\r\n   All the time.",
            "Worry is common.Try breathing.",
            "train",
        ),
        cc_row(3, 1, "Sleep?", "", "Keep a routine.", "val"),
        cc_row(4, 2, "Anger", "I shout.", "Notice the signs.", "test"),
    ]
    path = write_csv(tmp_path / "counsel_chat.csv", CC_HEADER, rows)
    train, report = load(f"counselchat:{path}")
    assert report.loaded == 2 and report.duplicates == 1
    first = train[0]
    assert first.domain == "counseling" and first.answer is None
    assert first.messages[0]["content"] == COUNSELING.system_prompt
    assert first.messages[1]["content"] == "Why am I anxious?\n\nI worry.\nAll the time."
    assert first.target == "Worry is common. Try breathing."
    assert first.meta["topic"] == "anxiety" and first.meta["group"] == train[1].meta["group"]
    assert first.source == f"counselchat:{path}#row 1"
    (val,), _ = load(f"counselchat:{path}#val")
    assert val.messages[1]["content"] == "Sleep?" and val.target == "Keep a routine."
    (test,), _ = load(f"counselchat:{path}#test")
    assert test.target == "Notice the signs."
    _, report = load(f"counselchat:{path}#all")
    assert report.loaded == 4 and report.duplicates == 1
    with pytest.raises(DataError, match="split expected one of train, val, test, all; got 'dev'"):
        load(f"counselchat:{path}#dev")


def test_counselchat_empty_answer_and_missing_column(tmp_path):
    rows = [cc_row(i, i, f"title {i}", "text", f"answer {i}", "train") for i in range(20)]
    rows[16][6] = "  "  # data row 17
    path = write_csv(tmp_path / "counsel_chat.csv", CC_HEADER, rows)
    with pytest.raises(DataError, match=r"counsel_chat\.csv row 17: field 'answerText' is empty"):
        load(f"counselchat:{path}")
    _, report = load(f"counselchat:{path}", skip_bad=True)
    assert report.loaded == 19 and report.skipped_bad == 1
    bad = write_csv(tmp_path / "bad.csv", ["questionTitle", "questionText"], [["t", "x"]])
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) \['answerText'\]"):
        load(f"counselchat:{bad}")


def test_counselchat_without_split_column(tmp_path):
    path = write_csv(
        tmp_path / "c.csv",
        ["questionTitle", "questionText", "answerText"],
        [["t", "x", "a"], ["u", "y", "b"]],
    )
    examples, _ = load(f"counselchat:{path}")
    assert len(examples) == 2
    with pytest.raises(DataError, match="no 'split' column"):
        load(f"counselchat:{path}#train")


# ------------------------------------------------------------------ esconv

ESCONV_DIALOG = {
    "emotion_type": "anxiety",
    "problem_type": "job crisis",
    "situation": "Worried about losing my job.",
    "dialog": [
        {"text": "Hello, how are you?", "speaker": "sys", "strategy": "Question"},
        {"text": "Not great.", "speaker": "usr"},
        {"text": "I might lose my job.", "speaker": "usr"},
        {"text": "That sounds stressful.", "speaker": "sys", "strategy": "Reflection of feelings"},
        {"text": "What happened?", "speaker": "sys", "strategy": "Question"},
        {"text": "My contract ends.", "speaker": "usr"},
        {"text": "Have you talked to your manager?", "speaker": "sys", "strategy": "Providing Suggestions"},
    ],
}


def test_esconv_one_example_per_supporter_turn(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [ESCONV_DIALOG])
    examples, report = load(f"esconv:{path}")
    assert report.loaded == 2
    first, second = examples
    assert first.messages == [
        {"role": "system", "content": COUNSELING.system_prompt},
        {"role": "assistant", "content": "Hello, how are you?"},
        {"role": "user", "content": "Not great. I might lose my job."},
        {"role": "assistant", "content": "That sounds stressful. What happened?"},
    ]
    assert second.messages[:4] == first.messages
    assert second.messages[4:] == [
        {"role": "user", "content": "My contract ends."},
        {"role": "assistant", "content": "Have you talked to your manager?"},
    ]
    assert first.meta["strategies"] == ["Reflection of feelings", "Question"]
    assert first.meta["situation"] == "Worried about losing my job."
    assert first.meta["group"] == second.meta["group"]
    assert first.source == f"esconv:{path}#line 1 turn 2"


def test_esconv_malformed(tmp_path):
    bad_speaker = {**ESCONV_DIALOG, "dialog": [*ESCONV_DIALOG["dialog"][:2], {"text": "x", "speaker": "bot"}]}
    no_text = {**ESCONV_DIALOG, "dialog": [{"speaker": "usr"}]}
    path = write_jsonl(tmp_path / "v.jsonl", [ESCONV_DIALOG, bad_speaker, no_text, {"situation": "s"}])
    with pytest.raises(
        DataError, match=r"v\.jsonl line 2: field 'dialog\[2\]\.speaker': expected 'usr' or 'sys'; got 'bot'"
    ):
        load(f"esconv:{path}")
    _, report = load(f"esconv:{path}", skip_bad=True)
    assert report.skipped_bad == 3 and report.loaded == 2


# ------------------------------------------------------------------ mentalchat16k, cpsycoun, chat


def test_mentalchat16k(tmp_path):
    path = write_csv(
        tmp_path / "m.csv",
        ["instruction", "input", "output"],
        [
            ["You are a counsellor.", "I feel low.", "I'm sorry you feel low."],
            ["", "Help", "Of course."],
            ["x", "y", ""],
        ],
    )
    with pytest.raises(DataError, match=r"m\.csv row 3: field 'output' is empty"):
        load(f"mentalchat16k:{path}")
    examples, report = load(f"mentalchat16k:{path}", skip_bad=True)
    assert report.skipped_bad == 1
    assert examples[0].messages == [
        {"role": "system", "content": "You are a counsellor."},
        {"role": "user", "content": "I feel low."},
        {"role": "assistant", "content": "I'm sorry you feel low."},
    ]
    assert examples[1].messages[0]["content"] == COUNSELING.system_prompt


def test_cpsycoun_json_list_with_history(tmp_path):
    items = [
        {
            "instruction": "I can't sleep.",
            "input": "",
            "output": "Let's look at your evenings.",
            "history": [["Hi", "Hello, I'm here."]],
        },
        {"instruction": "Q", "input": "more", "output": "A", "system": "Custom system."},
        {"instruction": "Q", "input": "", "output": "A", "history": [["only one"]]},
    ]
    path = tmp_path / "cpsy.json"
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"cpsy\.json item 2: field 'history\[0\]'"):
        load(f"cpsycoun:{path}")
    examples, report = load(f"cpsycoun:{path}", skip_bad=True)
    assert report.skipped_bad == 1
    assert [m["role"] for m in examples[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert examples[0].messages[1:3] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, I'm here."},
    ]
    assert examples[1].messages == [
        {"role": "system", "content": "Custom system."},
        {"role": "user", "content": "Q\nmore"},
        {"role": "assistant", "content": "A"},
    ]
    broken = tmp_path / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken\.json: invalid JSON"):
        load(f"cpsycoun:{broken}")


def test_chat_generic(tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "2+2 = 4\n#### 4"},
            ]
        },
        {
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "domain": "counseling",
        },
        {"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]},
        {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "domain": "law",
        },
    ]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(
        DataError, match=r"chat\.jsonl line 3: field 'messages': the last message must be the assistant reply"
    ):
        load(f"chat:{path}")
    examples, report = load(f"chat:{path}", skip_bad=True)
    assert report.skipped_bad == 3
    math, talk = examples
    assert math.domain == "math" and math.answer == "4" and math.messages[0]["content"] == MATH.system_prompt
    assert (
        talk.domain == "counseling"
        and talk.answer is None
        and talk.messages[0]["content"] == COUNSELING.system_prompt
    )


# ------------------------------------------------------------------ specs, generators, hub


def test_spec_errors(tmp_path):
    with pytest.raises(DataError, match="unknown data set 'nope'; known: gsm8k:PATH, counselchat:PATH"):
        load("nope:x")
    with pytest.raises(DataError, match="does not exist") as info:
        load(f"gsm8k:{tmp_path / 'missing.jsonl'}")
    assert "missing.jsonl" in str(info.value)
    with pytest.raises(DataError, match="gsm8k needs a file"):
        load("gsm8k")
    with pytest.raises(DataError, match="N an integer; got 'many'"):
        load("synthetic-math:many")


def test_hub_without_datasets_or_offline_says_to_pass_a_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="pass it with the NAME:PATH form"):
        load("hf:openai/gsm8k")
    with pytest.raises(DataError, match="expected hf:OWNER/NAME"):
        load("hf:gsm8k")


def test_generators_through_load():
    math, report = load("synthetic-math:30", seed=3)
    assert report.loaded == 30 and all(e.synthetic and e.domain == "math" for e in math)
    default, _ = load("synthetic-counseling")
    assert len(default) == 200
    again, _ = load("synthetic-math:30", seed=3)
    assert [e.messages for e in again] == [e.messages for e in math]


def test_load_many_merges_and_dedupes_across_specs(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", GSM_ROWS[:2])
    b = write_jsonl(tmp_path / "b.jsonl", GSM_ROWS[1:])
    examples, report = load_many(f"gsm8k:{a}, gsm8k:{b},synthetic-counseling:5")
    assert report.loaded == len(examples) == 2 + 1 + 5
    assert report.duplicates == 1
    assert report.per_source == {f"gsm8k:{a}": 2, f"gsm8k:{b}": 1, "synthetic-counseling:5": 5}
    assert domain_of(examples) == "counseling"
    assert report.as_dict()["per_source"][f"gsm8k:{b}"] == 1
    with pytest.raises(DataError, match="no data specs"):
        load_many(" , ")


def test_normalize_number():
    assert normalize_number("1,200") == "1200"
    assert normalize_number(" $3.50 ") == "3.5"
    assert normalize_number("5.0") == "5"
    assert normalize_number("-7") == "-7"
    assert normalize_number("0.25.") == "0.25"
    assert normalize_number("seven") is None
    assert normalize_number("1/2") is None


def test_chat_example_rejects_bad_messages():
    with pytest.raises(ValueError, match="last message must be the assistant reply"):
        ChatExample(messages=[{"role": "user", "content": "hi"}], domain="math", source="t")
    with pytest.raises(ValueError, match="domain expected one of"):
        ChatExample(
            messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            domain="x",
            source="t",
        )


def test_domain_of():
    ex = load("synthetic-math:3")[0] + load("synthetic-counseling:2")[0]
    assert domain_of(ex) == "math"
    with pytest.raises(ValueError, match="at least one example"):
        domain_of([])


# ------------------------------------------------------------------ split


def test_split_is_deterministic_disjoint_and_sized():
    examples, _ = load("synthetic-math:400")
    train, dev = split(examples, dev_fraction=0.1, seed=0)
    assert len(dev) == 40 and len(train) == 360
    assert {id(e) for e in train}.isdisjoint({id(e) for e in dev})
    assert {id(e) for e in train} | {id(e) for e in dev} == {id(e) for e in examples}
    _, dev2 = split(list(examples), dev_fraction=0.1, seed=0)
    assert [e.messages for e in dev2] == [e.messages for e in dev]
    _, dev_other = split(examples, dev_fraction=0.1, seed=1)
    assert [e.messages for e in dev_other] != [e.messages for e in dev]
    # membership depends on content, not position
    _, dev_rev = split(examples[::-1], dev_fraction=0.1, seed=0)
    assert sorted(e.meta["index"] for e in dev_rev) == sorted(e.meta["index"] for e in dev)


def test_split_keeps_groups_together_and_validates(tmp_path):
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [ESCONV_DIALOG, {**ESCONV_DIALOG, "situation": "other", "dialog": ESCONV_DIALOG["dialog"][1:4]}],
    )
    examples, _ = load(f"esconv:{path}")
    assert len(examples) == 3
    train, dev = split(examples, dev_fraction=0.3, seed=0)
    assert len({e.meta["group"] for e in dev}) == 1
    assert {e.meta["group"] for e in train}.isdisjoint({e.meta["group"] for e in dev})
    assert split(examples, dev_fraction=0.0, min_dev=0) == (examples, [])
    with pytest.raises(ValueError, match=r"dev_fraction: expected 0 <= value < 1; got 1\.5"):
        split(examples, dev_fraction=1.5)
    with pytest.raises(ValueError, match="cannot hold out 3 dev examples from 3"):
        split(examples, min_dev=3)


def test_split_independent_of_python_hash_seed():
    code = (
        "from training.data import load, split\n"
        "ex, _ = load('synthetic-counseling:300')\n"
        "print(sorted(e.meta['index'] for e in split(ex, 0.1, seed=7)[1]))\n"
    )
    outs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        outs.add(run.stdout)
    assert len(outs) == 1 and len(json.loads(outs.pop())) == 30


# ------------------------------------------------------------------ the real data sets


@needs_real
def test_real_gsm8k():
    t = time.perf_counter()
    examples, report = load(f"gsm8k:{REAL / 'gsm8k' / 'train.jsonl'}")
    elapsed = time.perf_counter() - t
    assert report.loaded == 7473 and report.skipped_bad == 0 and report.duplicates == 0
    assert elapsed < 3.0, f"GSM8K took {elapsed:.2f}s to load"
    for e in examples:
        assert "<<" not in e.target and ">>" not in e.target
        assert e.target.rsplit("\n", 1)[-1] == f"#### {e.answer}"
        assert normalize_number(e.answer) == e.answer
    assert examples[0].answer == "72"


@needs_real
def test_real_counselchat_train_rows():
    path = REAL / "counselchat" / "counsel_chat.csv"
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "train"]
    distinct = {
        (r["questionTitle"].strip(), r["questionText"].strip(), r["answerText"].strip())
        for r in rows
        if r["answerText"].strip()
    }
    t = time.perf_counter()
    examples, report = load(f"counselchat:{path}")
    elapsed = time.perf_counter() - t
    assert elapsed < 3.0, f"CounselChat took {elapsed:.2f}s to load"
    assert report.loaded + report.duplicates + report.skipped_bad == len(rows) == 1839
    assert report.loaded == len(distinct) == 1759
    assert all(e.meta["split"] == "train" for e in examples)
    for name, expected in (("val", 173), ("test", 117)):
        assert load(f"counselchat:{path}#{name}")[1].loaded == expected


@needs_real
def test_real_esconv():
    t = time.perf_counter()
    examples, report = load(f"esconv:{REAL / 'esconv' / 'train.jsonl'}")
    elapsed = time.perf_counter() - t
    assert elapsed < 3.0, f"ESConv took {elapsed:.2f}s to load"
    assert report.skipped_bad == 0 and report.loaded > 1000
    assert len({e.meta["group"] for e in examples}) == 910
    for e in examples[:500]:
        roles = [m["role"] for m in e.messages[1:]]
        assert all(a != b for a, b in itertools.pairwise(roles)), (
            "consecutive turns of one speaker must be merged"
        )
        assert "user" in roles[:-1]
    _, report = load(f"esconv:{REAL / 'esconv' / 'valid.jsonl'}")
    assert report.loaded > 1000


def test_data_report_defaults():
    assert DataReport().as_dict() == {
        "loaded": 0,
        "skipped_bad": 0,
        "duplicates": 0,
        "too_long": 0,
        "per_source": {},
    }


def test_row_window_carves_held_out_rows(tmp_path):
    from training.data import DataError, load

    f = tmp_path / "g.jsonl"
    f.write_text(
        "".join(f'{{"question": "q{i}?", "answer": "{i} + 0 = {i}\\n#### {i}"}}\n' for i in range(10))
    )
    head, _ = load(f"gsm8k:{f}@:-3")
    tail, _ = load(f"gsm8k:{f}@-3:")
    assert [e.answer for e in head] == [str(i) for i in range(7)]
    assert [e.answer for e in tail] == ["7", "8", "9"]
    import pytest

    with pytest.raises(DataError, match="expected @START:END"):
        load(f"gsm8k:{f}@a:b")


@pytest.mark.parametrize(
    "text", ["1,234", "$1,234.", " 3.50 ", "72.00", "-0", "0.00", ".5", "-12.", "1200", "007"]
)
def test_evaluators_read_numbers_as_training_writes_them(text):
    """evals.extract.normalize_number is this function for numbers (so 'exact' means one thing)."""
    from evals.extract import normalize_number as evaluated

    assert normalize_number(text) is not None and evaluated(text) == normalize_number(text)
