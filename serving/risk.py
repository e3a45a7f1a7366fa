"""Risk taxonomy for the safety layer: categories, their resources per locale, and multilingual detection.

Someone in danger may not be suicidal: they may have already taken an overdose, be threatened by a
partner, be a child being hurt, have been sexually assaulted, or be afraid they will hurt someone. Each
needs different help first, so each category has its own resources per locale (US, UK, CA, AU,
international) and its own lead-in sentence, in the user's language where that is Chinese, Spanish or
French:

    category             resources it leads with (US example)
    suicide_self_harm    988 Suicide & Crisis Lifeline, 911
    overdose_injury      911, Poison Control 1-800-222-1222
    danger_from_others   911, National Domestic Violence Hotline 1-800-799-7233
    child_at_risk        911, Childhelp 1-800-422-4453 (and a plain sentence to a child)
    sexual_assault       911, RAINN 1-800-656-4673
    harm_to_others       988, 911

`CATEGORIES` is in priority order: when a message matches several (an overdose taken to die, a child
who is sexually abused) the first is the primary category and the reply leads with its resources, then
the others'.

Detection here is the pattern half (the embedding half is in `serving.safety`):

    text ──► mask_idioms() ──► match_patterns() ──► [(category, 'lang:name'), ...]
             "this homework is killing me", "me muero de risa", "累死了", "je suis mort de rire":
             figures of speech are blanked first, in every language, so neither the patterns nor the
             embedding see them.

Patterns are written per language (en, zh, es, fr) for first-person statements, with the slang,
abbreviations and misspellings people use ("kms", "unalive myself", "wanna die", "suicidial", "SA'd").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "CATEGORIES",
    "CATEGORY_EXEMPLARS",
    "LANGUAGES",
    "ORDINARY_EXEMPLARS",
    "RISK_RESOURCES",
    "detect_language",
    "lead_in",
    "mask_idioms",
    "match_patterns",
    "resources",
    "support_text",
]

CATEGORIES: tuple[str, ...] = (
    "overdose_injury",
    "suicide_self_harm",
    "child_at_risk",
    "sexual_assault",
    "danger_from_others",
    "harm_to_others",
)
"""Risk categories, most urgent first (an injury already done outranks the intent behind it)."""

LANGUAGES: tuple[str, ...] = ("en", "zh", "es", "fr")
LOCALES: tuple[str, ...] = ("US", "UK", "CA", "AU", "INTL")

# ---------------------------------------------------------------------------------------------------
# Resources (every number checked against the service's own public page)
# ---------------------------------------------------------------------------------------------------

_CHILD_TO_CHILD = (
    "If you are a child or a teenager: it is not your fault, and telling a grown-up you trust or calling "
    "this line is the right thing to do."
)

RISK_RESOURCES: dict[str, dict[str, str]] = {
    "suicide_self_harm": {
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
    },
    "overdose_injury": {
        "US": (
            "If you or someone with you has taken too much of something, swallowed something harmful or "
            "is badly hurt, call 911 now, or Poison Control on 1-800-222-1222 (free, 24/7). Don't wait "
            "for symptoms."
        ),
        "UK": (
            "If you or someone with you has taken too much of something, swallowed something harmful or "
            "is badly hurt, call 999 now, or NHS 111 for urgent advice if no one is in danger right now. "
            "Don't wait for symptoms."
        ),
        "CA": (
            "If you or someone with you has taken too much of something, swallowed something harmful or "
            "is badly hurt, call 911 now, or your poison centre on 1-844-764-7669 (1-844-POISON-X; in "
            "Quebec 1-800-463-5060). Don't wait for symptoms."
        ),
        "AU": (
            "If you or someone with you has taken too much of something, swallowed something harmful or "
            "is badly hurt, call 000 now, or the Poisons Information Centre on 13 11 26 (24/7). Don't "
            "wait for symptoms."
        ),
        "INTL": (
            "If you or someone with you has taken too much of something, swallowed something harmful or "
            "is badly hurt, call your local emergency number now or go to the nearest emergency "
            "department. Don't wait for symptoms."
        ),
    },
    "danger_from_others": {
        "US": (
            "If someone is hurting or threatening you, call 911 if you are in danger now. The National "
            "Domestic Violence Hotline is free, confidential and 24/7: call 1-800-799-7233 or text START "
            "to 88788."
        ),
        "UK": (
            "If someone is hurting or threatening you, call 999 if you are in danger now (on a mobile, if "
            "you can't speak, stay on the line and press 55 when asked). The National Domestic Abuse "
            "Helpline, run by Refuge, is free and 24/7: 0808 2000 247."
        ),
        "CA": (
            "If someone is hurting or threatening you, call 911 if you are in danger now. Find a shelter "
            "or local support at https://sheltersafe.ca, or call or text 9-8-8 (free, 24/7)."
        ),
        "AU": (
            "If someone is hurting or threatening you, call 000 if you are in danger now. 1800RESPECT "
            "(1800 737 732) is free, confidential and 24/7 for anyone affected by family, domestic or "
            "sexual violence."
        ),
        "INTL": (
            "If someone is hurting or threatening you, call your local emergency number if you are in "
            "danger now; https://findahelpline.com lists free, confidential domestic-violence lines in "
            "your country."
        ),
    },
    "child_at_risk": {
        "US": (
            "If a child is being hurt or is in danger, call 911 now. The Childhelp National Child Abuse "
            "Hotline is free and 24/7, for children and for adults worried about a child: call or text "
            f"1-800-422-4453. {_CHILD_TO_CHILD}"
        ),
        "UK": (
            "If a child is being hurt or is in danger, call 999 now. Children and young people can call "
            "Childline free on 0800 1111 (24/7); adults worried about a child can call the NSPCC Helpline "
            f"on 0808 800 5000. {_CHILD_TO_CHILD}"
        ),
        "CA": (
            "If a child is being hurt or is in danger, call 911 now. Kids Help Phone is free and 24/7 for "
            "young people: call 1-800-668-6868 or text CONNECT to 686868; adults worried about a child can "
            f"call their local child-protection agency. {_CHILD_TO_CHILD}"
        ),
        "AU": (
            "If a child is being hurt or is in danger, call 000 now. Kids Helpline is free and 24/7 for "
            "young people aged 5 to 25: 1800 55 1800; adults worried about a child can contact their state "
            f"or territory's child-protection service. {_CHILD_TO_CHILD}"
        ),
        "INTL": (
            "If a child is being hurt or is in danger, call your local emergency number now. In Europe and "
            "many other countries 116 111 reaches a free child helpline; https://childhelplineinternational.org "
            f"lists the helpline in your country. {_CHILD_TO_CHILD}"
        ),
    },
    "sexual_assault": {
        "US": (
            "If you have been sexually assaulted, it is not your fault. If you are in danger or hurt, call "
            "911. The RAINN National Sexual Assault Hotline is free, confidential and 24/7: "
            "1-800-656-4673."
        ),
        "UK": (
            "If you have been sexually assaulted, it is not your fault. If you are in danger or hurt, call "
            "999. Rape Crisis has a free 24/7 support line: 0808 500 2222 (England and Wales); in "
            "Scotland, Rape Crisis Scotland: 08088 01 03 02."
        ),
        "CA": (
            "If you have been sexually assaulted, it is not your fault. If you are in danger or hurt, call "
            "911. Sexual assault centres offer free, confidential support "
            "(https://endingviolencecanada.org lists them), and 9-8-8 is free and 24/7."
        ),
        "AU": (
            "If you have been sexually assaulted, it is not your fault. If you are in danger or hurt, call "
            "000. 1800RESPECT (1800 737 732) is free, confidential and 24/7."
        ),
        "INTL": (
            "If you have been sexually assaulted, it is not your fault. If you are in danger or hurt, call "
            "your local emergency number; https://findahelpline.com lists free, confidential "
            "sexual-assault support in your country."
        ),
    },
    "harm_to_others": {
        "US": (
            "If you feel you might hurt someone, please get help now: move away from the person and from "
            "anything you could hurt them with, call or text 988 (free, 24/7, for any emotional crisis), "
            "or call 911 if someone is in immediate danger."
        ),
        "UK": (
            "If you feel you might hurt someone, please get help now: move away from the person and from "
            "anything you could hurt them with, call Samaritans free on 116 123 (24/7) or NHS 111, or "
            "call 999 if someone is in immediate danger."
        ),
        "CA": (
            "If you feel you might hurt someone, please get help now: move away from the person and from "
            "anything you could hurt them with, call or text 9-8-8 (free, 24/7), or call 911 if someone "
            "is in immediate danger."
        ),
        "AU": (
            "If you feel you might hurt someone, please get help now: move away from the person and from "
            "anything you could hurt them with, call Lifeline on 13 11 14 (24/7), or call 000 if someone "
            "is in immediate danger."
        ),
        "INTL": (
            "If you feel you might hurt someone, please get help now: move away from the person and from "
            "anything you could hurt them with, call your local emergency number if someone is in "
            "immediate danger, or find a free crisis line at https://findahelpline.com."
        ),
    },
}
"""The English resource line each category's reply leads with, by category and locale."""

