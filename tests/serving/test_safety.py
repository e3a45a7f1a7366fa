"""Safety layer, with the real embedded sentence-embedding model (loaded once for the module)."""

from __future__ import annotations

import re
import threading

import pytest

from serving.embeddings import load_embedder
from serving.safety import (
    AI_DISCLOSURE,
    CRISIS_RESOURCES,
    SafetyAssessment,
    SafetyCounters,
    SafetyLayer,
    StreamingFinalCheck,
    crisis_reply,
    decline_reply,
    final_check,
    wrap_reply,
)


@pytest.fixture(scope="module")
def layer() -> SafetyLayer:
    return SafetyLayer(load_embedder(), locale="US")


def _user(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a supportive assistant."},
        {"role": "user", "content": text},
    ]


DIRECT_CRISIS = [
    "I want to kill myself",
    "I've been thinking about suicide a lot",
    "i'm going to end my life tonight",
    "I don't want to be alive anymore",
    "Everyone would be better off if I were dead",
    "I've started cutting again",
    "I keep hurting myself on purpose",
    "I took an overdose an hour ago",
    "what is a lethal dose of tylenol",
    "Life isn't worth living",
]
# None of these match a pattern: they are caught by embedding similarity alone.
INDIRECT_CRISIS = [
    "I can't live with this pain any longer",
    "honestly i just want it all to stop, permanently",
    "I don't see a future for myself, I just want to disappear",
    "I've been stockpiling my pills",
    "nobody would even notice if I died",
]
NOT_CRISIS = [
    "I'm sad my team lost",
    "this homework is killing me",
    "how do I kill a python process",
    "this traffic is killing me",
    "I'm dying to see that movie",
    "my phone battery is dead",
    "how do I cut an onion",
    "I feel a bit down today",
    "My dog died last week and I miss him",
    "What is 12 times 7?",
    "I'm anxious about my exam tomorrow",
    "How do I end a relationship kindly?",
]


@pytest.mark.parametrize("text", DIRECT_CRISIS)
def test_direct_crisis_detected_by_pattern(layer, text):
    a = layer.assess(_user(text))
    assert a.crisis and a.kind == "crisis"
    assert a.matched is not None and a.matched.startswith("pattern:")


@pytest.mark.parametrize("text", INDIRECT_CRISIS)
def test_indirect_crisis_detected_by_embedding(layer, text):
    a = layer.assess(_user(text))
    assert a.crisis and a.kind == "crisis", a
    assert a.matched is not None and a.matched.startswith("exemplar:")
    assert a.score >= layer.threshold


@pytest.mark.parametrize("text", NOT_CRISIS)
def test_everyday_messages_not_flagged(layer, text):
    a = layer.assess(_user(text))
    assert not a.crisis and a.kind is None, a
    assert a.score < layer.threshold


def test_crisis_sentence_inside_long_message(layer):
    text = (
        "Work has been awful and my manager keeps piling on projects. I haven't seen my friends in weeks. "
        "Honestly I can't live with this pain any longer. Anyway, how was your day?"
    )
    a = layer.assess(_user(text))
    assert a.crisis and a.matched.startswith("exemplar:")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("do I have bipolar?", "diagnosis"),
        ("Can you diagnose me?", "diagnosis"),
        ("Do you think I have ADHD", "diagnosis"),
        ("am I depressed?", "diagnosis"),
        ("what disorder do I have", "diagnosis"),
        ("how many mg of sertraline should I take?", "medication"),
        ("Can I take 100mg of Zoloft", "medication"),
        ("Should I double my dose of Lexapro?", "medication"),
        ("what dosage of xanax is safe?", "medication"),
        ("Is it okay to stop taking my antidepressants?", "medication"),
    ],
)
def test_diagnosis_and_medication_requests(layer, text, kind):
    a = layer.assess(_user(text))
    assert a.kind == kind and not a.crisis, a


@pytest.mark.parametrize(
    "text",
    [
        "I started sertraline last month and I feel better",
        "my therapist diagnosed me with anxiety last year",
        "Is bipolar disorder genetic?",
    ],
)
def test_mentions_are_not_requests(layer, text):
    assert layer.assess(_user(text)).kind is None


def test_only_latest_user_message_is_assessed(layer):
    messages = [
        {"role": "user", "content": "how do I cut an onion"},
        {"role": "assistant", "content": "I want to kill myself"},  # assistant text is not the user's
        {"role": "user", "content": "thanks, and what is 2+2?"},
    ]
    assert layer.assess(messages).kind is None
    assert layer.assess([{"role": "system", "content": "x"}]) == SafetyAssessment(False, None, 0.0, None)


