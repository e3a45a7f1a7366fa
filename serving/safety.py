"""Safety layer for people in distress: risk detection, declines, crisis resources and an output check.

A mental-health assistant will be written to by people in danger, in any language. Whatever the adapter
would generate, such a person must get the right resources first and nothing that could help them harm
themselves or others. This module decides that from the text alone (no web types, no model other than
a sentence embedder):

    user message ──► assess() ──► SafetyAssessment(crisis, kind, category, categories, language, ...)
                        │  0. figures of speech are blanked ("this homework is killing me", "me muero de
                        │     risa", "累死了"; see serving.risk.mask_idioms);
                        │  1. patterns per risk category and language (en, zh, es, fr), with slang and
                        │     misspellings ("kms", "unalive myself", "suicidial");
                        │  2. embedding similarity: max cosine between the message (and each of its
                        │     sentences) and each category's exemplars, >= threshold -> that category.
                        │     The embedder is multilingual (USE v3, serving.safety_embedder), so one
                        │     exemplar set serves every language; indirect statements ("everyone would
                        │     be better off without me") are caught here;
                        │  3. patterns for diagnosis requests and medication-dose requests.
                        ▼
    engine: crisis -> crisis_reply(locale, category, language): the category's resources first (in the
            user's language too, for zh / es / fr), no generated text;
            diagnosis / medication in the counselling domain -> decline_reply(kind);
            every generated text, as it streams -> StreamingFinalCheck (drops sentences giving
            self-harm means); needs_disclosure() -> the reply ends with AI_DISCLOSURE.

Categories (serving.risk.CATEGORIES): suicide_self_harm, overdose_injury, danger_from_others,
child_at_risk, sexual_assault, harm_to_others. Nothing here stores message content; `SafetyCounters`
counts events by kind only, and an assessment names rules and categories, never the user's words.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from quantum_adapters.domains import is_counseling

from .risk import (
    CATEGORIES,
    CATEGORY_EXEMPLARS,
    ORDINARY_EXEMPLARS,
    RISK_RESOURCES,
    detect_language,
    english_exemplars,
    lead_in,
    mask_idioms,
    match_patterns,
    ordered,
    resources,
    support_text,
)
from .safety_embedder import is_multilingual

_ORDINARY = "ordinary"  # the exemplar table's key for ordinary distress (not a risk category)

__all__ = [
    "AI_DISCLOSURE",
    "CATEGORIES",
    "CRISIS_EXEMPLARS",
    "CRISIS_RESOURCES",
    "DEFAULT_CRISIS_THRESHOLD",
    "MULTILINGUAL_CRISIS_THRESHOLD",
    "RISK_RESOURCES",
    "SafetyAssessment",
    "SafetyCounters",
    "SafetyLayer",
    "StreamingFinalCheck",
    "crisis_reply",
    "crisis_resources",
    "decline_reply",
    "latest_user_text",
    "needs_disclosure",
]

SafetyKind = Literal["crisis", "diagnosis", "medication"]

# ---------------------------------------------------------------------------------------------------
# Resources and fixed texts
# ---------------------------------------------------------------------------------------------------

CRISIS_RESOURCES: dict[str, str] = RISK_RESOURCES["suicide_self_harm"]
"""The suicide and self-harm resource line, by locale (country code). Unknown locales use 'INTL'.
Other categories' lines are in `RISK_RESOURCES`."""

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


def crisis_resources(locale: str | None = "US", category: str = "suicide_self_harm") -> str:
    """The resource line for `category` in `locale` (country code); unknown or None -> international."""
    return resources(category, _norm_locale(locale))


_AI_LINE = (
    "I'm an AI assistant, not a therapist or clinician, but I'm here to keep talking with you if that helps."
)


def crisis_reply(
    locale: str | None = "US",
    category: str = "suicide_self_harm",
    language: str = "en",
    also: Sequence[str] = (),
) -> str:
    """A complete reply to someone at risk: leads with the resources, warm, short, no means information.

    Args:
        locale: country code choosing the numbers (US, UK, CA, AU; anything else: international).
        category: the primary risk category (see `CATEGORIES`); its resources come first.
        language: 'zh', 'es' or 'fr' put a lead-in sentence with the same numbers in that language
            first, and the closing paragraph in that language; anything else: English only.
        also: further categories the message matched; their resource lines follow the first.

    Raises:
        ValueError: unknown category.
    """
    code = _norm_locale(locale)
    lines = [lead] if (lead := lead_in(category, code, language)) else []
    for c in [category, *(c for c in ordered(also) if c != category)]:
        line = resources(c, code)
        if line not in lines:
            lines.append(line)
    if language in ("zh", "es", "fr"):
        return "\n\n".join([*lines, support_text(category, language)])
    return "\n\n".join([*lines, support_text(category, "en"), _AI_LINE])


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

