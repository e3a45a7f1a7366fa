"""Tiny real causal LMs (Llama and Qwen2 architectures) built from configs, saved as model folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from tests.conftest import tiny_decoder

TINY = tiny_decoder(vocab_size=97, hidden_size=48, intermediate_size=96, max_position_embeddings=64)


def tiny_config(arch: str):
    return {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch](**TINY)


def make_tiny_model(arch: str = "llama", seed: int = 0):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch))
    model.eval()
    return model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny model folder per architecture (real config.json + safetensors)."""
    out = {}
    for arch in ("llama", "qwen2"):
        folder = tmp_path_factory.mktemp(f"tiny-{arch}")
        make_tiny_model(arch).save_pretrained(folder)
        out[arch] = folder
    return out