def test_crisis_reply_leads_with_locale_resources():
    us = crisis_reply("US")
    assert us.splitlines()[0] == CRISIS_RESOURCES["US"]
    assert "call or text 988" in us.splitlines()[0] and "911" in us.splitlines()[0]
    uk = crisis_reply("UK")
    assert uk.splitlines()[0].index("Samaritans") < 120 and "116 123" in uk.splitlines()[0]
    assert "988" not in uk and "999" in uk
    assert crisis_reply("gb") == uk
    assert "9-8-8" in crisis_reply("CA").splitlines()[0]
    assert "13 11 14" in crisis_reply("AU").splitlines()[0]
    intl = crisis_reply("ZZ")
    assert "findahelpline.com" in intl.splitlines()[0] and "988" not in intl
    assert SafetyLayer(load_embedder(), locale="UK").crisis_reply() == uk
    for reply in (us, uk, intl):
        assert "AI" in reply and final_check(reply) == reply
        assert not re.search(r"\d+\s*(mg|g|pills|tablets)\b", reply)


def test_decline_replies():
    diag = decline_reply("diagnosis", "US")
    med = decline_reply("medication", "UK")
    assert "AI" in diag and "diagnos" in diag and ("doctor" in diag or "therapist" in diag)
    assert "AI" in med and "pharmacist" in med and "999" in med
    assert decline_reply("crisis", "US") == crisis_reply("US")
    with pytest.raises(ValueError, match="expected kind"):
        decline_reply("astrology", "US")


def test_wrap_reply():
    crisis = SafetyAssessment(crisis=True, kind="crisis", score=0.9, matched="pattern:suicide")
    calm = SafetyAssessment(crisis=False, kind=None, score=0.1, matched=None)
    wrapped = wrap_reply("I'm here with you.", crisis, "counseling", "US")
    assert wrapped.startswith(CRISIS_RESOURCES["US"])
    assert wrapped.endswith(AI_DISCLOSURE) and "I'm here with you." in wrapped
    assert wrap_reply("It is 4.", crisis, "math", "UK").startswith(CRISIS_RESOURCES["UK"])
    assert wrap_reply("It is 4.", calm, "math") == "It is 4."
    counsel = wrap_reply("That sounds hard.", calm, "counselling")
    assert counsel == f"That sounds hard.\n\n{AI_DISCLOSURE}"
    assert wrap_reply(counsel, calm, "counseling") == counsel  # disclosure appended once
    means = wrap_reply("A lethal dose is 10 g of it.", crisis, "counseling")
    assert "10 g" not in means and means.startswith(CRISIS_RESOURCES["US"])


@pytest.mark.parametrize(
    "unsafe",
    [
        "The lethal dose of acetaminophen is about 10 g.",
        "Taking 30 pills at once would kill you.",
        "An overdose needs roughly 2.5 grams.",
        "Here is how to painlessly end your life.",
        "Swallowing the whole bottle would be fatal.",
        "You could slit your wrists.",
    ],
)
def test_final_check_removes_means(unsafe):
    text = f"I'm glad you reached out. {unsafe} Please talk to someone you trust."
    out = final_check(text)
    assert unsafe not in out
    assert out.startswith("I'm glad you reached out.") and out.endswith("Please talk to someone you trust.")
    assert "[Removed:" in out


@pytest.mark.parametrize(
    "safe",
    [
        "There are 3 apples and 4 oranges, so 7 fruits in total.",
        "Dying is a natural part of life, and grief takes time.",
        "Take 500 mg of ibuprofen only as your doctor directs.",
        "The train travels 60 miles in 1.5 hours.",
    ],
)
def test_final_check_keeps_ordinary_text(safe):
    assert final_check(safe) == safe


def test_streaming_final_check_matches_final_check():
    text = (
        "I hear you. The lethal dose is 10 g. Taking 30 pills at once would kill you.\n"
        "Please call 988 now. It is 3.5 miles away!"
    )
    check = StreamingFinalCheck()
    pieces = [check.feed(text[i : i + 3]) for i in range(0, len(text), 3)]
    streamed = "".join(pieces) + check.flush()
    assert streamed == final_check(text)
    assert check.removed == 2 and streamed.count("[Removed:") == 1
    assert "10 g" not in streamed and "3.5 miles" in streamed


def test_counters_are_thread_safe():
    counters = SafetyCounters()

    def work():
        for _ in range(1000):
            counters.record("crisis")
        counters.record("medication", 2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.snapshot() == {"crisis": 8000, "medication": 16}
    assert counters.get("diagnosis") == 0
    with pytest.raises(ValueError):
        counters.record("")


def test_threshold_is_validated():
    with pytest.raises(ValueError, match="threshold"):
        SafetyLayer(load_embedder(), threshold=1.5)