_EMERGENCY = {"US": "911", "UK": "999", "CA": "911", "AU": "000"}
_CONTACTS: dict[str, dict[str, str]] = {
    "suicide_self_harm": {
        "US": "988",
        "UK": "Samaritans 116 123",
        "CA": "9-8-8",
        "AU": "Lifeline 13 11 14",
        "INTL": "https://findahelpline.com",
    },
    "overdose_injury": {
        "US": "Poison Control 1-800-222-1222",
        "UK": "NHS 111",
        "CA": "1-844-764-7669",
        "AU": "Poisons Information Centre 13 11 26",
    },
    "danger_from_others": {
        "US": "National Domestic Violence Hotline 1-800-799-7233",
        "UK": "Refuge 0808 2000 247",
        "CA": "https://sheltersafe.ca",
        "AU": "1800RESPECT 1800 737 732",
        "INTL": "https://findahelpline.com",
    },
    "child_at_risk": {
        "US": "Childhelp 1-800-422-4453",
        "UK": "Childline 0800 1111, NSPCC 0808 800 5000",
        "CA": "Kids Help Phone 1-800-668-6868",
        "AU": "Kids Helpline 1800 55 1800",
        "INTL": "116 111, https://childhelplineinternational.org",
    },
    "sexual_assault": {
        "US": "RAINN 1-800-656-4673",
        "UK": "Rape Crisis 0808 500 2222",
        "CA": "https://endingviolencecanada.org",
        "AU": "1800RESPECT 1800 737 732",
        "INTL": "https://findahelpline.com",
    },
    "harm_to_others": {
        "US": "988",
        "UK": "Samaritans 116 123",
        "CA": "9-8-8",
        "AU": "Lifeline 13 11 14",
        "INTL": "https://findahelpline.com",
    },
}
_LOCAL_EMERGENCY = {"zh": "当地紧急电话", "es": "número de emergencias local", "fr": "numéro d'urgence local"}
_LEAD_INS: dict[str, dict[str, str]] = {
    "zh": {
        "suicide_self_harm": "如果你有自杀或伤害自己的念头，请现在就求助；如有紧急危险，请拨打{emergency}。",
        "overdose_injury": "如果你或身边的人服用了过量药物、吞下了有害物质或伤得很重，请立即拨打{emergency}，不要等到出现症状。",
        "danger_from_others": "如果有人正在伤害或威胁你，你现在有危险的话，请立即拨打{emergency}。",
        "child_at_risk": "如果有孩子正在受到伤害或处于危险中，请立即拨打{emergency}。如果你是孩子：这不是你的错，告诉你信任的大人是对的。",
        "sexual_assault": "如果你遭受了性侵犯，这不是你的错。如果你有危险或受了伤，请拨打{emergency}。",
        "harm_to_others": "如果你觉得自己可能会伤害别人，请现在就求助：先离开对方；如果有人处于紧急危险，请拨打{emergency}。",
    },
    "es": {
        "suicide_self_harm": "Si estás pensando en el suicidio o en hacerte daño, pide ayuda ahora; si estás en peligro inmediato, llama al {emergency}.",
        "overdose_injury": "Si tú o alguien contigo ha tomado demasiado de algo, ha tragado algo dañino o está gravemente herido, llama ahora al {emergency}; no esperes a tener síntomas.",
        "danger_from_others": "Si alguien te está haciendo daño o te amenaza, llama al {emergency} si estás en peligro ahora.",
        "child_at_risk": "Si un niño o una niña está sufriendo daño o está en peligro, llama ahora al {emergency}. Si eres menor: no es tu culpa, y contárselo a un adulto de confianza es lo correcto.",
        "sexual_assault": "Si has sufrido una agresión sexual, no es tu culpa. Si estás en peligro o herida/o, llama al {emergency}.",
        "harm_to_others": "Si sientes que podrías hacerle daño a alguien, pide ayuda ahora: aléjate de esa persona; si alguien está en peligro inmediato, llama al {emergency}.",
    },
    "fr": {
        "suicide_self_harm": "Si vous pensez au suicide ou à vous faire du mal, demandez de l'aide maintenant ; en cas de danger immédiat, appelez le {emergency}.",
        "overdose_injury": "Si vous ou quelqu'un près de vous avez pris trop d'un produit, avalé quelque chose de dangereux ou êtes gravement blessé, appelez le {emergency} maintenant, sans attendre les symptômes.",
        "danger_from_others": "Si quelqu'un vous fait du mal ou vous menace, appelez le {emergency} si vous êtes en danger maintenant.",
        "child_at_risk": "Si un enfant subit des violences ou est en danger, appelez le {emergency} maintenant. Si tu es un enfant : ce n'est pas ta faute, et en parler à un adulte de confiance est la bonne chose à faire.",
        "sexual_assault": "Si vous avez subi une agression sexuelle, ce n'est pas votre faute. Si vous êtes en danger ou blessé(e), appelez le {emergency}.",
        "harm_to_others": "Si vous sentez que vous pourriez faire du mal à quelqu'un, demandez de l'aide maintenant : éloignez-vous de la personne ; si quelqu'un est en danger immédiat, appelez le {emergency}.",
    },
}
_ALSO = {
    "zh": "也可以联系：{contacts}。",
    "es": "También puedes contactar: {contacts}.",
    "fr": "Vous pouvez aussi contacter : {contacts}.",
}

_SUPPORT = {
    "en": {
        "suicide_self_harm": (
            "I'm really sorry you're feeling this way, and I'm glad you told me. You don't have to carry "
            "this alone: the people on these lines are trained to listen and can talk with you right now. "
            "If you can, reach out to someone you trust and let them know how you are feeling, and stay "
            "somewhere safe while you do."
        ),
        "overdose_injury": (
            "Please make that call now, before anything else; if you can, tell someone near you what "
            "happened and keep the packaging or the bottle to show the responders."
        ),
        "danger_from_others": (
            "What is happening to you is not your fault, and you deserve to be safe. The people on these "
            "lines can help you think through your options and a plan to stay safe, at your own pace."
        ),
        "child_at_risk": (
            "Thank you for telling me. Nobody is allowed to hurt a child, and the people on these lines "
            "know how to help and will listen."
        ),
        "sexual_assault": (
            "I'm so sorry this happened to you, and thank you for telling me. You can talk to these lines "
            "whenever you are ready, whether it happened today or years ago; they can also tell you about "
            "medical care and your options, and the choices are yours."
        ),
        "harm_to_others": (
            "It took courage to say this, and reaching out is the right step. The people on these lines "
            "are trained to help with urges like these, without judging you."
        ),
    },
    "zh": {
        "_": "谢谢你告诉我。你不必独自面对：这些热线的工作人员受过专业训练，现在就可以和你谈。我是一个人工智能助手，不是心理咨询师或医生，但如果有帮助，我可以继续陪你聊。",
    },
    "es": {
        "_": "Gracias por contármelo. No tienes que pasar por esto a solas: las personas de estas líneas están formadas para escucharte y pueden hablar contigo ahora mismo. Soy un asistente de IA, no un terapeuta, pero puedo seguir hablando contigo si te ayuda.",
    },
    "fr": {
        "_": "Merci de m'en avoir parlé. Vous n'avez pas à traverser cela seul(e) : les personnes de ces lignes sont formées pour vous écouter et peuvent vous parler dès maintenant. Je suis un assistant IA, pas un thérapeute, mais je peux continuer à discuter avec vous si cela vous aide.",
    },
}


def _check_category(category: str) -> None:
    if category not in RISK_RESOURCES:
        raise ValueError(f"risk category: expected one of {', '.join(CATEGORIES)}; got {category!r}")


def resources(category: str, locale: str) -> str:
    """The English resource line for `category` in `locale` ('US', 'UK', 'CA', 'AU'; anything else: 'INTL').

    Raises:
        ValueError: unknown category.
    """
    _check_category(category)
    table = RISK_RESOURCES[category]
    return table.get(locale, table["INTL"])


def lead_in(category: str, locale: str, language: str) -> str | None:
    """The resource lead-in in `language` ('zh', 'es', 'fr'), with the locale's numbers; None for 'en'."""
    _check_category(category)
    if language not in _LEAD_INS:
        return None
    emergency = _EMERGENCY.get(locale, _LOCAL_EMERGENCY[language])
    text = _LEAD_INS[language][category].format(emergency=emergency)
    contacts = _CONTACTS[category].get(locale if locale in _EMERGENCY else "INTL")
    if contacts:
        text += ("" if language == "zh" else " ") + _ALSO[language].format(contacts=contacts)
    return text


def support_text(category: str, language: str) -> str:
    """A short, warm paragraph after the resources: no advice in their place, no means information."""
    _check_category(category)
    table = _SUPPORT.get(language, _SUPPORT["en"])
    return table.get(category, table.get("_", ""))


# ---------------------------------------------------------------------------------------------------
# Language
# ---------------------------------------------------------------------------------------------------

_CJK = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_WORD = re.compile(r"[a-zà-ÿœñ]+'?", re.IGNORECASE)
_STOPWORDS = {
    "en": frozenset(
        "i i'm im my the and to is it you of that have with what just don't dont can't cant want am was he "
        "she they this so at for be been do not like feel know get got would".split()
    ),
    "es": frozenset(
        "el los las y que qué con por para estoy tengo mi mis se lo muy otra vez del al cuando una es está "
        "no yo ya nadie hace hoy anoche pero porque todo nada como cómo quiero le me he ha voy puedo hizo "
        "dijo siempre nunca mucho también dónde cuánto".split()
    ),
    "fr": frozenset(
        "je j' tu il elle ma mon mes les des du et ne pas est suis ce ça pour avec sans qu' c' m' l' d' n' "
        "une au aux moi me plus qui que veux vais peux ai fait dit rien tout très mais où quand comment "
        "combien pourquoi fois trop encore toujours".split()
    ),
}
_ES_CHARS = re.compile(r"[ñ¿¡áíóú]", re.IGNORECASE)
_FR_CHARS = re.compile(r"[àâçèêëîïôûùœ]", re.IGNORECASE)


def detect_language(text: str) -> str:
    """'zh', 'es', 'fr' or 'en' (the default) from characters and common words: enough to choose a lead-in."""
    if len(_CJK.findall(text)) >= 2:
        return "zh"
    words = []
    for w in _WORD.findall(text.replace("\u2019", "'").lower()):
        if "'" in w[:-1]:  # j'ai -> j', ai ; m'a -> m', a
            head, _, tail = w.partition("'")
            words += [head + "'", tail]
        else:
            words.append(w)
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    scores["es"] += 2 * len(_ES_CHARS.findall(text))
    scores["fr"] += 2 * len(_FR_CHARS.findall(text))
    best = max(("en", "es", "fr"), key=lambda k: scores[k])
    return best if scores[best] > scores["en"] else "en"


# ---------------------------------------------------------------------------------------------------
# Idioms: blanked before detection
# ---------------------------------------------------------------------------------------------------

_I = re.IGNORECASE


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), _I)


