"""Safety layer for people in distress: crisis detection, declines, crisis resources and an output check.

A mental-health assistant will be written to by people in crisis. Whatever the adapter would generate,
such a person must get crisis resources first and nothing that could help them harm themselves. This
module decides that from the text alone (no web types, no model other than the sentence embedder):

    user message ──► assess() ──► SafetyAssessment(crisis, kind, score, matched)
                        │  1. patterns: direct statements ("kill myself", "end my life", "self-harm",
                        │     lethal-dose questions, ...), written so that idioms ("this traffic is
                        │     killing me", "kill a python process") do not match;
                        │  2. embedding similarity: max cosine between the message (and each of its
                        │     sentences) and crisis exemplars, >= threshold -> crisis. This catches
                        │     indirect statements ("everyone would be better off without me");
                        │  3. patterns for diagnosis requests and medication-dose requests.
                        ▼
    engine: crisis -> crisis_reply() (or generate, then wrap_reply, which puts the resources first);
            diagnosis / medication in the counselling domain -> decline_reply(kind);
            every generated text -> final_check() (drops sentences giving self-harm means).

Nothing here stores message content; `SafetyCounters` counts events by kind only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "AI_DISCLOSURE",
    "COUNSELING_DOMAINS",
    "CRISIS_EXEMPLARS",
    "CRISIS_RESOURCES",
    "DEFAULT_CRISIS_THRESHOLD",
    "SafetyAssessment",
    "SafetyCounters",
    "SafetyLayer",
    "StreamingFinalCheck",
    "crisis_reply",
    "crisis_resources",
    "decline_reply",
    "final_check",
    "latest_user_text",
    "wrap_reply",
]

SafetyKind = Literal["crisis", "diagnosis", "medication"]

COUNSELING_DOMAINS = frozenset({"counseling", "counselling"})
"""Domain / adapter names treated as the counselling domain (both spellings)."""

# ---------------------------------------------------------------------------------------------------
# Resources and fixed texts
# ---------------------------------------------------------------------------------------------------

CRISIS_RESOURCES: dict[str, str] = {
    "US": (
        "If you are thinking about suicide or about hurting yourself, please reach out now: call or "
        "text 988 to reach the 988 Suicide & Crisis Lifeline (free, 24/7), or call 911 if you are in "
        "immediate danger."
    ),
    "UK": (
        "If you are thinking about suicide or about hurting yourself, please reach out now: call "
        "Samaritans free on 116 123 (24/7), or call 999 if you are in immediate danger."
    ),
    "CA": (
        "If you are thinking about suicide or about hurting yourself, please reach out now: call or "
        "text 9-8-8 to reach the Suicide Crisis Helpline (free, 24/7), or call 911 if you are in "
        "immediate danger."
    ),
    "AU": (
        "If you are thinking about suicide or about hurting yourself, please reach out now: call "
        "Lifeline on 13 11 14 (24/7), or call 000 if you are in immediate danger."
    ),
    "INTL": (
        "If you are thinking about suicide or about hurting yourself, please reach out now: call your "
        "local emergency number if you are in immediate danger, or find a free, confidential crisis "
        "line in your country at https://findahelpline.com."
    ),
}
"""The line a crisis reply leads with, by locale (country code). Unknown locales use 'INTL'."""

_LOCALE_ALIASES = {"GB": "UK", "USA": "US", "CAN": "CA", "AUS": "AU"}
_EMERGENCY_NUMBERS = {"US": "911", "UK": "999", "CA": "911", "AU": "000"}

AI_DISCLOSURE = (
    "I'm an AI assistant, not a therapist or clinician, so I can't diagnose conditions or advise on "
    "medication; for those, please talk to a qualified professional."
)
"""One-line disclosure appended to counselling replies."""

_MEANS_REMOVED = (
    "[Removed: details that could be used for self-harm. If you are having thoughts of hurting "
    "yourself, please contact a crisis line or emergency services now.]"
)


def _norm_locale(locale: str | None) -> str:
    code = (locale or "").strip().upper()
    return _LOCALE_ALIASES.get(code, code)


def crisis_resources(locale: str | None = "US") -> str:
    """The crisis-resource line for `locale` (country code); unknown or None -> the international text."""
    return CRISIS_RESOURCES.get(_norm_locale(locale), CRISIS_RESOURCES["INTL"])


def crisis_reply(locale: str | None = "US") -> str:
    """A complete reply to someone in crisis: leads with the resources, warm, short, no means information."""
    return (
        f"{crisis_resources(locale)}\n\n"
        "I'm really sorry you're feeling this way, and I'm glad you told me. You don't have to carry "
        "this alone: the people on these lines are trained to listen and can talk with you right now. "
        "If you can, reach out to someone you trust and let them know how you are feeling, and stay "
        "somewhere safe while you do.\n\n"
        "I'm an AI assistant, not a therapist or clinician, but I'm here to keep talking with you if "
        "that helps."
    )


def decline_reply(kind: str, locale: str | None = "US") -> str:
    """A kind decline for a diagnosis request or a medication-dose request (`kind`), saying it is an AI.

    `kind='crisis'` returns `crisis_reply(locale)`.

    Raises:
        ValueError: `kind` is not 'diagnosis', 'medication' or 'crisis'.
    """
    if kind == "crisis":
        return crisis_reply(locale)
    if kind == "diagnosis":
        return (
            "I can't give you a diagnosis: I'm an AI assistant, not a clinician, and a diagnosis needs a "
            "proper assessment by a doctor, psychiatrist or licensed therapist who can hear your whole "
            "story. What you're going through sounds worth taking seriously, and a professional is the "
            "right person to help you understand it. If you like, I can help you think about how to "
            "describe what you've been experiencing to them, or we can talk about how you're feeling "
            "right now."
        )
    if kind == "medication":
        emergency = _EMERGENCY_NUMBERS.get(_norm_locale(locale), "your local emergency number")
        return (
            "I can't advise on medication doses or changes: I'm an AI assistant, not a doctor or "
            "pharmacist, and the right dose depends on your health, history and other medicines. "
            "Please ask your prescriber or a pharmacist, and don't start, stop or change a medication "
            "without talking to them. If you have taken more than prescribed or feel unwell, call "
            f"{emergency} now. I'm happy to talk about how you're feeling in the meantime."
        )
    raise ValueError(f"decline_reply: expected kind 'diagnosis', 'medication' or 'crisis'; got {kind!r}")


# ---------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------

CRISIS_EXEMPLARS: tuple[str, ...] = (
    # direct
    "I want to kill myself",
    "I'm going to end my life",
    "I've been thinking about suicide",
    "I want to die",
    "I don't want to be alive anymore",
    "I'm going to take my own life",
    "I've been cutting myself again",
    "I keep hurting myself on purpose",
    "I took a whole bottle of pills",
    "I have a plan to end it tonight",
    # indirect
    "Everyone would be better off if I were dead",
    "I'm just a burden, they'd all be happier if I died",
    "Nobody would miss me if I was gone",
    "There's no reason for me to keep living",
    "I can't go on living like this",
    "I wish I could go to sleep and never wake up",
    "I want everything to stop, for good",
    "I've written letters for my loved ones to read after I'm gone",
    "I've been giving away my things because I won't need them",
    "I won't be a burden to anyone much longer",
    "I keep thinking about jumping off a bridge",
    "I've been saving up my pills",
    "Life isn't worth living anymore",
    "I just want to disappear forever and never come back",
    "I'm done with life, I can't do this anymore",
    "I won't be around much longer",
    "There's no way out except dying",
    # passive wishes, preparation, method ideation, final acts
    "I wish something would just happen to me so I wouldn't have to wake up",
    "I hope I get hit by a car",
    "I've got everything ready and I've written a note",
    "I've been thinking about crashing my car on purpose",
    "I've been reading about which overdose would be fatal",
    "I've been planning my own funeral",
    "I just want the pain to stop forever",
    "This is the last time you'll hear from me",
)
"""Short crisis statements, direct and indirect; a message close to any of them is a crisis."""

DEFAULT_CRISIS_THRESHOLD = 0.52
STRONG_CRISIS_SIMILARITY = 0.60
"""Cosine similarity (all-MiniLM-L6-v2) to the nearest crisis exemplar at or above which a message is a
crisis. Chosen for recall, since a missed crisis costs far more than an extra resources line.
Measured with these exemplars and patterns (embedding OR pattern flags):

    threshold                                  0.50   0.52   0.55   0.60
    held-out crisis statements (15), recall    0.80   0.73   0.53   0.47
    held-out everyday/sad messages (15), FP    0.13   0.13   0.07   0.00
    ESConv seeker turns (14,792), flagged      1.0%   0.7%   0.4%   0.2%

