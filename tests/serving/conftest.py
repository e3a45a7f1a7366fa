"""Frozen artifacts trained for two steps on the tiny chat model (one per domain, one LoRA)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_chat_model_dir, tmp_path_factory) -> dict[str, Path]:
    from training.recipe import TrainConfig, train

    root = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name, data, method in (
        ("counseling", "synthetic-counseling:24", "qtha"),
        ("math", "synthetic-math:24", "qtha"),
        ("math-lora", "synthetic-math:24", "lora"),
    ):
        cfg = TrainConfig(
            model=str(tiny_chat_model_dir),
            data=data,
            method=method,
            r=2,
            layers=1,
            steps=2,
            batch_size=2,
            max_len=192,
            lr=1e-2,
            eval_every=0,
            save_every=0,
            out=str(root / name),
        )
        out[name] = Path(train(cfg, progress=False)["artifact"])
    return out