_FOOD = r"pizza|burger|coffee|beer|drink|curry|sandwich|steak|kebab|taco|snack|cake|chocolate"
_IDIOMS: tuple[re.Pattern[str], ...] = (
    # en: "X is killing me" (not a person), "kill it", "kill time", processes and programs, food, games
    _rx(
        r"\b(?<!he\s)(?<!she\s)(?<!they\s)(?:\w+\s+)(?:is|are|was|'s|'re)\s+(?:literally\s+|actually\s+|really\s+)?killing\s+(?:me|us)\b",
        r"\b(?:you're|you\s+are|u\s+r|this|that|it|these|those)\s+(?:\w+\s+)?kill(?:s|ed|ing)?\s+me\b(?![^.!?\n]{0,40}\b(?:tonight|knife|gun|leave|threat))",
        r"\bkill(?:ed|ing|s)?\s+it\b",
        r"\bkill(?:ing)?\s+(?:some\s+|the\s+)?time\b",
        r"\bkill(?:ed|ing|s)?\s+(?:-\d+|all|the|a|an|this|that|my|its)?\s*(?:\w+\s+){0,2}?(?:process(?:es)?|pid|thread|task|job|server|container|app|program|session|tab|switch|command|lights?|engine|bugs?|weeds?|germs?|bacteria|mood|vibe)\b",
        r"\bkill\s+-\d+\b|\bkill(?:all)?\s+(?:command|signal)\b|\bkill\s*-?9\b",
        rf"\b(?:could|would|'d)\s+(?:murder|kill)\s+(?:a|an|for\s+a|for\s+an|for\s+some|some)\s+(?:\w+\s+)?(?:{_FOOD}|nap|holiday|vacation)\b",
        r"\bkill\s+for\s+(?:a|an|some)\b",
        r"\b(?:i'?m|im|i\s+am)\s+(?:literally\s+)?dying\s*(?:lol|lmao|haha|😂|🤣|,|\.|!|$)",
        r"\bdying\s+(?:to|of\s+laughter|laughing|for\s+a)\b|\bdie\s+(?:laughing|of\s+laughter)\b|\bto\s+die\s+for\b",
        r"\b(?:dead|deadly)\s+(?:tired|serious|bored|boring|on\s+time|center|centre|end|line|lock|heat)\b|\bdrop[-\s]dead\b",
        r"\b(?:bored|scared|worried|frightened|tickled)\s+to\s+death\b",
        r"\bso\s+\w+(?:\s+\w+)?\s+(?:that\s+)?i\s+(?:could|wanted\s+to|would|was\s+going\s+to|almost)\s+die\b",
        r"\b(?:battery|phone|laptop|car|plants?|flowers?|engine|wifi|internet|signal|party|conversation)\s+(?:is\s+|was\s+)?(?:dead|died|dying)\b",
        r"\b(?:my|the)\s+(?:phone|battery|laptop|car|plants?|computer)\s+(?:\w+\s+)?died\b",
        r"\b(?:boss|manager|teacher|coach|mom|mum|dad|parents|mother|father)\s+(?:is\s+)?(?:going\s+to|gonna|will|'ll|would)\s+kill\s+me\s+(?:if|when)\b",
        r"\b(?:killed|kill|die|died|dying|murder\w*|shoot\w*)\b[^.!?\n]{0,40}\b(?:in\s+the\s+game|video\s*game|final\s+boss|boss\s+fight|level\s+\d+|respawn)\b",
        r"\b(?:in\s+the\s+game|video\s*game|final\s+boss)\b[^.!?\n]{0,40}\b(?:killed|kill|die|died|dying)\b",
        r"\boverdos\w*\s+on\s+(?:coffee|caffeine|sugar|chocolate|netflix|tv|memes|anime)\b",
        r"\b(?:crush|destroy|slay|murder)(?:ed|ing)?\s+(?:it|them|the\s+(?:exam|test|interview|game|competition))\b",
        r"\bshoot(?:ing)?\s+(?:a|the|some)\s+(?:video|film|scene|photos?|pictures?|hoops|email|message|shot)\b",
    ),
    # zh: X死了 / X死我了 (exhausted, laughing, hungry, ...), processes, games, 杀杀威风
    _rx(
        r"(?:累|笑|饿|热|冷|困|气|烦|急|忙|难|吓|紧张|好听|好吃|好看|美|帅|高兴|开心|无聊|郁闷|尴尬|丑|羡慕|馋|渴|挤|吵|痛|疼|晒|懒|丢人|折磨)(?:得?要?死(?:了|我了|人了|啦|掉了)?|得要命)",
        r"死(?:了)?(?:算了)?(?=都不)",
        r"(?:杀(?:掉|死)?|结束|终止|关掉)(?:一个|这个|那个)?(?:进程|线程|程序|容器|任务)",
        r"kill(?:命令|进程)",
        r"杀杀[^，。！？]{0,4}威风",
        r"(?:游戏|boss|BOSS|关卡)[^。！？]{0,12}(?:死|杀)[^，。！？]{0,4}|被boss[^，。！？]{0,6}",
        r"(?:老板|老师|教练|领导|上司)[^，。！？]{0,10}(?:会|肯定会|一定会|要)(?:杀了|骂死|打死|弄死)我",
        r"骂死我",
        r"手机没电",
        r"想死(?:你|我)了",
    ),
    # es: me muero de risa/hambre/..., X me está matando, matar el tiempo, procesos, juegos
    _rx(
        r"\bme\s+muero\s+(?:de|del|por)\b(?:\s+\w+){0,3}",
        r"\bmuert[oa]s?\s+de\s+(?:risa|hambre|sueño|cansancio|fr[ií]o|calor|miedo|vergüenza|aburrimiento|sed|trabajo|envidia|ganas)\b",
        r"\bestoy\s+que\s+me\s+muero\b(?:\s+de\s+\w+)?",
        r"\b(?:calor|fr[ií]o|espera|tarea|trabajo|dolor|curiosidad|pies|cabeza|tr[aá]fico|examen|jefe)\s+(?:me\s+)?(?:est[aá]n?\s+)?mat(?:a|an|ando)(?:\s+me)?\b|\bme\s+mata\s+la\s+\w+",
        r"\b(?:jefe|jefa|profe\w*|entrenador\w*|maestr[oa])\s+me\s+va\s+a\s+matar\s+si\b",
        r"\bmat(?:ar|o|a|ando)\s+el\s+tiempo\b",
        r"\bmat(?:ar|o|a|e|ando)\s+(?:un|el|los|este|ese)\s+(?:proceso|hilo|programa|contenedor|servidor)\w*",
        r"\bcomando\s+kill\b",
        r"\bme\s+mataste\s+con\b",
        r"\b(?:juego|videojuego|jefe\s+final)\b[^.!?\n]{0,40}\b(?:mata\w*|muer\w*|mor\w*)\b|\b(?:mata\w*|muer\w*|mor\w*)\b[^.!?\n]{0,40}\b(?:juego|videojuego|jefe\s+final)\b",
        r"\btan\s+\w+(?:\s+\w+)?\s+que\s+(?:quer[ií]a|quise)\s+morir(?:me)?\b",
        r"\b(?:m[oó]vil|bater[ií]a|tel[eé]fono|celular)\b[^.!?\n]{0,20}\bmuri[oó]\b|\bse\s+me\s+muri[oó]\s+el\s+(?:m[oó]vil|tel[eé]fono|celular)\b",
    ),
    # fr: mort de rire, je meurs de faim, ça me tue, tuer le temps, processus, jeux
    _rx(
        r"\bmort(?:e|s|es)?\s+de\s+(?:rire|fatigue|faim|honte|peur|froid|chaud|ennui|soif)\b",
        r"\bje\s+meurs\s+(?:de|d')\s*\w+",
        r"\b(?:je\s+)?crève\s+de\s+\w+|\bje\s+suis\s+crev[ée]e?\b",
        r"\b(?:ça|ca|cela|ce\s+\w+|tu|mes\s+\w+|l'\w+|cette\s+\w+|ces\s+\w+)\s+me\s+tu(?:e|ent)\b",
        r"\b(?:patron|patronne|chef|prof|professeur|entraîneur|mère|père)\s+va\s+me\s+tuer\s+si\b",
        r"\b(?:ce|cette|ces)\s+\w+\s+va(?:nt)?\s+me\s+tuer\b",
        r"\btuer\s+le\s+temps\b|\bje\s+tuerais\s+pour\b",
        r"\btuer\s+(?:un|le|les|ce)\s+(?:processus|thread|programme|conteneur|serveur)\b",
        r"\bcommande\s+kill\b",
        r"\bà\s+mourir\b",
        r"\b(?:dans\s+le\s+jeu|jeu\s+vidéo|boss\s+final)\b[^.!?\n]{0,40}\b(?:tu\w*|mort\w*|meur\w*)\b",
        r"\btellement\s+\w+(?:\s+\w+)?\s+que\s+j'avais\s+envie\s+de\s+mourir\b",
        r"\b(?:téléphone|portable|batterie)\s+est\s+mort\b",
    ),
)


def mask_idioms(text: str) -> str:
    """`text` with figures of speech blanked (each replaced by one space), in every supported language."""
    text = text.replace("\u2019", "'")
    for pattern in _IDIOMS:
        text = pattern.sub(" ", text)
    return text


# ---------------------------------------------------------------------------------------------------
# Patterns per category and language
# ---------------------------------------------------------------------------------------------------