Everyday idioms score well below it ("this homework is killing me" 0.19, "how do I kill a python
process" 0.34, "this traffic is killing me" 0.41); near-misses above it include "I'm going to kill it
at the interview tomorrow" (0.52) and "I hurt myself playing football" (0.54)."""

_I = re.IGNORECASE

_HARM_VERBS = r"hurt|cut|burn|starve|punish"
_HARM_VERBS_ING = r"hurting|cutting|burning|starving|punishing"
# Each pattern is (name, regex). They look for first-person self-harm language, never bare verbs such
# as "kill" or "die", so that idioms and programming questions do not match.
_CRISIS_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "suicide",
        re.compile(
            r"(?<!not\s)(?<!n't\s)\bsuicid(?:e|al|ality)\b(?!\s+(?:hotlines?|prevention|squad)\b)", _I
        ),
    ),
    (
        "kill_myself",
        re.compile(r"\b(?:kill(?:ing)?|hang(?:ing)?|shoot(?:ing)?)\s+my\s*self\b", _I),
    ),
    (
        "end_my_life",
        re.compile(
            r"\b(?:end(?:ing)?|take|taking|took)\s+my\s+(?:own\s+)?life\b"
            r"|\bend(?:ing)?\s+it\s+all\b|\bend\s+it\s+(?:tonight|today|now|soon)\b"
            r"|\b(?:want|wanna|going|gonna|decided|ready|plan(?:ning)?|thoughts?\s+of|think(?:ing)?\s+(?:of|about))\s+(?:to\s+)?"
            r"end(?:ing)?\s+(?:it|things|everything)\b(?!\s+(?:with|between))",
            _I,
        ),
    ),
    (
        "want_to_die",
        re.compile(
            r"(?<!n't\s)(?<!not\s)(?<!never\s)\b(?:want|wanna|wanted|wish|ready|deserve)\s+(?:to\s+)?die\b(?!\s+(?:of|from|laughing)\b)"
            r"|\bwish\s+i\s+(?:was|were)\s+dead\b|\bwish\s+i\s+(?:had\s+)?never\s+(?:been\s+born|existed)\b",
            _I,
        ),
    ),
    (
        "not_alive",
        re.compile(
            r"\b(?:don'?t|do\s+not|no\s+longer)\s+want\s+to\s+(?:be\s+alive|live|exist|be\s+here|wake\s+up)\b"
            r"(?!\s+(?:in|with|there|here|at|near|on|without|under|through)\b)"
            r"|\bno\s+(?:reason|point)\s+(?:in\s+|to\s+)?(?:living|live|going\s+on|being\s+alive)\b"
            r"|\b(?:life\s+is\s*n'?t|life\s+is\s+not|not)\s+worth\s+living\b"
            r"|\bcan'?t\s+go\s+on\s+(?:living|anymore|like\s+this)\b"
            r"|\b(?:what'?s|what\s+is)\s+the\s+point\s+(?:of|in)\s+(?:being\s+alive|living|life|going\s+on)\b"
            r"|\btired\s+of\s+(?:being\s+alive|living|life)\b",
            _I,
        ),
    ),
    (
        "better_off_dead",
        re.compile(r"\bbetter\s+off\s+(?:dead|without\s+me|if\s+i\s+(?:was|were)\s+(?:dead|gone))\b", _I),
    ),
    (
        "self_harm",
        re.compile(
            r"\bself[-\s]?harm(?:ing|ed)?\b|\bself[-\s]?injur(?:y|e|ing)\b|\bharm(?:ed|ing)?\s+my\s*self\b"
            rf"|\b(?:{_HARM_VERBS_ING})\s+my\s*self\b"
            r"|\b(?:want|wanna|wanted|going|urges?|tempted|tr(?:y|ied|ying)|think(?:ing)?\s+about|thought\s+about"
            rf"|plan(?:ning)?)\s+(?:to\s+)?(?:{_HARM_VERBS})\s+my\s*self\b"
            rf"|\b(?:{_HARM_VERBS})\s+my\s*self\s+(?:again|on\s+purpose|deliberately|intentionally)\b"
            r"|\bcut(?:ting)?\s+my\s+(?:wrists?|arms?|thighs?)\b|\b(?:started|start|been)\s+cutting\s+again\b"
            r"|\bi(?:'m|\s+am)\s+a\s+cutter\b",
            _I,
        ),
    ),
    (
        "overdose",
        re.compile(
            r"\boverdos(?:e|ed|ing)\b|\b(?:take|took|swallow(?:ed)?)\s+(?:all|a\s+whole\s+bottle)\s+of\s+(?:my\s+)?(?:pills|meds|tablets)\b",
            _I,
        ),
    ),
    (
        "lethal_means",
        re.compile(
            r"\b(?:lethal|fatal|deadly)\s+(?:dose|amount|overdose|quantity)\b"
            r"|\bhow\s+(?:many|much)\b[^.?!\n]{0,60}\b(?:to\s+die|kill\s+(?:me|myself|a\s+person|someone)|be\s+(?:lethal|fatal)|to\s+overdose|to\s+od)\b"
            r"|\b(?:painless|easiest|quickest|best)\s+way\s+to\s+die\b"
            r"|\bso\s+(?:that\s+)?i\s+(?:don'?t|do\s+not|won'?t|will\s+not|never)\s+wake\s+up\b"
            r"|\bnever\s+wake\s+up\s+again\b",
            _I,
        ),
    ),
)