CRISIS_EXEMPLARS: tuple[str, ...] = CATEGORY_EXEMPLARS["suicide_self_harm"]
"""Suicide and self-harm exemplars (all categories' are in `CATEGORY_EXEMPLARS`)."""

DEFAULT_CRISIS_THRESHOLD = 0.52
"""Cosine similarity (all-MiniLM-L6-v2, English exemplars) to the nearest exemplar at or above which a
message is in that category; used when the multilingual encoder is not installed. Chosen for recall on
the earlier held-out English set (recall 0.73, FP 0.13 on 15 + 15 messages; ESConv seeker turns 0.7%)."""

MULTILINGUAL_CRISIS_THRESHOLD = 0.55
"""The same for USE multilingual v3 (serving.safety_embedder), tuned on evals/data/safety/dev.jsonl
(132 crisis messages, 105 ordinary ones; idioms masked first). The embedding alone, per threshold:

    threshold                                    0.50   0.55   0.60   0.65
    dev crisis, flagged                          0.92   0.83   0.65   0.57
    dev crisis, flagged with the right category  0.89   0.79   0.63   0.55
    dev ordinary, flagged                        0.02   0.00   0.00   0.00

With the patterns (which flag first) the dev figures are recall 1.00 and FP 0.00; `qtha-eval safety
--split test` reports the held-out ones."""

STRONG_MARGIN = 0.08
"""Above threshold + STRONG_MARGIN a similarity outweighs a diagnosis / dosing pattern."""

RUNNER_UP_MARGIN = 0.03
"""A second category within this of the best similarity also gets its resources."""

_I = re.IGNORECASE

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


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；，])|\n+")


_CJK_CHAR = re.compile(r"[\u4e00-\u9fff]")


def _sentences(text: str) -> list[str]:
    """Sentences and Chinese clauses long enough to embed on their own (>= 4 characters / 3 words):
    a two- or three-character clause ("好伤心") lands near unrelated exemplars that share a character."""
    out = []
    for piece in _SENTENCE_SPLIT.split(text):
        piece = piece.strip()
        if len(_CJK_CHAR.findall(piece)) >= 4 or len(piece.split()) >= 3:
            out.append(piece)
    return out


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

    `matched` names the rule that fired ('pattern:<lang>:<name>' or 'exemplar:<category>:<index>'),
    never the user's text, so an assessment can be logged without storing content.
    """

    crisis: bool
    kind: SafetyKind | None
    score: float
    """Max cosine similarity to a risk exemplar of any category (0.0 when there was no text)."""
    matched: str | None
    category: str | None = None
    """Primary risk category (see `CATEGORIES`) when `crisis`; its resources lead the reply."""
    categories: tuple[str, ...] = ()
    """Every category the message matched, primary first; the reply carries each one's resources."""
    language: str = "en"
    """Detected language of the message ('en', 'zh', 'es', 'fr'): the reply's lead-in language."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the response's `qtha.safety` field (names rules and categories, no text)."""
        return {
            "crisis": self.crisis,
            "kind": self.kind,
            "category": self.category,
            "categories": list(self.categories),
            "language": self.language,
            "score": round(self.score, 4),
            "matched": self.matched,
        }


