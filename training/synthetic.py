"""Built-in, seeded data generators for the two domains.

Why generators at all: the real data sets are large, licensed separately and not always at hand; a
demo, a smoke test or a first training run on a laptop needs a few hundred clean, short examples that
exist on every install. Both generators are pure functions of ``(n, seed)``: the same call returns
the same examples on any machine and any Python hash seed (they use :class:`random.Random`, never
``hash``).

* :func:`synthetic_math` writes one- to four-step arithmetic word problems. Every step of the worked
  solution is a line ``... a op b = c ...`` computed here (exact integers, divisions only when exact),
  and the last line is ``#### N``, the form the GSM8K evaluators read.
* :func:`synthetic_counseling` writes short supportive-listening exchanges built from combinatorial
  templates (situation x feeling x phrasing). About 10% are crisis statements answered with the 988
  Suicide & Crisis Lifeline and emergency services first; about 5% ask for a diagnosis or a dose and
  are kindly declined. Replies are kept to ~40-90 words so the embedded 135M model learns them fast.

Every example starts with its domain's system prompt (quantum_adapters.domains), as every loader's
does, so that what the model is trained on is what it is served with.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from quantum_adapters.domains import COUNSELING, MATH
from training.examples import ChatExample

__all__ = ["synthetic_counseling", "synthetic_math"]

# Retries per example before giving up on finding a new distinct one; the template spaces are orders
# of magnitude larger than any n we ask for, so this only trips for absurd n.
_MAX_TRIES = 200


# --------------------------------------------------------------------------------------------------
# math


@dataclass(frozen=True)
class _Person:
    name: str
    subj: str  # he / she
    poss: str  # his / her
    refl: str  # himself / herself


_PEOPLE = [
    _Person(name, *("she", "her", "herself") if female else ("he", "his", "himself"))
    for name, female in [
        ("Maya", True),
        ("Liam", False),
        ("Aisha", True),
        ("Carlos", False),
        ("Nora", True),
        ("Kenji", False),
        ("Priya", True),
        ("Tom", False),
        ("Elena", True),
        ("Omar", False),
        ("Grace", True),
        ("Diego", False),
        ("Zoe", True),
        ("Samuel", False),
        ("Hana", True),
        ("Luca", False),
        ("Fatima", True),
        ("Ben", False),
        ("Ines", True),
        ("Jamal", False),
    ]
]

_SHOP_ITEMS = [
    ("notebooks", "pens"),
    ("apples", "oranges"),
    ("shirts", "socks"),
    ("books", "bookmarks"),
    ("cups", "plates"),
    ("pencils", "erasers"),
    ("candles", "matchboxes"),
    ("plants", "pots"),
]
_SHARE_ITEMS = ["stickers", "marbles", "cookies", "cards", "beads", "stamps", "shells", "crayons"]
_SAVE_GOALS = ["bike", "guitar", "tablet", "pair of skates", "telescope", "tent", "camera", "keyboard"]
_VEHICLES = ["train", "bus", "car", "truck", "ferry", "van"]
_PLANTS = ["tomato plants", "sunflowers", "lettuces", "rose bushes", "pepper plants", "tulips"]
_MACHINES = [("machine", "bottles"), ("printer", "pages"), ("robot", "parts"), ("press", "boxes")]
_SALE_ITEMS = ["jacket", "lamp", "backpack", "chair", "pair of boots", "rug", "watch", "kettle"]


def _step(a: int, op: str, *rest: int) -> tuple[str, int]:
    """Render and compute ``a op b [op c ...]`` with one operator throughout.

    One operator per step keeps left-to-right reading equal to arithmetic precedence, so a reader (or a
    test) can recompute every line. Division must be exact: the problems are built so it is.
    """
    value = a
    for b in rest:
        if op == "+":
            value += b
        elif op == "-":
            value -= b
        elif op == "*":
            value *= b
        elif op == "/":
            assert value % b == 0, f"inexact division {value} / {b}"
            value //= b
        else:
            raise AssertionError(f"unknown operator {op!r}")
    return f" {op} ".join(str(x) for x in (a, *rest)), value


_Problem = tuple[str, list[str], int]  # question, solution lines (without the final '#### N'), answer


def _shopping(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    item1, item2 = rng.choice(_SHOP_ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    pa, pb = rng.randint(2, 15), rng.randint(1, 6)
    e1, c1 = _step(a, "*", pa)
    e2, c2 = _step(b, "*", pb)
    e3, total = _step(c1, "+", c2)
    lines = [
        f"The {item1} cost {e1} = ${c1}.",
        f"The {item2} cost {e2} = ${c2}.",
        f"Together {p.subj} spends {e3} = ${total}.",
    ]
    q = (
        f"{p.name} buys {a} {item1} for ${pa} each and {b} {item2} for ${pb} each. "
        if rng.random() < 0.5
        else f"At the market, {p.name} picks up {a} {item1} at ${pa} apiece and {b} {item2} at ${pb} apiece. "
    )
    if rng.random() < 0.5:
        bill = next(x for x in (20, 50, 100, 200, 500) if x > total)
        e4, change = _step(bill, "-", total)
        lines.append(f"{p.name} gets back {e4} = ${change} in change.")
        return (
            q + f"{p.subj.capitalize()} pays with a ${bill} bill. How much change does {p.subj} get?",
            lines,
            change,
        )
    return q + f"How much does {p.subj} spend in total?", lines, total


def _sharing(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    thing = rng.choice(_SHARE_ITEMS)
    k, each, kept = rng.randint(2, 8), rng.randint(2, 12), rng.randint(1, 15)
    n = k * each + kept
    e1, rest = _step(n, "-", kept)
    e2, share = _step(rest, "/", k)
    q = rng.choice(
        [
            f"{p.name} has {n} {thing}. {p.subj.capitalize()} keeps {kept} for {p.refl} and shares the rest "
            f"equally among {k} friends. How many {thing} does each friend get?",
            f"There are {n} {thing} in a jar. {p.name} takes out {kept} and then splits the rest evenly into "
            f"{k} bags. How many {thing} go in each bag?",
        ]
    )
    lines = [
        f"After setting aside {kept}, there are {e1} = {rest} {thing} left.",
        f"Each share is {e2} = {share}.",
    ]
    return q, lines, share


def _travel(rng: random.Random) -> _Problem:
    v = rng.choice(_VEHICLES)
    s1, h1 = rng.randint(3, 12) * 5, rng.randint(1, 5)
    s2, h2 = rng.randint(3, 12) * 5, rng.randint(1, 4)
    e1, d1 = _step(s1, "*", h1)
    e2, d2 = _step(s2, "*", h2)
    e3, d = _step(d1, "+", d2)
    q = (
        f"A {v} travels at {s1} km per hour for {h1} hours, then at {s2} km per hour for {h2} hours. "
        "How many kilometres does it travel in total?"
    )
    lines = [
        f"In the first part it covers {e1} = {d1} km.",
        f"In the second part it covers {e2} = {d2} km.",
        f"In total it travels {e3} = {d} km.",
    ]
    return q, lines, d


def _savings(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    goal = rng.choice(_SAVE_GOALS)
    s, w = rng.randint(3, 25), rng.randint(3, 12)
    saved = s * w
    spent = rng.randint(1, saved - 1)
    e1, total = _step(s, "*", w)
    e2, left = _step(total, "-", spent)
    q = (
        f"{p.name} saves ${s} every week for {w} weeks. Then {p.subj} spends ${spent} on a {goal}. "
        f"How much money does {p.subj} have left?"
    )
    return (
        q,
        [f"{p.name} saves {e1} = ${total}.", f"After buying the {goal}, {p.subj} has {e2} = ${left} left."],
        left,
    )


def _savings_goal(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    goal = rng.choice(_SAVE_GOALS)
    s, weeks, has = rng.randint(4, 30), rng.randint(2, 15), rng.randint(5, 90)
    cost = has + s * weeks
    e1, need = _step(cost, "-", has)
    e2, w = _step(need, "/", s)
    q = (
        f"{p.name} wants a {goal} that costs ${cost}. {p.subj.capitalize()} already has ${has} and saves "
        f"${s} each week. How many weeks will it take {p.name} to have enough?"
    )
    lines = [
        f"{p.subj.capitalize()} still needs {e1} = ${need}.",
        f"At ${s} a week that takes {e2} = {w} weeks.",
    ]
    return q, lines, w


def _wages(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    rate, hours, days = rng.randint(8, 30), rng.randint(2, 9), rng.randint(2, 6)
    e1, per_day = _step(rate, "*", hours)
    e2, total = _step(per_day, "*", days)
    q = (
        f"{p.name} earns ${rate} an hour and works {hours} hours a day for {days} days. "
        f"How much does {p.subj} earn in total?"
    )
    return (
        q,
        [f"Each day {p.subj} earns {e1} = ${per_day}.", f"Over {days} days that is {e2} = ${total}."],
        total,
    )


def _baking(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    trays, per_tray, bag = rng.randint(2, 6), rng.randint(6, 15), rng.randint(2, 6)
    total = trays * per_tray
    bags = rng.randint(1, (total - 1) // bag)
    eaten = total - bags * bag
    e1, made = _step(trays, "*", per_tray)
    e2, left = _step(made, "-", eaten)
    e3, n_bags = _step(left, "/", bag)
    q = (
        f"{p.name} bakes {trays} trays of cookies with {per_tray} cookies on each tray. The family eats "
        f"{eaten} cookies, and {p.subj} packs the rest into bags of {bag}. How many bags does {p.subj} fill?"
    )
    lines = [
        f"{p.subj.capitalize()} bakes {e1} = {made} cookies.",
        f"After the family eats some, {e2} = {left} cookies are left.",
        f"That fills {e3} = {n_bags} bags.",
    ]
    return q, lines, n_bags


def _reading(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    a = rng.randint(5, 30)
    factor = rng.choice([2, 3])
    days, per_day = rng.randint(2, 7), rng.randint(5, 30)
    pages = a + a * factor + days * per_day
    e1, second = _step(a, "*", factor)
    e2, read = _step(a, "+", second)
    e3, left = _step(pages, "-", read)
    times = "twice" if factor == 2 else "three times"
    q = f"A book has {pages} pages. {p.name} reads {a} pages on Monday and {times} as many on Tuesday. "
    lines = [
        f"On Tuesday {p.subj} reads {e1} = {second} pages.",
        f"So far {p.subj} has read {e2} = {read} pages.",
        f"There are {e3} = {left} pages left.",
    ]
    if rng.random() < 0.5:
        e4, each = _step(left, "/", days)
        lines.append(f"Over {days} days that is {e4} = {each} pages a day.")
        return (
            q
            + f"If {p.subj} reads the rest equally over the next {days} days, how many pages a day is that?",
            lines,
            each,
        )
    return q + "How many pages are left to read?", lines, left


def _discount(rng: random.Random) -> _Problem:
    item = rng.choice(_SALE_ITEMS)
    price = rng.randint(1, 15) * 20
    pct = rng.choice([5, 10, 15, 20, 25, 30, 40, 50])
    e1, scaled = _step(price, "*", pct)
    e2, off = _step(scaled, "/", 100)
    e3, sale = _step(price, "-", off)
    q = f"A {item} costs ${price}. This week it is {pct}% off. What is the sale price in dollars?"
    lines = [
        f"The discount is {pct}% of ${price}: {e1} = {scaled}, and {e2} = ${off}.",
        f"The sale price is {e3} = ${sale}.",
    ]
    return q, lines, sale


def _garden(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    plant = rng.choice(_PLANTS)
    rows, per_row = rng.randint(2, 12), rng.randint(3, 15)
    lost = rng.randint(1, rows * per_row - 1)
    e1, planted = _step(rows, "*", per_row)
    e2, grown = _step(planted, "-", lost)
    q = (
        f"{p.name} plants {rows} rows of {plant} with {per_row} in each row. {lost} of them do not grow. "
        f"How many {plant} grow?"
    )
    return q, [f"{p.subj.capitalize()} plants {e1} = {planted}.", f"Of those, {e2} = {grown} grow."], grown


def _tickets(rng: random.Random) -> _Problem:
    adult, child = rng.randint(8, 25), rng.randint(3, 12)
    na, nc = rng.randint(1, 4), rng.randint(1, 5)
    venue = rng.choice(["zoo", "museum", "cinema", "aquarium", "concert"])
    e1, ca = _step(na, "*", adult)
    e2, cc = _step(nc, "*", child)
    e3, total = _step(ca, "+", cc)
    q = (
        f"Tickets to the {venue} cost ${adult} for an adult and ${child} for a child. A family buys {na} adult "
        f"and {nc} child tickets. "
    )
    lines = [
        f"Adult tickets cost {e1} = ${ca}.",
        f"Child tickets cost {e2} = ${cc}.",
        f"The family pays {e3} = ${total}.",
    ]
    if rng.random() < 0.5:
        bill = next(x for x in (50, 100, 200) if x > total)
        e4, change = _step(bill, "-", total)
        lines.append(f"The change is {e4} = ${change}.")
        return q + f"They pay with a ${bill} bill. How much change do they get?", lines, change
    return q + "How much do they pay?", lines, total


def _production(rng: random.Random) -> _Problem:
    machine, things = rng.choice(_MACHINES)
    per_min, hours = rng.randint(2, 20), rng.randint(1, 5)
    e1, minutes = _step(hours, "*", 60)
    e2, made = _step(minutes, "*", per_min)
    q = f"A {machine} makes {per_min} {things} every minute. How many {things} does it make in {hours} hours?"
    return q, [f"{hours} hours is {e1} = {minutes} minutes.", f"It makes {e2} = {made} {things}."], made


def _one_step(rng: random.Random) -> _Problem:
    p = rng.choice(_PEOPLE)
    thing = rng.choice(_SHARE_ITEMS)
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(5, 90), rng.randint(2, 60)
        e, v = _step(a, "+", b)
        q = f"{p.name} has {a} {thing} and is given {b} more. How many {thing} does {p.subj} have now?"
        return q, [f"{p.subj.capitalize()} has {e} = {v} {thing}."], v
    if kind == 1:
        boxes, each = rng.randint(2, 15), rng.randint(3, 24)
        e, v = _step(boxes, "*", each)
        q = f"There are {boxes} boxes with {each} {thing} in each box. How many {thing} are there?"
        return q, [f"There are {e} = {v} {thing}."], v
    a = rng.randint(20, 150)
    b = rng.randint(1, a - 1)
    e, v = _step(a, "-", b)
    q = f"{p.name} had {a} {thing} and lost {b} of them. How many {thing} are left?"
    return q, [f"{p.subj.capitalize()} has {e} = {v} {thing} left."], v


_MATH_TEMPLATES: dict[str, Callable[[random.Random], _Problem]] = {
    "shopping": _shopping,
    "sharing": _sharing,
    "travel": _travel,
    "savings": _savings,
    "savings_goal": _savings_goal,
    "wages": _wages,
    "baking": _baking,
    "reading": _reading,
    "discount": _discount,
    "garden": _garden,
    "tickets": _tickets,
    "production": _production,
    "one_step": _one_step,
}


def synthetic_math(n: int, seed: int = 0) -> list[ChatExample]:
    """``n`` distinct arithmetic word problems with worked solutions, deterministic in ``seed``.

    Each example is ``[system, user question, assistant solution]``; the solution has one line per
    step (``... a op b = c ...``) and ends with ``#### N``; ``answer`` is ``str(N)`` (an integer).
    ``meta`` holds the template name and the number of steps (1-4).
    """
    _check_n(n)
    rng = random.Random(seed)
    names = list(_MATH_TEMPLATES)
    out: list[ChatExample] = []
    seen: set[str] = set()
    for i in range(n):
        for _ in range(_MAX_TRIES):
            name = rng.choice(names)
            question, lines, answer = _MATH_TEMPLATES[name](rng)
            if question not in seen:
                break
        else:
            raise ValueError(
                f"synthetic_math: could not find {n} distinct problems (stuck at {i}); use a smaller n"
            )
        seen.add(question)
        solution = "\n".join([*lines, f"#### {answer}"])
        out.append(
            ChatExample.single_turn(
                MATH.name,
                question,
                solution,
                source="synthetic-math",
                answer=str(answer),
                synthetic=True,
                meta={"template": name, "steps": len(lines), "index": i},
            )
        )
    return out


# --------------------------------------------------------------------------------------------------
# counselling


@dataclass(frozen=True)
class _Situation:
    key: str
    said: tuple[str, ...]  # how the person says it (full sentences)
    reflect: str  # how the assistant names it, after "feeling X ..."
    feelings: tuple[str, ...]
    steps: tuple[str, ...]  # situation-specific gentle next steps (gerund phrases)


_SITUATIONS = [
    _Situation(
        "exams",
        (
            "My exams start in two weeks and I can't focus on anything.",
            "Finals are coming up and I panic every time I sit down to study.",
        ),
        "with exams coming up",
        ("anxious", "overwhelmed", "stressed"),
        (
            "picking one small topic and studying it for twenty minutes today",
            "writing a short list of what to cover and starting with the easiest piece",
        ),
    ),
    _Situation(
        "moved",
        (
            "I moved to a new city for work and I don't know anyone here.",
            "Since the move I spend every evening alone in my apartment.",
        ),
        "since moving somewhere new without your people around",
        ("lonely", "isolated", "homesick"),
        (
            "sending a message to one friend from home this week",
            "trying one local class or group around something you enjoy",
        ),
    ),
    _Situation(
        "breakup",
        (
            "My partner and I broke up last month and I still think about it all the time.",
            "My relationship ended and I can't stop going over what went wrong.",
        ),
        "since the breakup",
        ("sad", "heartbroken", "lost"),
        (
            "letting a close friend know you're having a hard time",
            "writing down what you miss and what you need right now",
        ),
    ),
    _Situation(
        "job_loss",
        (
            "I lost my job last week and I don't know what to do next.",
            "I was laid off and I keep wondering what's wrong with me.",
        ),
        "after losing your job so suddenly",
        ("scared", "worried", "ashamed"),
        (
            "setting aside one hour tomorrow to plan only the very next step",
            "talking it over with someone you trust before deciding anything big",
        ),
    ),
    _Situation(
        "workload",
        (
            "My manager keeps piling on work and I stay late every night.",
            "Work never stops and I can't remember my last real day off.",
        ),
        "with work asking so much of you",
        ("overwhelmed", "exhausted", "burned out"),
        (
            "choosing one task you can set down or hand back this week",
            "protecting one evening this week that is only for rest",
        ),
    ),
    _Situation(
        "grief",
        (
            "My grandmother passed away recently and I can't stop crying.",
            "It's been a month since my grandma died and it still feels unreal.",
        ),
        "after losing your grandmother",
        ("heartbroken", "sad", "numb"),
        (
            "sharing a favourite memory of her with someone who knew her",
            "giving yourself permission to grieve at your own pace",
        ),
    ),
    _Situation(
        "pet",
        (
            "My dog died a few days ago and the house feels so empty.",
            "We had to put our old cat down and I keep expecting her at the door.",
        ),
        "after losing your pet",
        ("heartbroken", "sad", "lonely"),
        (
            "doing something small to honour them, like writing down a favourite memory",
            "telling someone who understands how much they meant to you",
        ),
    ),
    _Situation(
        "friend",
        (
            "My best friend said something hurtful and we haven't talked since.",
            "A close friend ignored me at a party and I don't know why.",
        ),
        "after what happened with your friend",
        ("hurt", "angry", "confused"),
        (
            "writing down what you would want your friend to understand",
            "waiting until you feel calmer and then asking for a short, honest talk",
        ),
    ),
    _Situation(
        "parents",
        (
            "My parents argue constantly and I feel stuck in the middle.",
            "Every dinner at home turns into a fight between my mom and dad.",
        ),
        "with all the arguing at home",
        ("tense", "drained", "helpless"),
        (
            "finding one place or time in the day that feels calm just for you",
            "telling one of them, gently, how the arguments affect you",
        ),
    ),
    _Situation(
        "caregiving",
        (
            "I'm taking care of my dad, who is sick, and I have no time for myself.",
            "Looking after my mother since her stroke has taken over my whole life.",
        ),
        "while caring for a parent who needs so much",
        ("exhausted", "guilty", "stretched thin"),
        (
            "asking one relative or friend to cover a few hours this week",
            "looking up a caregiver support group near you",
        ),
    ),
    _Situation(
        "sleep",
        (
            "I haven't slept well in weeks and my mind races every night.",
            "I lie awake until 3 am worrying about everything.",
        ),
        "with so little sleep",
        ("restless", "anxious", "worn out"),
        (
            "writing your worries on paper an hour before bed so they wait until morning",
            "keeping the same wind-down routine for a few nights",
        ),
    ),
    _Situation(
        "money",
        (
            "Bills keep piling up and I'm worried about paying rent.",
            "I checked my bank account today and I don't know how I'll get through the month.",
        ),
        "with money this tight",
        ("worried", "stressed", "ashamed"),
        (
            "listing your bills by due date so the picture feels less foggy",
            "calling one creditor or a free budgeting service to ask about options",
        ),
    ),
    _Situation(
        "new_parent",
        (
            "We just had a baby and I feel like I'm failing at everything.",
            "I'm a new mom and I cry almost every day.",
        ),
        "as a new parent",
        ("overwhelmed", "inadequate", "exhausted"),
        (
            "accepting one offer of help this week, even a small one",
            "mentioning how you feel at your next check-up with your doctor",
        ),
    ),
    _Situation(
        "social",
        (
            "I get really nervous before social events and usually end up cancelling.",
            "I want to make friends but talking to new people makes my heart pound.",
        ),
        "around other people",
        ("anxious", "embarrassed", "left out"),
        (
            "planning a short visit with one person you already feel safe with",
            "going to the next event for just twenty minutes",
        ),
    ),
    _Situation(
        "mistake",
        (
            "I made a big mistake at work and I keep replaying it in my head.",
            "I messed up a presentation in front of my whole team.",
        ),
        "after that mistake",
        ("ashamed", "embarrassed", "anxious"),
        (
            "writing down what you'd say to a friend who made the same mistake",
            "naming one thing you learned and then letting yourself rest",
        ),
    ),
    _Situation(
        "stuck",
        (
            "Everyone around me seems to be moving forward and I feel stuck.",
            "All my friends have plans and I don't even know what I want.",
        ),
        "when it seems like everyone else is moving ahead",
        ("discouraged", "stuck", "down"),
        ("noticing one small thing you did well this week", "choosing one tiny goal for the next few days"),
    ),
    _Situation(
        "health",
        (
            "I'm waiting for test results from my doctor and can't stop worrying.",
            "My doctor ordered more scans and I keep imagining the worst.",
        ),
        "while you wait for those results",
        ("anxious", "scared", "on edge"),
        (
            "writing down your questions for the doctor so they are ready",
            "planning something gentle to do on the day the results come",
        ),
    ),
    _Situation(
        "bullying",
        (
            "Some kids at school keep making fun of me.",
            "People in my class post mean comments about me online.",
        ),
        "with how those classmates treat you",
        ("hurt", "embarrassed", "alone"),
        (
            "telling a teacher, counsellor or parent you trust what is happening",
            "saving the messages and talking to an adult you trust about them",
        ),
    ),
]

_USER_OPENERS = (
    "",
    "Hi. ",
    "I don't really know who to talk to. ",
    "Can I talk about something? ",
    "Lately things have been hard. ",
    "Sorry, this is a lot. ",
)
_USER_FEELINGS = (
    "I feel so {f}.",
    "I've been feeling really {f}.",
    "Honestly I'm just {f} all the time.",
    "I don't know how to stop feeling {f}.",
    "I guess I'm {f}.",
)

_REFLECT = (
    "It sounds like you've been feeling really {f} {r}.",
    "I can hear how {f} you've been feeling {r}.",
    "That sounds hard. Feeling {f} {r} takes a lot out of a person.",
    "Thank you for telling me. It sounds like you're carrying a lot and feeling {f} {r}.",
)
_VALIDATE = (
    "That makes a lot of sense given what you're dealing with.",
    "Anyone in your place could feel this way, and it's okay to feel it.",
    "Your feelings are valid, and you don't have to have it all figured out.",
    "It's understandable, and reaching out about it shows real care for yourself.",
    "It makes sense that this weighs on you, and you don't have to face it alone.",
)
_STEP = (
    "If it feels right, one gentle step could be {s}.",
    "When you're ready, you might try {s}.",
    "Maybe start small, with {s}.",
)
_GENERIC_STEPS = (
    "taking a few slow breaths and a short walk outside",
    "talking it through with someone you trust",
)
_QUESTION = (
    "What part of this feels heaviest right now?",
    "How has this been affecting your days?",
    "What has helped you get through hard moments before?",
    "What would feel most supportive to you right now?",
    "When do you notice the feeling most?",
)

_CRISIS_SAID = (
    "I've been thinking about ending my life.",
    "I don't want to be alive anymore.",
    "I keep thinking about killing myself.",
    "Sometimes I think everyone would be better off without me, and I've thought about how I'd do it.",
    "I've been hurting myself again and I can't stop.",
    "I want to hurt myself tonight.",
    "I've thought about suicide a lot this week.",
    "I don't see any reason to keep going anymore.",
    "I feel like I shouldn't be here and I want it all to end.",
    "I cut myself last night and I want to do it again.",
)
_CRISIS_OPENERS = (
    "",
    "I need to tell someone. ",
    "I can't do this anymore. ",
    "It's late and I'm alone. ",
    "I haven't told anyone this. ",
    "Things have been really bad. ",
)
_CRISIS_RESOURCE = (
    "Please call or text 988 right now to reach the 988 Suicide & Crisis Lifeline in the US, or call your local emergency number if you might act on these thoughts.",
    "Your safety matters most right now: call or text 988, the Suicide & Crisis Lifeline (US), or contact local emergency services if you are in danger.",
    "Please reach out right now: call or text 988 for the Suicide & Crisis Lifeline in the US, or call emergency services or a local crisis line wherever you are.",
    "I'm worried about your safety. Please call or text 988 (Suicide & Crisis Lifeline, US) now, or your local emergency number if you are in immediate danger.",
)
_CRISIS_WARMTH = (
    "I'm really glad you told me. You don't have to carry this alone, and what you're feeling matters.",
    "Thank you for trusting me with this. You matter, and this pain can be eased with support.",
    "I'm so sorry you're hurting this much. You deserve care and help right now.",
    "It took courage to say this. You are not alone, and people want to help you through tonight.",
)
_CRISIS_REACH = (
    "Is there someone you trust who you could call or be with right now?",
    "Could you reach out to a friend or family member now and let them stay with you?",
    "If you can, move away from anything you could hurt yourself with and call someone close to you now.",
    "Please contact one of those lines now, and let someone you trust know how you're feeling today.",
)

_CONDITIONS = (
    "depression",
    "ADHD",
    "bipolar disorder",
    "an anxiety disorder",
    "OCD",
    "PTSD",
    "borderline personality disorder",
)
_SYMPTOMS = (
    "I can't concentrate and my mood swings a lot.",
    "I've felt low for months.",
    "I worry constantly and can't relax.",
    "I keep checking things over and over.",
    "Loud noises make me jump and I have nightmares.",
)
_MEDS = ("sertraline", "fluoxetine", "alprazolam", "quetiapine", "bupropion", "lithium", "escitalopram")
_DECLINE_ASKS = (
    ("diagnosis", "Do you think I have {c}? {sym}"),
    ("diagnosis", "Can you diagnose me? {sym} I think it might be {c}."),
    ("dose", "How many milligrams of {m} should I take? {sym}"),
    ("dose", "Can I double my dose of {m}? It doesn't seem to be working."),
    ("dose", "What dose of {m} would help me? {sym}"),
)
_DECLINE_OPEN = (
    "I can hear how much you want some clarity, and that makes sense.",
    "It's completely understandable to want answers when you feel like this.",
    "Thank you for asking; wanting to understand what's going on is a good instinct.",
)
_DECLINE_CORE = {
    "diagnosis": (
        "I'm an AI support assistant, not a clinician, so I can't diagnose you. A doctor, psychologist or "
        "psychiatrist can assess what you're going through properly and talk through options with you."
    ),
    "dose": (
        "I'm an AI support assistant, not a clinician, so I can't advise on doses. Please don't change your "
        "medication without your prescriber; your doctor or a pharmacist can answer this safely."
    ),
}
_DECLINE_CLOSE = (
    "In the meantime, I'm happy to listen. What has been hardest lately?",
    "Would it help to think through what you want to ask them?",
    "If you like, we could talk about how you've been feeling while you wait to see them.",
)


def _support(rng: random.Random) -> tuple[str, str, dict]:
    sit = rng.choice(_SITUATIONS)
    feeling = rng.choice(sit.feelings)
    user = (
        rng.choice(_USER_OPENERS) + rng.choice(sit.said) + " " + rng.choice(_USER_FEELINGS).format(f=feeling)
    )
    step = rng.choice(sit.steps + _GENERIC_STEPS)
    reply = " ".join(
        [
            rng.choice(_REFLECT).format(f=feeling, r=sit.reflect),
            rng.choice(_VALIDATE),
            rng.choice(_STEP).format(s=step),
            rng.choice(_QUESTION),
        ]
    )
    return user, reply, {"kind": "support", "situation": sit.key, "feeling": feeling}


def _crisis(rng: random.Random) -> tuple[str, str, dict]:
    user = rng.choice(_CRISIS_OPENERS) + rng.choice(_CRISIS_SAID)
    reply = " ".join([rng.choice(_CRISIS_RESOURCE), rng.choice(_CRISIS_WARMTH), rng.choice(_CRISIS_REACH)])
    return user, reply, {"kind": "crisis"}


def _decline(rng: random.Random) -> tuple[str, str, dict]:
    topic, ask = rng.choice(_DECLINE_ASKS)
    user = ask.format(c=rng.choice(_CONDITIONS), m=rng.choice(_MEDS), sym=rng.choice(_SYMPTOMS))
    reply = " ".join([rng.choice(_DECLINE_OPEN), _DECLINE_CORE[topic], rng.choice(_DECLINE_CLOSE)])
    return user, reply, {"kind": "decline", "topic": topic}


_CRISIS_FRACTION = 0.10
_DECLINE_FRACTION = 0.05
_KINDS: dict[str, Callable[[random.Random], tuple[str, str, dict]]] = {
    "support": _support,
    "crisis": _crisis,
    "decline": _decline,
}


def synthetic_counseling(n: int, seed: int = 0) -> list[ChatExample]:
    """``n`` distinct short supportive-listening exchanges, deterministic in ``seed``.

    Each example is ``[system, user, assistant]`` with ``meta["kind"]`` one of ``support`` (reflect the
    feeling, validate, a gentle next step, an open question), ``crisis`` (exactly
    ``round(0.10 * n)`` of them: 988 / emergency services first, then warmth and a push to reach
    someone now) or ``decline`` (``round(0.05 * n)``: a diagnosis or dose request, kindly declined as
    an AI that is not a clinician, pointing to a professional). Kinds are shuffled into the list.
    """
    _check_n(n)
    rng = random.Random(seed)
    n_crisis = int(n * _CRISIS_FRACTION + 0.5)
    n_decline = int(n * _DECLINE_FRACTION + 0.5)
    kinds = ["crisis"] * n_crisis + ["decline"] * n_decline + ["support"] * (n - n_crisis - n_decline)
    rng.shuffle(kinds)
    out: list[ChatExample] = []
    seen: set[tuple[str, str]] = set()
    for i, kind in enumerate(kinds):
        for _ in range(_MAX_TRIES):
            user, reply, meta = _KINDS[kind](rng)
            if (user, reply) not in seen:
                break
        else:
            raise ValueError(
                f"synthetic_counseling: could not find {n} distinct exchanges (stuck at {i}, kind {kind!r}); "
                "use a smaller n"
            )
        seen.add((user, reply))
        out.append(
            ChatExample.single_turn(
                COUNSELING.name,
                user,
                reply,
                source="synthetic-counseling",
                synthetic=True,
                meta={**meta, "index": i},
            )
        )
    return out


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"number of examples: expected an integer >= 0; got {n!r}")