_CONDITIONS = (
    r"bipolar|(?:clinical\s+|major\s+)?depression|depressive\s+disorder|adhd|add|ocd|ptsd|c-ptsd|bpd"
    r"|borderline|autism|autistic|asperger'?s?|schizophreni\w*|schizoaffective|psychosis|psychotic"
    r"|anxiety(?:\s+disorder)?|panic\s+disorder|eating\s+disorder|anorexi\w*|bulimi\w*|binge\s+eating"
    r"|(?:a\s+)?personality\s+disorder|narcissis\w*|(?:a\s+)?narcissist|sociopath\w*|psychopath\w*"
    r"|dementia|dissociative\s+identity\s+disorder|(?:clinically\s+)?depressed|a\s+mental\s+(?:illness|disorder)"
)
_DIAGNOSIS_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "diagnose_me",
        re.compile(r"\bdiagnos(?:e|is|ing)\s+(?:me|my)\b|\b(?:can|could|will|would)\s+you\s+diagnose\b", _I),
    ),
    (
        "what_diagnosis",
        re.compile(
            r"\bwhat(?:'s|\s+is)\s+my\s+diagnosis\b|\bwhat\s+(?:disorder|mental\s+illness|condition)\s+do\s+i\s+have\b",
            _I,
        ),
    ),
    (
        "do_i_have",
        re.compile(
            rf"\b(?:do|could|might|may|would)\s+(?:you\s+think\s+)?i\s+(?:have|be|suffer\s+from)\s+(?:{_CONDITIONS})\b"
            rf"|\b(?:am|are)\s+i\s+(?:{_CONDITIONS})\b"
            rf"|\b(?:do\s+you\s+think\s+)?i(?:'m|\s+am)\s+(?:{_CONDITIONS})\s*\?"
            rf"|\bis\s+(?:it|this)\s+(?:{_CONDITIONS})\s*\?"
            rf"|\bdoes\s+(?:this|that|it)\s+(?:sound|look)\s+like\s+(?:i\s+have\s+)?(?:{_CONDITIONS})\b"
            rf"|\b(?:does|could|might)\s+(?:he|she|they|my\s+\w+)\s+(?:have|be|suffer\s+from)\s+(?:{_CONDITIONS})\b"
            rf"|\b(?:is|are)\s+(?:he|she|they|my\s+\w+)\s+(?:{_CONDITIONS})\b",
            _I,
        ),
    ),
)