class SafetyLayer:
    """Risk / diagnosis / medication detection, and the replies that go with it, for one locale.

    Args:
        embedder: anything with SentenceTransformer's `encode(texts, normalize_embeddings=True)`; None
            loads the multilingual USE v3 on first use (all-MiniLM-L6-v2, with a log line, when its
            package is missing; see `serving.safety_embedder`).
        locale: country code for the resources (see `RISK_RESOURCES`).
        threshold: cosine similarity to the nearest exemplar of a category at or above which a message
            is in that category. None: `MULTILINGUAL_CRISIS_THRESHOLD` for a multilingual embedder,
            `DEFAULT_CRISIS_THRESHOLD` for an English one.
        exemplars: per-category exemplars (default `CATEGORY_EXEMPLARS`), or one sequence of suicide
            and self-harm exemplars. An English-only embedder compares with the English ones only.
        ordinary: everyday-distress exemplars (default `ORDINARY_EXEMPLARS`): a similarity hit counts only
            when the message is closer to a crisis exemplar than to all of these ("I can't sleep before
            exams" is near "I wish I could go to sleep and never wake up", nearer to "I can't sleep at
            night"). Patterns are not affected. ``()`` turns the contrast off.
    """

    def __init__(
        self,
        embedder: Any = None,
        locale: str = "US",
        threshold: float | None = None,
        exemplars: Mapping[str, Sequence[str]] | Sequence[str] = CATEGORY_EXEMPLARS,
        ordinary: Sequence[str] = ORDINARY_EXEMPLARS,
    ) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"SafetyLayer.threshold: expected 0 < threshold <= 1; got {threshold!r}")
        table = dict(exemplars) if isinstance(exemplars, Mapping) else {"suicide_self_harm": exemplars}
        unknown = sorted(set(table) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"SafetyLayer.exemplars: expected categories among {CATEGORIES}; got {unknown}")
        if not any(table.values()):
            raise ValueError("SafetyLayer.exemplars: expected at least one crisis exemplar; got none")
        self._embedder = embedder
        self.locale = locale
        self._threshold = threshold
        self._exemplar_table = {c: tuple(v) for c, v in table.items() if v}
        if tuple(ordinary):
            self._exemplar_table[_ORDINARY] = tuple(ordinary)
        self._exemplars: list[tuple[str, int, str]] | None = None  # (category, index, text) per row
        self._exemplar_emb: np.ndarray | None = None  # (E, D), unit rows
        self._lock = threading.RLock()  # held while loading the embedder inside _exemplar_rows

    @property
    def embedder(self) -> Any:
        """The sentence embedder, loaded on first use."""
        with self._lock:
            if self._embedder is None:
                from .safety_embedder import load_safety_embedder

                self._embedder = load_safety_embedder()
            return self._embedder

    @property
    def threshold(self) -> float:
        """The similarity threshold in force (depends on the embedder when none was given)."""
        if self._threshold is not None:
            return self._threshold
        return MULTILINGUAL_CRISIS_THRESHOLD if is_multilingual(self.embedder) else DEFAULT_CRISIS_THRESHOLD

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm embeddings, (len(texts), D)."""
        return np.asarray(self.embedder.encode(texts, normalize_embeddings=True, convert_to_numpy=True))

    def _exemplar_rows(self) -> tuple[list[tuple[str, int, str]], np.ndarray]:
        embedder = self.embedder
        with self._lock:
            if self._exemplar_emb is None:
                table = self._exemplar_table
                if not is_multilingual(embedder):
                    table = {c: v for c, v in english_exemplars(table).items() if v}
                rows = [(c, i, t) for c, texts in table.items() for i, t in enumerate(texts)]
                self._exemplar_emb = self._embed([t for _, _, t in rows])
                self._exemplars = rows
            assert self._exemplars is not None
            return self._exemplars, self._exemplar_emb

    def category_similarity(self, text: str) -> dict[str, tuple[float, int]]:
        """{category: (max cosine to its exemplars, that exemplar's index)} over the text and its sentences.

        Sentences (and Chinese clauses) are scored separately because one crisis sentence inside a
        long message is diluted in the message's pooled embedding. `text` should be idiom-masked.
        """
        return {c: v for c, v in self._similarities(text).items() if c != _ORDINARY}

    def _similarities(self, text: str) -> dict[str, tuple[float, int]]:
        """`category_similarity` plus the ordinary-distress exemplars' (under ``_ORDINARY``)."""
        rows, emb = self._exemplar_rows()
        pieces = list(dict.fromkeys(p for p in [text[:2000].strip(), *_sentences(text)[:32]] if p))
        if not pieces:
            return {}
        sims = (self._embed(pieces) @ emb.T).max(axis=0)  # (E,)
        out: dict[str, tuple[float, int]] = {}
        for (category, index, _), sim in zip(rows, sims, strict=True):
            if category not in out or sim > out[category][0]:
                out[category] = (float(sim), index)
        return out

    def crisis_similarity(self, text: str) -> tuple[float, int]:
        """(max cosine to a suicide / self-harm exemplar, its index); (0.0, -1) when there is none."""
        return self.category_similarity(mask_idioms(text)).get("suicide_self_harm", (0.0, -1))

    def assess(self, messages: Sequence[Mapping[str, Any] | Any]) -> SafetyAssessment:
        """Assess the latest user message of an OpenAI-style message list (dicts or `ChatMessage`s)."""
        text = latest_user_text(messages)
        if not text.strip():
            return SafetyAssessment(crisis=False, kind=None, score=0.0, matched=None)
        language = detect_language(text)
        masked = mask_idioms(text)
        sims = self._similarities(masked)
        ordinary = sims.pop(_ORDINARY, (0.0, -1))[0]
        score = max((s for s, _ in sims.values()), default=0.0)
        hits = match_patterns(masked)
        threshold = self.threshold
        if hits:
            return SafetyAssessment(
                crisis=True,
                kind="crisis",
                score=score,
                matched=f"pattern:{hits[0][1]}",
                category=hits[0][0],
                categories=tuple(c for c, _ in hits),
                language=language,
            )
        # An explicit diagnosis or dosing request outweighs a weak crisis similarity; a strong one
        # (threshold + STRONG_MARGIN) is still treated as a crisis.
        for kind, patterns in (("medication", _MEDICATION_PATTERNS), ("diagnosis", _DIAGNOSIS_PATTERNS)):
            name = _first_match(patterns, text)
            if name is not None and score < threshold + STRONG_MARGIN:
                return SafetyAssessment(
                    crisis=False, kind=kind, score=score, matched=f"pattern:{name}", language=language
                )
        # a similarity hit counts only above the threshold and closer than any ordinary-distress exemplar
        above = sorted(
            ((s, c, i) for c, (s, i) in sims.items() if s >= threshold and s > ordinary), reverse=True
        )
        if above:
            best, category, index = above[0]
            # Categories within RUNNER_UP_MARGIN of the best also get their resources (at most two).
            close = [c for s, c, _ in above[1:2] if s >= best - RUNNER_UP_MARGIN]
            return SafetyAssessment(
                crisis=True,
                kind="crisis",
                score=score,
                matched=f"exemplar:{category}:{index}",
                category=category,
                categories=(category, *close),
                language=language,
            )
        return SafetyAssessment(crisis=False, kind=None, score=score, matched=None, language=language)

    def crisis_reply(self, assessment: SafetyAssessment | None = None) -> str:
        """`crisis_reply` for this layer's locale and, when given, the assessment's category and language."""
        if assessment is None or assessment.category is None:
            return crisis_reply(self.locale)
        return crisis_reply(self.locale, assessment.category, assessment.language, assessment.categories)

    def decline_reply(self, kind: str) -> str:
        """`decline_reply` for this layer's locale."""
        return decline_reply(kind, self.locale)


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
# A sentence ends at [.!?] followed by whitespace (so "3.5 g" stays whole), at a newline, or at the end.
_STREAM_BOUNDARY = re.compile(r"[.!?]+(?=\s)|\n")


def _gives_means(sentence: str) -> bool:
    return any(p.search(sentence) for p in _MEANS_PATTERNS)


class StreamingFinalCheck:
    """The output check on streamed text: replaces every sentence that could give self-harm means with
    one notice, holding each delta back until its sentence is complete.

    Conservative on purpose: a sentence is removed when it pairs an amount (mg, g, pills, "a whole
    bottle", ...) with a harm word (lethal, overdose, die, ...), or describes a method ("how to ...
    kill yourself", "slit", "noose", ...). A medically harmless sentence can be removed too; that is
    the intended trade-off. Consecutive removed sentences become a single notice.

    Use: `safe = check.feed(delta)` for each generated delta (send `safe`, possibly ''), then
    `check.flush()` at the end; however the text is split into deltas, the concatenation is the
    same. `removed` counts the sentences removed (for `SafetyCounters`).
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


def needs_disclosure(domain: str | None, assessment: SafetyAssessment) -> bool:
    """Whether a generated reply ends with `AI_DISCLOSURE` (once): in the counselling domain, or
    whenever the message raised a safety kind."""
    return is_counseling(domain) or assessment.kind is not None


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