_PILLS = (
    r"pills?|tablets?|meds|medications?|medicines?|tylenol|paracetamol|acetaminophen|advil|ibuprofen"
    r"|aspirin|xanax|benzos?|sleeping\s+pills|antidepressants?|painkillers?|opioids?|oxy\w*|insulin"
)
_POISONS = (
    r"bleach|antifreeze|poison|pesticide|weed\s*killer|rat\s+poison|detergent|(?:dishwasher|laundry|tide)\s+pods?"
    r"|drain\s+cleaner|batter(?:y|ies)|button\s+batter(?:y|ies)|lighter\s+fluid|cleaning\s+products?|chemicals"
)
_QTY = (
    r"a\s+(?:whole|full|entire)\s+(?:bottle|box|pack|packet|strip)\s+of|(?:all|most)\s+(?:of\s+)?(?:my|the|his|her|their)"
    r"|too\s+(?:many|much)|way\s+too\s+(?:many|much)|a\s+(?:bunch|load|handful|lot|ton|fistful)\s+of|loads\s+of|lots\s+of"
    r"|(?:like\s+|about\s+|around\s+)?\d{2,}|(?:twenty|thirty|forty|fifty|dozens\s+of)"
)
_PARTNER = (
    r"boyfriend|bf|girlfriend|gf|husband|hubby|wife|partner|ex|ex-?boyfriend|ex-?girlfriend|ex-?husband|ex-?wife"
    r"|fianc[eé]e?|spouse|date|roommate|flatmate"
)
_CAREGIVER = (
    r"dad|father|daddy|mom|mum|mother|mommy|mummy|step-?dad|step-?father|step-?mom|step-?mum|step-?mother|parents?"
    r"|uncle|aunt|grandpa|grandfather|grandma|grandmother|teacher|coach|babysitter|priest|pastor|cousin"
    r"|(?:mom|mum|mother)'?s\s+(?:boyfriend|partner|husband)|(?:dad|father)'?s\s+(?:girlfriend|partner|wife)"
)
_HIT = (
    r"hits?|hitting|beats?|beating|beat\s+me\s+up|punch(?:es|ed|ing)?|slap(?:s|ped|ping)?|kick(?:s|ed|ing)?"
    r"|chok(?:es|ed|ing)|strangl(?:es|ed|ing)|shov(?:es|ed|ing)|push(?:es|ed|ing)|threw|throws|burn(?:s|ed)"
    r"|hurts?|hurting|abus(?:es|ed|ing)|smack(?:s|ed)?|whips?|whipped"
)
_CHILD_AGE_EN = (
    r"\b(?:i'?m|im|i\s+am)\s+(?:only\s+|just\s+)?(?:[5-9]|1[0-7])\b(?!\s*(?:%|percent|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|km|miles?|kg|lbs?|pounds?|dollars?|euros?|:|\.\d|am\b|pm\b|times?))"
    r"|\b(?:[5-9]|1[0-7])\s*(?:years?\s+old|yo|y/o|yrs?\s+old)\b|\b(?:year|grade)\s+(?:[1-9]|1[0-2])\b"
    r"|\b(?:a\s+|just\s+a\s+)?(?:kid|child|minor|teenager|teen)\b(?=[^.!?\n]{0,30}\b(?:and|but)\b)"
)
_CHILD_AGE_ZH = r"我(?:今年|才|只有|现在)?(?:[5-9]|1[0-7]|[五六七八九]|十[一二三四五六七]?)岁|我(?:还)?(?:是|在)(?:小学|初中|初一|初二|初三|高一|高二|小孩|未成年)"
_CHILD_AGE_ES = r"\btengo\s+(?:[5-9]|1[0-7]|cinco|seis|siete|ocho|nueve|diez|once|doce|trece|catorce|quince|dieciséis|diecisiete)\b(?:\s+años)?|\bsoy\s+(?:menor|una?\s+niñ[oa])\b"
_CHILD_AGE_FR = r"\bj'ai\s+(?:[5-9]|1[0-7]|cinq|six|sept|huit|neuf|dix|onze|douze|treize|quatorze|quinze|seize|dix-sept)\s+ans\b|\bje\s+suis\s+(?:mineur|mineure|un\s+enfant|en\s+(?:6e|5e|4e|3e|sixième|cinquième|quatrième|troisième))\b"