_DRUGS = (
    r"sertraline|zoloft|fluoxetine|prozac|citalopram|celexa|escitalopram|lexapro|paroxetine|paxil"
    r"|venlafaxine|effexor|duloxetine|cymbalta|bupropion|wellbutrin|mirtazapine|remeron|trazodone"
    r"|amitriptyline|lithium|lamotrigine|lamictal|valproate|depakote|quetiapine|seroquel|olanzapine"
    r"|zyprexa|aripiprazole|abilify|risperidone|risperdal|haloperidol|clozapine|alprazolam|xanax"
    r"|lorazepam|ativan|clonazepam|klonopin|diazepam|valium|zolpidem|ambien|adderall|ritalin"
    r"|methylphenidate|vyvanse|lisdexamfetamine|atomoxetine|strattera|gabapentin|pregabalin|lyrica"
    r"|propranolol|hydroxyzine|buspirone|melatonin|ssris?|snris?|maois?|benzos?|benzodiazepines?"
    r"|anti-?depressants?|anti-?psychotics?|mood\s+stabili[sz]ers?|stimulants?|sleeping\s+pills?"
    r"|(?:my\s+)?meds|(?:my\s+)?medications?|(?:my\s+)?pills|(?:my\s+)?prescription"
)
_DOSE = (
    r"dose|doses|dosage|dosing|(?:\d+(?:\.\d+)?\s*)?(?:mg|milligrams?|mcg)|how\s+(?:many|much)|titrat\w*|taper\w*"
    r"|double|increase|decrease|lower|raise|stop\s+taking|come\s+off|get\s+off|skip|start\s+taking|switch"
)
_MEDICATION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("dose_request", re.compile(rf"\b(?:{_DOSE})\b[^.?!\n]{{0,60}}\b(?:{_DRUGS})\b", _I)),
    ("dose_request", re.compile(rf"\b(?:{_DRUGS})\b[^.?!\n]{{0,60}}\b(?:{_DOSE})\b[^.?!\n]*\?", _I)),
    (
        "dose_request",
        re.compile(
            r"\b(?:should|can|could)\s+i\s+take\s+\d+(?:\.\d+)?\s*(?:mg|milligrams?|pills|tablets)\b", _I
        ),
    ),
    (
        "dose_request",
        re.compile(
            r"\bhow\s+(?:many|much)\b[^.?!\n]{0,40}\b(?:can|should|could|do)\s+i\s+(?:safely\s+)?take\b", _I
        ),
    ),
)


def _first_match(patterns: Iterable[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    for name, pattern in patterns:
        if pattern.search(text):
            return name
    return None


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|\n+")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if len(s.strip()) >= 3]


def latest_user_text(messages: Sequence[Mapping[str, Any] | Any]) -> str:
    """Content of the last message whose role is 'user' ('' if none); accepts dicts or objects."""
    for message in reversed(messages):
        role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
        if role == "user":
            content = (
                message.get("content") if isinstance(message, Mapping) else getattr(message, "content", "")
            )
            return content if isinstance(content, str) else ""
    return ""


@dataclass(frozen=True)
class SafetyAssessment:
    """What the safety layer found in the latest user message.

    `matched` names the rule that fired ('pattern:<name>' or 'exemplar:<index>'), never the user's
    text, so an assessment can be logged without storing content.
    """

    crisis: bool
    kind: SafetyKind | None
    score: float
    """Max cosine similarity to a crisis exemplar (0.0 when there was no text)."""
    matched: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the response's `qtha.safety` field."""
        return {
            "crisis": self.crisis,
            "kind": self.kind,
            "score": round(self.score, 4),
            "matched": self.matched,
        }


class SafetyLayer:
    """Crisis / diagnosis / medication detection, and the replies that go with it, for one locale.

    Args:
        embedder: a SentenceTransformer; None loads the embedded all-MiniLM-L6-v2 on first use.
        locale: country code for the crisis resources (see `CRISIS_RESOURCES`).
        threshold: cosine similarity to the nearest crisis exemplar at or above which a message is a
            crisis.
        exemplars: crisis exemplars; default `CRISIS_EXEMPLARS`.
    """

    def __init__(
        self,
        embedder: SentenceTransformer | None = None,
        locale: str = "US",
        threshold: float = DEFAULT_CRISIS_THRESHOLD,
        exemplars: Sequence[str] = CRISIS_EXEMPLARS,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"SafetyLayer.threshold: expected 0 < threshold <= 1; got {threshold!r}")
        if not exemplars:
            raise ValueError("SafetyLayer.exemplars: expected at least one crisis exemplar; got none")
        self._embedder = embedder
        self.locale = locale
        self.threshold = float(threshold)
        self.exemplars = tuple(exemplars)
        self._exemplar_emb: np.ndarray | None = None  # (E, 384), unit rows
        self._lock = threading.Lock()

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, (len(texts), D)."""
        if self._embedder is None:
            from serving.embeddings import load_embedder

            self._embedder = load_embedder()
        return np.asarray(self._embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def crisis_similarity(self, text: str) -> tuple[float, int]:
        """(max cosine to a crisis exemplar, its index) over the whole text and each of its sentences.

        Sentences are scored separately because one crisis sentence inside a long message is diluted
        in the message's mean-pooled embedding.
        """
        with self._lock:
            if self._exemplar_emb is None:
                self._exemplar_emb = self._embed(list(self.exemplars))
        pieces = [text[:2000], *_sentences(text)[:32]]
        sims = self._embed(pieces) @ self._exemplar_emb.T  # (P, E)
        flat = int(np.argmax(sims))
        return float(sims.flat[flat]), flat % sims.shape[1]

    def assess(self, messages: Sequence[Mapping[str, Any] | Any]) -> SafetyAssessment:
        """Assess the latest user message of an OpenAI-style message list (dicts or `ChatMessage`s)."""
        text = latest_user_text(messages)
        if not text.strip():
            return SafetyAssessment(crisis=False, kind=None, score=0.0, matched=None)
        score, index = self.crisis_similarity(text)
        name = _first_match(_CRISIS_PATTERNS, text)
        if name is not None:
            return SafetyAssessment(crisis=True, kind="crisis", score=score, matched=f"pattern:{name}")
        # An explicit diagnosis or dosing request outweighs a weak crisis similarity; a strong one
        # (>= STRONG_CRISIS_SIMILARITY) is still treated as a crisis.
        for kind, patterns in (("medication", _MEDICATION_PATTERNS), ("diagnosis", _DIAGNOSIS_PATTERNS)):
            name = _first_match(patterns, text)
            if name is not None and score < max(self.threshold, STRONG_CRISIS_SIMILARITY):
                return SafetyAssessment(crisis=False, kind=kind, score=score, matched=f"pattern:{name}")
        if score >= self.threshold:
            return SafetyAssessment(crisis=True, kind="crisis", score=score, matched=f"exemplar:{index}")
        return SafetyAssessment(crisis=False, kind=None, score=score, matched=None)

    def crisis_reply(self) -> str:
        """`crisis_reply` for this layer's locale."""
        return crisis_reply(self.locale)

    def decline_reply(self, kind: str) -> str:
        """`decline_reply` for this layer's locale."""
        return decline_reply(kind, self.locale)

    def wrap_reply(self, text: str, assessment: SafetyAssessment, domain: str) -> str:
        """`wrap_reply` for this layer's locale."""
        return wrap_reply(text, assessment, domain, self.locale)


# ---------------------------------------------------------------------------------------------------
# Output side
# ---------------------------------------------------------------------------------------------------

_NUM = r"\d[\d,]*(?:\.\d+)?"
_AMOUNT = (
    rf"{_NUM}\s*(?:mg|milligrams?|g|grams?|mcg|micrograms?|ml|pills?|tablets?|capsules?)\b"
    rf"|\b{_NUM}\s+(?:of\s+(?:them|those|these)|at\s+once)\b|\b(?:whole|entire|full)\s+(?:bottle|pack|box)\b"
)
_HARM = (
    r"lethal|fatal|deadly|kill\w*|die|dying|death|overdos\w*|suicid\w*|end\s+(?:your|my|their|a)\s+life"
    r"|toxic\w*|poison\w*"
)
# Applied to one sentence at a time, so `.*` cannot reach into a neighbouring sentence.
_MEANS_PATTERNS: tuple[re.Pattern[str], ...] = (
    # a dose amount and a harm word in the same sentence, either order
    re.compile(rf"(?:{_AMOUNT}).*\b(?:{_HARM})\b|\b(?:{_HARM})\b.*(?:{_AMOUNT})", _I),
    # instructions for a method
    re.compile(
        r"\b(?:how\s+to|ways?\s+to|steps?\s+to|methods?\s+(?:to|of|for)|best\s+way\s+to|easiest\s+way\s+to"
        r"|painless(?:ly)?|quickest\s+way\s+to)\b.*\b(?:kill\s+(?:your|my|them)sel(?:f|ves)|commit\s+suicide"
        r"|end\s+(?:your|my|their)\s+(?:own\s+)?life|hang\s+(?:your|my)self|overdose|die)\b",
        _I,
    ),
    re.compile(
        r"\b(?:hang(?:ing)?\s+(?:your|my)self|slit\w*\s+(?:your|my)\s+wrists?|cut\s+(?:deeper|vertically|along)"
        r"|tie\s+a\s+noose|jump\s+(?:from|off)\s+(?:a|the)\s+(?:height|building|bridge|roof)\s+of)\b",
        _I,
    ),
)
# A sentence ends at [.!?] followed by whitespace or the end (so "3.5 g" stays whole), or at a newline.
_OUT_SENTENCE = re.compile(r"(?s).*?(?:[.!?]+(?=\s|\Z)|\n|\Z)")
_STREAM_BOUNDARY = re.compile(r"[.!?]+(?=\s)|\n")


def _gives_means(sentence: str) -> bool:
    return any(p.search(sentence) for p in _MEANS_PATTERNS)


class StreamingFinalCheck:
    """`final_check` for streamed text: holds each delta back until its sentence is complete.

    Use: `safe = check.feed(delta)` for each generated delta (send `safe`, possibly ''), then
    `check.flush()` at the end. Everything returned, concatenated, equals `final_check(full_text)`.
    A sentence that gives self-harm means is replaced by one notice (consecutive ones by a single
    notice); `removed` counts the sentences removed (for `SafetyCounters`).
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._removed_last = False
        self.removed = 0

    def _emit(self, sentence: str) -> str:
        if not _gives_means(sentence):
            if sentence.strip():
                self._removed_last = False
            return sentence
        self.removed += 1
        if self._removed_last:
            return "\n" if sentence.endswith("\n") else ""
        self._removed_last = True
        lead = sentence[: len(sentence) - len(sentence.lstrip())]
        return f"{lead}{_MEANS_REMOVED}" + ("\n" if sentence.endswith("\n") else "")

    def feed(self, delta: str) -> str:
        """Add a generated delta; return the text now safe to send (complete, checked sentences)."""
        self._buffer += delta
        out = []
        while (match := _STREAM_BOUNDARY.search(self._buffer)) is not None:
            out.append(self._emit(self._buffer[: match.end()]))
            self._buffer = self._buffer[match.end() :]
        return "".join(out)

    def flush(self) -> str:
        """Check and return whatever is left at the end of generation."""
        rest, self._buffer = self._buffer, ""
        return self._emit(rest) if rest else ""


def final_check(text: str) -> str:
    """Replace every sentence of generated `text` that could give self-harm means with one notice.

    Conservative on purpose: a sentence is removed when it pairs an amount (mg, g, pills, "a whole
    bottle", ...) with a harm word (lethal, overdose, die, ...), or describes a method ("how to ...
    kill yourself", "slit", "noose", ...). A medically harmless sentence can be removed too; that is
    the intended trade-off. Consecutive removed sentences become a single notice.
    """
    check = StreamingFinalCheck()
    return "".join(check._emit(m.group(0)) for m in _OUT_SENTENCE.finditer(text) if m.group(0))


def wrap_reply(text: str, assessment: SafetyAssessment, domain: str, locale: str | None = "US") -> str:
    """Make a generated reply safe to send.

    - `final_check` is applied to `text` (idempotent).
    - On a crisis (in any domain) the reply LEADS with the crisis resources for `locale`.
    - In the counselling domain, or whenever a safety kind was detected, the one-line `AI_DISCLOSURE`
      is appended (once).
    """
    body = final_check(text).strip()
    parts = []
    if assessment.crisis:
        resources = crisis_resources(locale)
        if not body.startswith(resources):
            parts.append(resources)
    parts.append(body)
    if (domain in COUNSELING_DOMAINS or assessment.kind is not None) and AI_DISCLOSURE not in body:
        parts.append(AI_DISCLOSURE)
    return "\n\n".join(p for p in parts if p)


# ---------------------------------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------------------------------


class SafetyCounters:
    """Thread-safe counts of safety events by kind ('crisis', 'diagnosis', 'medication', 'means_removed').

    Only counts are kept: never the text that triggered an event.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, n: int = 1) -> None:
        """Add `n` events of `kind`."""
        if not isinstance(kind, str) or not kind:
            raise ValueError(f"SafetyCounters.record: expected a non-empty kind; got {kind!r}")
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of the counts, e.g. {'crisis': 3, 'medication': 1}."""
        with self._lock:
            return dict(self._counts)

    def get(self, kind: str) -> int:
        """Count for one kind (0 when none)."""
        with self._lock:
            return self._counts.get(kind, 0)