_PATTERNS: tuple[tuple[str, str, str, re.Pattern[str]], ...] = (
    # ---- overdose or injury that already happened -------------------------------------------------
    (
        "overdose_injury",
        "en",
        "took_too_much",
        _rx(
            rf"\b(?:took|taken|take|swallowed|ate|eaten|downed|had|popped|drank|drunk)\s+(?:{_QTY})\s+(?:\w+\s+){{0,3}}?(?:{_PILLS})\b",
            r"\b(?:overdosed|overdosing|od'?d|o\.d\.'?d|od'ing)\b|\b(?:took|taken|had|taking)\s+an?\s+(?:overdose|od)\b",
            r"\bi'?ve\s+overdosed\b|\bi\s+overdosed\b",
            rf"\b(?:drank|drunk|swallowed|ate|eaten|drink|took|had|got\s+into|chewed)\s+(?:some\s+|a\s+lot\s+of\s+|a\s+bit\s+of\s+|the\s+|a\s+|an\s+)?(?:of\s+)?(?:the\s+|my\s+|our\s+)?(?:{_POISONS})\b",
            rf"\b(?:kid|child|toddler|baby|son|daughter|brother|sister|nephew|niece|friend|roommate|mom|dad)\s+(?:just\s+)?(?:swallowed|ate|drank|took|got\s+into)\s+(?:some|a\s+few|a\s+bunch|a\s+lot|too\s+many|\w+)?\s*(?:of\s+)?(?:my|the|his|her|our|their|some)?\s*(?:\w+\s+){{0,3}}?(?:{_PILLS}|{_POISONS})\b",
            rf"\bmixed\s+(?:my\s+)?(?:{_PILLS}|pills|meds|drugs)\s+(?:and|with)\s+(?:alcohol|booze|drinking|vodka|wine|beer)\b",
            r"\b(?:bleeding|blood)\b[^.!?\n]{0,30}\b(?:won'?t|wont|doesn'?t|does\s+not|will\s+not|isn'?t|can'?t)\s+(?:stop|stopping)\b|\bcan'?t\s+stop\s+the\s+bleeding\b|\bblood\s+everywhere\b",
            r"\bcut\s+(?:myself\s+)?(?:too|really|so|very)\s+deep\b|\bcut\s+too\s+deep\b",
            rf"\b(?:{_PILLS}|pills|overdose)\b[^.!?\n]{{0,60}}\b(?:won'?t\s+wake\s+up|not\s+waking\s+up|barely\s+breathing|not\s+breathing|passed\s+out|unconscious|unresponsive)\b",
            rf"\b(?:won'?t\s+wake\s+up|barely\s+breathing|not\s+breathing|passed\s+out|unconscious|unresponsive)\b[^.!?\n]{{0,60}}\b(?:{_PILLS}|pills)\b",
            r"\bjumped\s+(?:off|from)\b[^.!?\n]{0,60}\b(?:broken|bleeding|can'?t\s+move|hurt)\b",
        ),
    ),
    (
        "overdose_injury",
        "zh",
        "took_too_much",
        _rx(
            r"(?:吃|吞|服|喝)(?:了|下了?)(?:一整瓶|一大把|一把|很多|好多|大量|所有的?|全部的?|一瓶|太多|几十)[^，。！？]{0,6}(?:药|片|胶囊)",
            r"药[^，。！？]{0,4}(?:都|全)(?:吃|吞)(?:了|掉了|光了)",
            r"(?:药物?|安眠药|吃药|服药)过量|过量服",
            r"(?:喝|吃|吞)了[^，。！？]{0,4}(?:农药|消毒液|84|漂白|洗洁精|百草枯|敌敌畏|老鼠药|杀虫剂|洗衣液|电池)",
            r"误(?:吃|服|食|喝|吞)",
            r"血(?:止不住|一直在?流|流个不停|流不停)|止不住血|流了(?:很多|好多)血|割得太深",
            r"(?:一直|不停)(?:在)?流血|流血[^。！？]{0,4}止不住",
        ),
    ),
    (
        "overdose_injury",
        "es",
        "took_too_much",
        _rx(
            r"\b(?:me\s+tom[eé]|me\s+he\s+tomado|tom[eé]|se\s+tom[oó]|se\s+ha\s+tomado|tragu[eé]|me\s+tragu[eé]|se\s+trag[oó]|ingir?i[oó]?|ingerí|me\s+beb[ií]|se\s+bebi[oó]|bebi[oó]|tom[oó])\s+(?:todas\s+las|todo\s+el|un\s+(?:frasco|bote|blíster|blister)\s+entero\s+de|un\s+(?:frasco|bote)|un\s+mont[oó]n\s+de|demasiad[oa]s?|muchas|muchos|varias|unas)\s+(?:\w+\s+){0,3}?(?:pastillas|píldoras|pildoras|medicamentos|medicinas|comprimidos|pastis)\b",
            r"\bsobredosis\b|\bme\s+he\s+pasado\s+con\s+(?:las\s+)?(?:pastillas|medicinas|medicamentos)\b",
            r"\b(?:beb|trag|tom|ingir)\w*\s+(?:\w+\s+){0,2}?(?:lejía|lejia|veneno|cloro|lavavajillas|detergente|anticongelante|raticida|pesticida|insecticida)\b",
            r"\b(?:se\s+trag[oó]|se\s+comi[oó])\s+(?:unas|algunas|varias|\w+)?\s*(?:pastillas|píldoras|medicamentos|pilas)\b",
            r"\bno\s+(?:para|deja)\s+de\s+(?:sangrar|salir\s+sangre)\b|\bme\s+cort[eé]\s+(?:muy|demasiado)\s+(?:profundo|hondo)\b",
            r"\b(?:pastillas|sobredosis)\b[^.!?\n]{0,60}\b(?:no\s+despierta|apenas\s+respira|no\s+respira|inconsciente)\b",
        ),
    ),
    (
        "overdose_injury",
        "fr",
        "took_too_much",
        _rx(
            r"\b(?:j'ai|il\s+a|elle\s+a|a)\s+(?:pris|avalé|bu)\s+(?:toute\s+(?:ma|sa|la)\s+boîte\s+de|tous\s+(?:mes|ses|les)|toute\s+(?:ma|sa)\s+plaquette\s+de|plein\s+de|trop\s+de|une\s+boîte\s+(?:entière\s+)?de|beaucoup\s+de|des)\s+(?:\w+\s+){0,2}?(?:médicaments|cachets|comprimés|somnifères|pilules|paracétamol|doliprane|anxiolytiques)\b",
            r"\b(?:overdose|surdose|intoxication\s+médicamenteuse)\b",
            r"\b(?:bu|avalé|ingéré)\s+(?:\w+\s+){0,2}?(?:javel|poison|détergent|antigel|mort-aux-rats|pesticide|produit\s+ménager)\b",
            r"\b(?:a\s+avalé|a\s+mangé)\s+(?:des|plusieurs|quelques)\s+(?:cachets|médicaments|comprimés|piles)\b",
            r"\bsaigne\s+(?:beaucoup|énormément|sans\s+arrêt)\b|\bça\s+(?:ne\s+)?s'arrête\s+pas\s+de\s+saigner\b|\bcoupée?\s+trop\s+(?:profond|fort)\b",
            r"\b(?:cachets|médicaments|comprimés)\b[^.!?\n]{0,60}\bne\s+se\s+réveille\s+pas\b|\bne\s+respire\s+(?:plus|presque\s+plus)\b",
        ),
    ),
    # ---- suicide and self-harm ----------------------------------------------------------------
    (
        "suicide_self_harm",
        "en",
        "suicide",
        _rx(
            r"(?<!not\s)(?<!n't\s)\bsu[i1]?c[i1]?d(?:e|al|ial|le|ality|ally)\b(?!\s+(?:hotlines?|prevention|squad|awareness|rates?|statistics)\b)",
            r"\bsewer\s*slide\b|\bsewerslide\b|\bself[-\s]?delet(?:e|ing|ion)\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "kill_myself",
        _rx(
            r"\b(?:kill(?:ing)?|hang(?:ing)?|shoot(?:ing)?|off(?:ing)?|unaliv(?:e|ing))\s+my\s*self\b|\bkms\b|\bunalive\s+(?:me|myself)\b|\bunaliving\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "end_my_life",
        _rx(
            r"\b(?:end(?:ing)?|take|taking|took)\s+my\s+(?:own\s+)?life\b",
            # someone else at risk: the resources help the person worried about them too
            r"\b(?:end(?:ing)?|take|taking|took)\s+(?:her|his|their)\s+(?:own\s+)?life\b|\b(?:kill(?:ing)?|hang(?:ing)?|shoot(?:ing)?)\s+(?:herself|himself|themselves|themself)\b",
            r"\bend(?:ing)?\s+it\s+all\b|\bend\s+it\s+(?:tonight|today|now|soon)\b",
            r"\b(?:pills|meds|tablets|rope|gun|overdose|bridge)\b[^.!?\n]{0,30}\bto\s+end\s+(?:it|my\s+life|everything)\b(?!\s+(?:with|between))",
            r"\b(?:want|wanna|going|gonna|decided|ready|plan(?:ning)?|thoughts?\s+of|think(?:ing)?\s+(?:of|about)|about\s+to)\s+(?:to\s+)?(?:just\s+|finally\s+|really\s+)?end(?:ing)?\s+(?:it|things|everything|my\s+life)\b(?!\s+(?:with|between))",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "want_to_die",
        _rx(
            r"(?<!n't\s)(?<!not\s)(?<!never\s)\b(?:want|wanna|wanted|wish|ready|deserve)\s+(?:to\s+)?(?:just\s+)?die\b(?!\s+(?:of|from|laughing)\b)",
            r"\bwish(?:ed)?\s+i\s+(?:was|were)\s+dead\b|\bwish(?:ed)?\s+i\s+(?:had\s+)?never\s+(?:been\s+born|existed)\b",
            r"\b(?:fall\s+asleep|go\s+to\s+sleep|sleep)\s+and\s+(?:never|not)\s+wake\s+up\b",
            r"\bwish(?:ed)?\s+(?:you|i)\s+(?:was|were)\s+dead\b[^\n]{0,12}\byes\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "not_alive",
        _rx(
            r"\b(?:don'?t|do\s+not|no\s+longer|dont)\s+want\s+to\s+(?:be\s+alive|live|exist|be\s+here|wake\s+up)\b(?!\s+(?:in|with|there|here|at|near|on|without|under|through|like\s+this\s+(?:house|city)|alone)\b)",
            r"\bno\s+(?:reason|point)\s+(?:in\s+|to\s+)?(?:living|live|going\s+on|being\s+alive)\b",
            r"\b(?:life\s+is\s*n'?t|life\s+is\s+not|not)\s+worth\s+living\b",
            r"\bcan'?t\s+go\s+on\s+(?:living|anymore|like\s+this)\b",
            r"\b(?:what'?s|what\s+is)\s+the\s+point\s+(?:of|in)\s+(?:being\s+alive|living|life|going\s+on)\b",
            r"\btired\s+of\s+(?:being\s+alive|living|life)\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "better_off_dead",
        _rx(
            r"\bbetter\s+off\s+(?:dead|without\s+me|if\s+i\s+(?:was|were)\s+(?:dead|gone))\b",
            r"\b(?:be|are|been)\s+better\s+without\s+me\b",
            r"\b(?:i'?m|i\s+am)\s+(?:just\s+)?a\s+burden\b",
            r"\bwon'?t\s+(?:need|be\s+needing)\s+(?:it|them|these|my\s+\w+)\s+(?:anymore|where\s+i'?m\s+going|much\s+longer)\b",
            r"\b(?:goodbye|suicide)\s+(?:letters?|notes?)\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "self_harm",
        _rx(
            r"\bself[-\s]?harm(?:ing|ed)?\b|\bself[-\s]?injur(?:y|e|ing)\b|\bharm(?:ed|ing)?\s+my\s*self\b|\bsh\s+relapse\b",
            r"\b(?:hurting|cutting|burning|starving|punishing)\s+my\s*self\b",
            r"\b(?:want|wanna|wanted|going|urges?|tempted|tr(?:y|ied|ying)|think(?:ing)?\s+about|thought\s+about|plan(?:ning)?)\s+(?:to\s+)?(?:hurt|cut|burn|starve|punish)\s+my\s*self\b",
            r"\b(?:hurt|cut|burn(?:ed|t)?|starve|punish)\s+my\s*self\s+(?:again|on\s+purpose|deliberately|intentionally)\b",
            r"\bcut(?:ting)?\s+my\s+(?:wrists?|arms?|thighs?|legs?)\b|\b(?:started|start|been)\s+cutting\s+again\b|\bcutting\s+again\b",
            r"\bburn(?:ed|t)\s+my\s+(?:arm|arms|skin|wrist|leg|hand)\s+with\b",
            r"\bi(?:'m|\s+am)\s+a\s+cutter\b|\brelaps(?:e|ed|ing)\s+(?:on|into)\s+(?:self[-\s]?harm|cutting)\b",
        ),
    ),
    (
        "suicide_self_harm",
        "en",
        "lethal_means",
        _rx(
            r"\b(?:lethal|fatal|deadly)\s+(?:dose|amount|overdose|quantity)\b",
            r"\bhow\s+(?:many|much)\b[^.?!\n]{0,60}\b(?:to\s+die|kill\s+(?:me|myself|a\s+person|someone)|be\s+(?:lethal|fatal)|to\s+overdose|to\s+od)\b",
            r"\b(?:painless|easiest|quickest|best)\s+way\s+to\s+die\b",
            r"\bso\s+(?:that\s+)?i\s+(?:don'?t|do\s+not|won'?t|will\s+not|never)\s+wake\s+up\b|\bnever\s+wake\s+up\s+again\b",
            r"\b(?:bought|got|have|tied)\s+(?:a\s+)?(?:rope|noose)\b|\b(?:stockpil|sav|hoard)\w*\s+(?:up\s+)?(?:my\s+)?(?:pills|meds|tablets)\b",
            r"\bjump(?:ing)?\s+(?:off|from)\s+(?:a|the)\s+(?:bridge|roof|building|cliff)\b",
        ),
    ),
    (
        "suicide_self_harm",
        "zh",
        "suicide",
        _rx(
            r"自杀|轻生|寻死|自尽|自缢|结束(?:我的|自己的)?生命|结束这一切|不想活|活不下去|活着(?:没|没有)(?:任何)?意义|不如死了|死了算了|一死了之",
            r"(?<![不没别])想死(?!你|我了)|好想死|想去死|我想要死",
            r"割腕|自残|自伤|伤害自己|划(?:伤)?自己|割(?:伤)?自己|用刀划|烫自己|跳楼|跳下去|跳河|上吊|烧炭|遗书",
            r"(?:如果|要是)我(?:消失|不在|死)了[^。！？]{0,10}(?:更好|解脱|轻松)",
            r"(?:攒|存)(?:了)?[^，。！？]{0,4}(?:安眠药|药片)",
        ),
    ),
    (
        "suicide_self_harm",
        "es",
        "suicide",
        _rx(
            r"\bsuicid\w+|\b(?:quiero|voy\s+a|pienso\s+en|pensando\s+en|ganas\s+de|intent\w+|pensado\s+en|plan\s+para)\s+matarme\b|\bme\s+(?:quiero|voy\s+a)\s+matar\b|\bquitar(?:me|se)\s+la\s+vida\b|\bacabar\s+con\s+(?:mi\s+vida|todo)\b",
            r"\b(?:quiero|quisiera|ganas\s+de|deseo|prefiero)\s+morir(?:me)?\b|\bme\s+quiero\s+morir\b",
            r"\bno\s+quiero\s+(?:seguir\s+)?vivir\b|\bno\s+(?:le\s+)?(?:veo|tiene)\s+sentido\s+(?:a\s+)?(?:seguir\s+)?(?:viviendo|vivir)\b|\bno\s+aguanto\s+(?:m[aá]s\s+)?vivir\b",
            r"\bme\s+(?:cort[eé]|corto|estoy\s+cortando)\s+(?:otra\s+vez\s+|de\s+nuevo\s+)?(?:los|las|el|la|mis)?\s*(?:brazos?|muñecas?|piernas?)\b|\bcortarme\b|\bautolesi\w+",
            r"\bme\s+hago\s+daño\b|\bhacerme\s+daño\b|\bme\s+lastimo\b|\blastimarme\b",
            r"\bcarta\s+de\s+despedida\b|\bmejor\s+sin\s+m[ií]\b",
        ),
    ),
    (
        "suicide_self_harm",
        "fr",
        "suicide",
        _rx(
            r"\bsuicid\w+|\bme\s+suicider\b|\b(?:veux|vais|voudrais|envie\s+de|pense\s+à|besoin\s+de|essayé\s+de|aller)\s+me\s+tuer\b",
            r"\bmettre\s+fin\s+à\s+(?:mes\s+jours|ma\s+vie|ses\s+jours|sa\s+vie)\b|\ben\s+finir\b",
            r"\b(?:envie|besoin)\s+de\s+mourir\b|\bje\s+veux\s+mourir\b|\bj'ai\s+envie\s+de\s+mourir\b",
            r"\b(?:plus|pas)\s+envie\s+de\s+vivre\b|\bne\s+(?:veux|veut)\s+plus\s+vivre\b",
            r"\bme\s+scarifi\w+|\bscarification\b|\bme\s+(?:fais|faire)\s+du\s+mal\b|\bme\s+mutil\w+|\bme\s+couper\s+(?:les\s+)?(?:veines|poignets)\b",
            r"\blettres?\s+d'adieu\b|\bmieux\s+sans\s+moi\b",
        ),
    ),
    # ---- a child at risk -------------------------------------------------------------------------
    (
        "child_at_risk",
        "en",
        "child_abuse",
        _rx(
            rf"(?:{_CHILD_AGE_EN})[^\n]{{0,120}}\b(?:{_HIT}|touch(?:es|ed|ing)?|nudes?|naked|pics|photos|meet\s+up|lock(?:s|ed)?|starv\w*|abuse\w*|belt|rap(?:e|ed|ing)|r\*ped|molest\w*|sexually|groom\w*)\b",
            rf"\b(?:{_HIT}|touch(?:es|ed|ing)?|lock(?:s|ed)?)\s+(?:me|us)\b[^\n]{{0,80}}(?:{_CHILD_AGE_EN})",
            rf"\bmy\s+(?:{_CAREGIVER})\s+(?:\w+\s+){{0,3}}?(?:{_HIT}|touch(?:es|ed|ing)?|molest(?:s|ed)?|lock(?:s|ed)?)\s+me\b",
            rf"\bmy\s+(?:{_CAREGIVER})\s+(?:\w+\s+){{0,3}}?(?:makes|made|forces|forced|tells|told)\s+me\s+(?:to\s+)?keep\s+(?:it\s+)?(?:a\s+)?secrets?\b",
            rf"\bmy\s+(?:{_CAREGIVER})\b[^.!?\n]{{0,40}}\b(?:without\s+food|don'?t\s+feed|doesn'?t\s+feed|won'?t\s+feed|starv\w+)\b",
            rf"\b(?:get|gets|getting)\s+(?:beaten|hit|hurt|abused)\s+by\s+(?:our|my|his|her)\s+(?:{_CAREGIVER})\b",
            r"\b(?:kid|kids|child|children|son|daughter|niece|nephew|little\s+(?:brother|sister)|boy|girl|toddler|baby)\b[^.!?\n]{0,60}\b(?:being\s+abused|is\s+abused|abused\s+by|bruises|beaten|neglected|left\s+alone\s+for\s+days|starving|screaming\s+every)\b",
            r"\b(?:abus\w+|beat\w*|hurt\w*|neglect\w*)\s+(?:his|her|their|the)\s+(?:kids?|child(?:ren)?|son|daughter|baby|toddler)\b",
            r"\b(?:adult|grown\s+man|older\s+(?:guy|man|woman)|man|guy|someone)\s+(?:\w+\s+){0,2}?online\b[^.!?\n]{0,60}\b(?:nudes?|pics|photos|naked|meet\s+up|meet\s+me|send)\b",
        ),
    ),
    (
        "child_at_risk",
        "zh",
        "child_abuse",
        _rx(
            rf"(?:{_CHILD_AGE_ZH})[^。！？]{{0,40}}(?:打我|摸我|虐待|裸照|照片|见面|关在|不给我(?:饭|吃)|皮带|伤|强奸|性侵|猥亵|侵犯)",
            r"(?:爸爸|我爸|父亲|妈妈|我妈|母亲|继父|继母|后爸|后妈|叔叔|舅舅|伯伯|姑父|老师|教练|爷爷|外公|哥哥)[^。！？]{0,12}(?:打我|摸我|虐待我|性侵我|关在|不给我(?:饭|吃)|让我不要告诉|不准我告诉)",
            r"(?:小孩|孩子|儿童|女儿|儿子|弟弟|妹妹)[^。！？]{0,12}(?:身上[^。！？]{0,4}伤|被打|被虐待|哭喊|挨打)",
            r"虐待(?:他|她|他们)?的?(?:孩子|女儿|儿子|小孩)",
            r"(?:网友|网上[^，。！？]{0,6}(?:大人|男人|叔叔|人))[^。！？]{0,16}(?:裸照|照片|单独|见面)",
        ),
    ),
    (
        "child_at_risk",
        "es",
        "child_abuse",
        _rx(
            rf"(?:{_CHILD_AGE_ES})[^\n]{{0,100}}\b(?:me\s+pega\w*|me\s+golpea\w*|me\s+toca\w*|me\s+maltrata\w*|fotos|desnud\w+|me\s+encierra\w*|verme|quedar|viol\w+|abus\w+)\b",
            r"\b(?:padre|pap[aá]|madre|mam[aá]|padrastro|madrastra|t[ií]o|t[ií]a|abuelo|profesor|maestro|entrenador|primo|novio\s+de\s+mi\s+(?:mam[aá]|madre)|mis\s+pap[aá]s|mis\s+padres)\b[^.!?\n]{0,30}\b(?:me\s+(?:pega|golpea|toca|tocó|maltrata|encierra|encierran|pegan|golpean|maltratan)|no\s+me\s+da(?:n)?\s+de\s+comer|me\s+deja(?:n)?\s+sin\s+comer)\b",
            r"\bmaltrata(?:n)?\s+a\s+su(?:s)?\s+(?:hij[oa]s?|niñ[oa]s?|beb[eé]|pequeñ[oa])\b",
            r"\b(?:niñ[oa]|hij[oa]|pequeñ[oa])\b[^.!?\n]{0,40}\b(?:moretones|moratones|golpes|maltrat\w+)\b|\b(?:moretones|moratones)\b[^.!?\n]{0,40}\b(?:niñ[oa]|hij[oa])\b",
            r"\b(?:adulto|señor|hombre|alguien)\s+(?:por|en)\s+internet\b[^.!?\n]{0,60}\b(?:fotos|desnud\w+|verme|quedar)\b",
        ),
    ),
    (
        "child_at_risk",
        "fr",
        "child_abuse",
        _rx(
            rf"(?:{_CHILD_AGE_FR})[^\n]{{0,100}}\b(?:me\s+frappe\w*|me\s+bat\w*|me\s+touche\w*|photos|nue?|m'enferme\w*|maltrait\w*|viol\w*|abus\w*|attouchements?)\b",
            rf"\b(?:me\s+frappe\w*|me\s+bat\w*|me\s+touche\w*)\b[^\n]{{0,60}}(?:{_CHILD_AGE_FR})",
            r"\b(?:mon\s+père|ma\s+mère|mon\s+beau-père|ma\s+belle-mère|mon\s+oncle|ma\s+tante|mon\s+grand-père|mon\s+prof|mon\s+entraîneur|le\s+copain\s+de\s+ma\s+mère|mes\s+parents|mon\s+cousin)\b[^.!?\n]{0,30}\b(?:me\s+frappe\w*|me\s+bat\w*|me\s+touche\w*|m'enferme\w*|ne\s+me\s+donnent?\s+pas\s+à\s+manger|me\s+dit\s+de\s+ne\s+rien\s+dire)\b",
            r"\bmaltrait\w*\s+(?:son|sa|ses|leur|leurs)\s+(?:petit\s+garçon|petite\s+fille|enfants?|fils|fille|bébé)\b",
            r"\badulte\s+sur\s+internet\b[^.!?\n]{0,60}\b(?:photos|nue?|rencontrer)\b",
        ),
    ),
    # ---- sexual assault -----------------------------------------------------------------------------
    (
        "sexual_assault",
        "en",
        "sexual_assault",
        _rx(
            r"\b(?:raped|r\*ped|r\*\*ed|rapped\s+me|grap(?:ed)\s+me)\b|\brape(?:d)?\s+me\b|\b(?:i\s+was|i\s+got|i'?ve\s+been|been)\s+(?:raped|molested|assaulted|sa'?d)\b",
            r"\bsexually\s+(?:assaulted|abused|attacked|harassed)\b|\bsexual\s+(?:assault|abuse)\b(?=[^.!?\n]{0,40}\b(?:me|i|my)\b)",
            r"\b(?:got|was|been|being)\s+sa'?d\b|\bsa'?d\s+me\b|\bwas\s+s\.a\.'?d\b",
            r"\bforced\s+(?:himself|herself|themselves)\s+on\s+me\b|\b(?:forced|made|pressured)\s+me\s+(?:to\s+|into\s+)?(?:have\s+)?(?:sex|do\s+sexual)\b",
            r"\b(?:didn'?t|did\s+not|wouldn'?t)\s+stop\s+when\s+i\s+said\s+no\b|\bi\s+said\s+no\b[^.!?\n]{0,20}\b(?:but|and)\s+(?:he|she|they)\s+(?:kept\s+going|didn'?t\s+stop|continued|did\s+it\s+anyway)\b|\beven\s+though\s+i\s+(?:kept\s+)?sa(?:id|ying)\s+no\b",
            r"\bdrugged\b[^.!?\n]{0,80}\b(?:woke\s+up|undressed|naked|assault\w*|his\s+bed|raped|touched)\b|\b(?:drugged|spiked)\s+my\s+drink\b",
            r"\bgrop(?:ed|ing)\s+me\b|\bmolest(?:ed|ing)\s+me\b|\b(?:grabbed|touched)\s+me\b[^.!?\n]{0,40}\b(?:train|bus|subway|metro|without|private|breasts?|chest|crotch|stranger)\b|\bstranger\s+(?:grabbed|touched)\s+me\b",
        ),
    ),
    (
        "sexual_assault",
        "zh",
        "sexual_assault",
        _rx(
            r"强奸|强暴|性侵|被侵犯|侵犯了我|猥亵|性骚扰|非礼",
            r"(?:强行|强迫)[^，。！？]{0,8}(?:发生(?:了)?关系|性行为|上床)",
            r"下药[^。！？]{0,20}(?:醒来|侵犯|衣服)",
            r"(?:地铁|公交|电梯)[^，。！？]{0,8}(?:摸我|对我动手动脚)",
        ),
    ),
    (
        "sexual_assault",
        "es",
        "sexual_assault",
        _rx(
            r"\bme\s+violaron\b|\bme\s+viol[oó]\b|\bviolaci[oó]n\b|\bviolad[oa]\b|\babus(?:aron|[oó])\s+(?:sexualmente\s+)?de\s+m[ií]\b",
            r"\bagresi[oó]n\s+sexual\b|\babuso\s+sexual\b|\bacoso\s+sexual\b|\bme\s+(?:drogaron|drog[oó])\b",
            r"\bme\s+oblig[oó]\s+a\s+(?:tener\s+relaciones|acostarme|tener\s+sexo)\b|\bme\s+forz[oó]\b",
            r"\b(?:dije|le\s+dije)\s+que\s+no\s+(?:pero|y)\s+(?:[ée]l\s+|ella\s+)?(?:sigui[oó]|no\s+par[oó]|continu[oó])\b|\bno\s+par[oó]\s+cuando\s+le\s+dije\s+que\s+no\b",
            r"\bme\s+manose\w+|\bme\s+toc[oó]\b[^.!?\n]{0,30}\b(?:metro|autob[uú]s|tren|calle|desconocid\w+|sin\s+permiso)\b|\bdesconocid[oa]\s+me\s+toc[oó]\b",
        ),
    ),
    (
        "sexual_assault",
        "fr",
        "sexual_assault",
        _rx(
            r"\b(?:j'ai\s+été|on\s+m'a|il\s+m'a|elle\s+m'a)\s+(?:violée?|agressée?\s+sexuellement)\b|\bviol(?:ée|é)\b|\bun\s+viol\b",
            r"\bagression\s+sexuelle\b|\babus(?:é|er)\s+de\s+moi\b|\battouchements?\b|\bdroguée?\b|\bharcèlement\s+sexuel\b",
            r"\bforcée?\s+à\s+(?:coucher|avoir\s+des\s+rapports|faire\s+l'amour)\b|\bm'a\s+forcée?\b",
            r"\bj'ai\s+dit\s+non\s+(?:mais|et)\s+(?:il|elle)\s+(?:a\s+continué|ne\s+s'est\s+pas\s+arrêtée?)\b|\bne\s+s'est\s+pas\s+arrêtée?\s+quand\s+j'ai\s+dit\s+non\b",
            r"\bm'a\s+touchée?\b[^.!?\n]{0,30}\b(?:métro|bus|train|rue|inconnu\w*)\b",
        ),
    ),
    # ---- danger from another person -----------------------------------------------------------------
    (
        "danger_from_others",
        "en",
        "threatened",
        _rx(
            rf"\b(?:he|she|they|(?:my\s+)?(?:\w+\s+)?(?:{_PARTNER})|my\s+(?:\w+\s+)?(?:{_CAREGIVER}|brother|sister|son|neighbou?r|landlord))\b[^.!?\n]{{0,60}}?\b(?:{_HIT})\s+me\b",
            r"\b(?:threaten\w*|going\s+to|gonna|will|'ll|would|'d|was\s+going\s+to|said\s+(?:he|she|they)\s*(?:'d|would|will|'ll|was\s+going\s+to|is\s+going\s+to)?)\s+(?:to\s+)?(?:kill|hurt|murder|stab|shoot|strangle|choke|beat)\s+me\b",
            r"\b(?:threaten\w*|threats?)\b[^.!?\n]{0,40}\b(?:me|us|my|all\s+of\s+us)\b[^.!?\n]{0,30}\b(?:knife|gun|weapon|kill|hurt)\b|\bthreatening\s+(?:note|message|texts?|letter)\b|\b(?:texting|sending|sends|sent)\s+me\s+threats\b|\bthreaten(?:s|ed|ing)\s+me\b",
            r"\b(?:abusive|violent)\s+(?:partner|boyfriend|girlfriend|husband|wife|relationship|ex)\b|\bmy\s+(?:\w+\s+)?(?:partner|boyfriend|girlfriend|husband|wife|ex)\s+is\s+(?:abusive|violent)\b",
            r"\b(?:domestic|family)\s+(?:violence|abuse)\b(?=[^.!?\n]{0,40}\b(?:me|i'?m|i\s+am|my)\b)|\b(?:afraid|scared|terrified|fear)\s+for\s+my\s+life\b|\bscared\s+to\s+go\s+home\b",
            r"\b(?:stalk(?:s|ed|ing)?|following)\s+me\b|\bkeeps\s+showing\s+up\s+(?:at|outside)\b",
            r"\b(?:won'?t|doesn'?t|will\s+not)\s+let\s+me\s+(?:leave|go\s+out|out|see\s+anyone)\b|\blocked\s+me\s+(?:in|out)\b|\btook\s+my\s+(?:phone|keys|passport)\b",
            r"\b(?:outside|here|coming)\b[^.!?\n]{0,20}\bwith\s+a\s+(?:knife|gun|weapon)\b|\bhiding\s+(?:in|from)\b[^.!?\n]{0,60}\b(?:banging|screaming|hurt|kill)\b",
        ),
    ),
    (
        "danger_from_others",
        "zh",
        "threatened",
        _rx(
            r"(?:打我|揍我|掐我|踢我|推我|扇我|打了我|家暴我|虐待我)",
            r"(?:被家暴|遭受家暴|遭受家庭暴力|被(?:他|她|老公|丈夫|老婆|男友|男朋友|女朋友)打)",
            r"威胁(?:说)?(?:要)?(?:杀|伤害|弄死|打死|砍)(?:了)?我|(?:说|扬言)要(?:杀|弄死|打死|砍死)(?:了)?我|要杀了我",
            r"(?:跟踪我|尾随我)|(?:发|给我发)[^，。！？]{0,6}威胁|威胁我",
            r"拿着?刀|(?:锁在家里|关在家里|不让我出(?:去|门))",
        ),
    ),
    (
        "danger_from_others",
        "es",
        "threatened",
        _rx(
            r"\bme\s+(?:pega|peg[oó]|pegaba|golpea|golpe[oó]|maltrata|maltrat[oó]|empuj[oó]|ahorc[oó]|estrangul[oó]|abofete[oó])\b",
            r"\bamenaz\w*\s+con\s+matarme\b|\bme\s+amenaz\w*\b|\bme\s+va\s+a\s+matar\b|\bme\s+quiere\s+matar\b|\b(?:me\s+va\s+a|va\s+a)\s+hacer(?:me)?\s+daño\b|\bdice\s+que\s+me\s+va\s+a\b",
            r"\b(?:sufro|vivo|estoy\s+sufriendo|soy\s+v[ií]ctima\s+de)\s+(?:de\s+)?(?:violencia\s+(?:dom[eé]stica|de\s+g[eé]nero|machista)|maltrato)\b",
            r"\bme\s+(?:acosa|persigue|sigue\s+a\s+todas\s+partes|vigila)\b|\btengo\s+miedo\s+de\s+volver\s+a\s+casa\b",
            r"\bme\s+encerr[oó]\b|\bno\s+me\s+deja\s+salir\b|\bcon\s+un\s+cuchillo\b|\bcon\s+una\s+pistola\b",
        ),
    ),
    (
        "danger_from_others",
        "fr",
        "threatened",
        _rx(
            r"\b(?:il|elle|mon\s+\w+|ma\s+\w+)\s+me\s+(?:frappe|bat|battait|tape|frappait|étrangle|pousse)\b|\bm'a\s+(?:frappée?|battue?|étranglée?|poussée?|giflée?|menacée?)\b",
            r"\bmenac\w*\s+de\s+me\s+tuer\b|\bme\s+menace\w*\b|\bva\s+me\s+tuer\b|\bs'en\s+prendre\s+à\s+moi\b",
            r"\b(?:je\s+subis|victime\s+de|je\s+vis)\s+(?:des\s+)?violences?\s+(?:conjugales?|domestiques?|familiales?)\b",
            r"\bme\s+harcèle\b|\bme\s+suit\s+partout\b|\bpeur\s+de\s+rentrer\b|\bm'enferme\b(?![^.!?\n]{0,20}\bmes\s+parents\b)",
            r"\bavec\s+un\s+couteau\b(?=[^.!?\n]{0,40}\b(?:me|moi|menace)\b)",
        ),
    ),
    # ---- wanting to harm others -----------------------------------------------------------------------
    (
        "harm_to_others",
        "en",
        "harm_others",
        _rx(
            r"\b(?:want|wanna|going|gonna|plan(?:ning)?|urges?|thoughts?\s+(?:about|of)|fantasi[sz]\w*\s+about|think(?:ing)?\s+about|thought\s+about|could\s+(?:actually|really)|afraid\s+i'?ll|scared\s+i'?ll|scared\s+i'?m\s+going\s+to|might)\s+(?:to\s+)?(?:snap\s+and\s+)?(?:kill\w*|hurt\w*|stab\w*|shoot\w*|poison\w*|murder\w*|strangl\w*|harm\w*|beat\w*)\s+(?!my\s*self\b|me\b|it\b|time\b)(?:my|him|her|them|someone|somebody|people|the|that|this|a|his|every\w*|our|those)\b",
            r"\b(?:shoot|blow)\s+up\s+(?:my|the|our)\s+(?:school|class|office|work)\b|\bbring\s+(?:a|my|my\s+dad'?s|my\s+\w+'?s|the)\s+(?:gun|knife|weapon|rifle)\s+to\s+(?:school|work|class)\b",
            r"\bmake\s+(?:him|her|them|them\s+all|everyone|my\s+\w+)\s+(?:pay|suffer)\b|\b(?:doesn'?t|won'?t|does\s+not|will\s+not)\s+(?:go|get|make\s+it)\s+home\s+alive\b",
            r"\bbeat\s+(?:\w+\s+){1,4}?so\s+(?:bad|hard)\b|\buntil\s+(?:he|she|they)\s+(?:end\w*\s+up\s+in|(?:is|are)\s+in)\s+(?:the\s+)?hospital\b",
            r"\burges?\s+to\s+(?:hurt|harm|kill|attack)\s+(?:someone|people|others|him|her|them|my)\b|\b(?:hurt|harm)\s+(?:my\s+)?(?:baby|kids|child|children|son|daughter)\b",
        ),
    ),
    (
        "harm_to_others",
        "zh",
        "harm_others",
        _rx(
            r"想(?:要)?(?:杀|弄死|捅死|打死|砍死|毒死|伤害|报复)(?:了|掉)?(?:他|她|他们|我的|那个|这个|别人|室友|同学|同事|前|老板|邻居|所有人)",
            r"(?:控制不住|忍不住|冲动)[^，。！？]{0,6}(?:伤害|杀|打)",
            r"伤害(?:我的)?(?:孩子|宝宝|别人|他人)",
            r"带(?:着)?(?:刀|枪)(?:去|到)(?:学校|公司|单位)",
            r"付出代价|捅死|砍死",
        ),
    ),
    (
        "harm_to_others",
        "es",
        "harm_others",
        _rx(
            r"\b(?:quiero|voy\s+a|tengo\s+ganas\s+de|pienso\s+en|pensamientos\s+de|miedo\s+de|ganas\s+de)\s+(?:matar\s+a|matarl[oae]s?|hacerle(?:s)?\s+daño|lastimar\s+a|lastimarl[oae]s?|apuñalar|envenenar|golpear\s+a|darle\s+una\s+paliza|pegarle)\b",
            r"\bllevar\s+(?:un|una|el|la)\s+(?:arma|pistola|cuchillo|navaja)\s+a\s+(?:la\s+escuela|clase|el\s+trabajo|el\s+instituto|el\s+colegio)\b|\bpara\s+que\s+(?:paguen|me\s+las\s+paguen)\b",
            r"\bhasta\s+mandarl[oa]\s+al\s+hospital\b",
        ),
    ),
    (
        "harm_to_others",
        "fr",
        "harm_others",
        _rx(
            r"\b(?:veux|vais|envie\s+de|pense\s+à|peur\s+de|pensées\s+de|besoin\s+de)\s+(?:tuer|faire\s+du\s+mal\s+à|poignarder|empoisonner|frapper|tabasser|blesser)\s+(?!moi\b)(?:mon|ma|mes|le|la|les|celui|celle|quelqu'un|son|sa|un|une|tout)\b",
            r"\bje\s+(?:veux|vais)\s+(?:le|la|les)\s+(?:tuer|tabasser|frapper|poignarder|buter)\b",
            r"\b(?:apporte|amène|apporter|amener)\s+(?:un|une|le|mon)\s+(?:couteau|arme|pistolet)\s+(?:au|à\s+l')\s*(?:lycée|collège|école|travail|boulot)\b|\bpour\s+qu'ils\s+paient\b",
            r"\bjusqu'à\s+ce\s+qu'il\s+(?:finisse\s+à\s+l'hôpital|ne\s+se\s+relève\s+plus)\b",
        ),
    ),
)


def match_patterns(text: str) -> list[tuple[str, str]]:
    """(category, 'lang:name') for every category whose patterns match the idiom-masked `text`.

    One entry per category, in `CATEGORIES` (priority) order. Pass text through `mask_idioms` first.
    """
    found: dict[str, str] = {}
    for category, language, name, pattern in _PATTERNS:
        if category not in found and pattern.search(text):
            found[category] = f"{language}:{name}"
    return [(c, found[c]) for c in CATEGORIES if c in found]


# ---------------------------------------------------------------------------------------------------
# Exemplars for embedding similarity (multilingual; English first)
# ---------------------------------------------------------------------------------------------------

CATEGORY_EXEMPLARS: dict[str, tuple[str, ...]] = {
    "suicide_self_harm": (
        "I want to kill myself",
        "I'm going to end my life",
        "I've been thinking about suicide",
        "I want to die",
        "I don't want to be alive anymore",
        "I've been cutting myself again",
        "I keep hurting myself on purpose",
        "I have a plan to end it tonight",
        "Everyone would be better off if I were dead",
        "I'm just a burden, they'd all be happier if I died",
        "Nobody would miss me if I was gone",
        "There's no reason for me to keep living",
        "I can't go on living like this",
        "I wish I could go to sleep and never wake up",
        "I want everything to stop, for good",
        "I've written letters for my loved ones to read after I'm gone",
        "I've been giving away my things because I won't need them",
        "I keep thinking about jumping off a bridge",
        "I've been saving up my pills",
        "Life isn't worth living anymore",
        "I just want to disappear forever and never come back",
        "I won't be around much longer",
        "There's no way out except dying",
        "I hope I get hit by a car",
        "I've been thinking about crashing my car on purpose",
        "I just want the pain to stop forever",
        "This is the last time you'll hear from me",
        "我不想再活下去了",
        "我想结束自己的生命",
        "我一直在伤害自己",
        "没有我大家会更好",
        "ya no quiero seguir viviendo",
        "quiero acabar con mi vida",
        "todos estarían mejor si yo no existiera",
        "je ne veux plus vivre",
        "je veux mettre fin à mes jours",
        "tout le monde irait mieux si je n'étais plus là",
    ),
    "overdose_injury": (
        "I took a whole bottle of pills",
        "I swallowed all my pills an hour ago",
        "I just overdosed on my medication",
        "my friend took too many pills and won't wake up",
        "I drank poison",
        "my child swallowed something poisonous",
        "I'm bleeding a lot and it won't stop",
        "I hurt myself badly and need help now",
        "I took too much medicine and I feel very sick",
        "我吃了很多药，现在很难受",
        "我喝了有毒的东西",
        "me tomé muchas pastillas y me siento muy mal",
        "mi hijo se tragó algo tóxico",
        "j'ai pris trop de médicaments et je me sens très mal",
        "mon enfant a avalé un produit toxique",
    ),
    "danger_from_others": (
        "my partner hits me",
        "my husband threatened to kill me",
        "I'm afraid my boyfriend will hurt me when he gets home",
        "someone is stalking me and sending me threats",
        "my ex said he would hurt me",
        "I'm in an abusive relationship and I'm scared",
        "he won't let me leave the house",
        "he has a knife and he's threatening me",
        "I'm scared for my safety at home",
        "我丈夫打我，我很害怕",
        "他威胁要伤害我",
        "mi pareja me golpea y tengo miedo",
        "me amenaza con hacerme daño",
        "mon conjoint me frappe et j'ai peur",
        "il me menace de me faire du mal",
    ),
    "child_at_risk": (
        "my dad hits me and I'm a kid",
        "an adult touches me and tells me to keep it secret",
        "my parents hurt me and I'm scared to go home",
        "I think a child I know is being abused",
        "a grown up online wants me to send photos of myself",
        "my stepfather abuses me",
        "the kids next door are being hurt by their parents",
        "我是个孩子，家里有人打我",
        "有个大人摸我还不让我说",
        "soy un niño y en mi casa me pegan",
        "un adulto me toca y me dice que no lo cuente",
        "je suis un enfant et on me frappe à la maison",
        "un adulte me touche et me dit de garder le secret",
    ),
    "sexual_assault": (
        "I was raped",
        "someone sexually assaulted me",
        "he forced me to have sex",
        "I was drugged and assaulted",
        "I said no and he didn't stop",
        "someone touched me sexually without my consent",
        "I was sexually abused",
        "我被人性侵了",
        "他强迫我发生关系",
        "me agredieron sexualmente",
        "abusaron de mí sin mi consentimiento",
        "j'ai été agressée sexuellement",
        "il m'a forcée sans mon consentement",
    ),
    "harm_to_others": (
        "I want to kill someone",
        "I'm going to hurt him",
        "I have thoughts about hurting my child",
        "I'm planning to attack people at my school",
        "I'm afraid I will hurt someone",
        "I want to make them pay, I'm going to hurt them",
        "I keep thinking about killing my neighbor",
        "我想杀人",
        "我想伤害别人",
        "quiero matar a alguien",
        "tengo miedo de hacerle daño a alguien",
        "je veux tuer quelqu'un",
        "j'ai peur de faire du mal à quelqu'un",
    ),
}
"""Short statements per category; a message close to any of them (embedding cosine) is in that category."""


ORDINARY_EXEMPLARS: tuple[str, ...] = (
    # Everyday distress that shares words with a crisis exemplar ("sleep", "tired", "can't go on with
    # this") but is not one. An embedding hit counts only when the message is closer to a crisis exemplar
    # than to every one of these (SafetyLayer.assess); the patterns flag first, unaffected. Written for
    # this purpose, not taken from evals/data/safety.
    "I can't sleep before exams",
    "I can't sleep at night",
    "I can't fall asleep",
    "I have been having trouble sleeping lately",
    "I lie awake at night worrying about work",
    "I'm exhausted and tired all the time",
    "I'm so stressed about my deadlines",
    "I can't stop overthinking at night",
    "My insomnia is getting worse",
    "I feel nervous before my job interview",
    "考试前我睡不着",
    "我最近总是失眠",
    "No puedo dormir antes de los exámenes",
    "Últimamente no duermo bien por el estrés",
    "Je n'arrive pas à dormir avant mes examens",
    "Je suis épuisé et stressé par le travail",
)


def english_exemplars(exemplars: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Only the exemplars written in English: what an English-only embedder can compare with."""
    return {
        c: tuple(t for t in texts if detect_language(t) == "en" and not _CJK.search(t))
        for c, texts in exemplars.items()
    }


def ordered(categories: Iterable[str]) -> list[str]:
    """`categories` without repeats, in priority order."""
    seen = set(categories)
    return [c for c in CATEGORIES if c in seen]
