"""metrics.jsonl as the recipe writes it and the study reads it: a write torn by a kill is dropped,
any other bad line is an error naming the line."""

from __future__ import annotations

import json

import pytest

from training.metrics import METRICS_FILE, metrics_log, read_metrics, truncate_metrics

STEPS = [
    {"step": 1, "loss": 2.5, "lr": 0.1, "tokens_per_s": 10.0, "elapsed": 1.0},
    {"step": 2, "loss": 2.0, "lr": 0.05, "tokens_per_s": 11.0, "elapsed": 2.0},
    {"step": 2, "dev_loss": 2.2},
    {"step": 3, "loss": 1.5, "lr": 0.0, "tokens_per_s": 12.0, "elapsed": 3.0},
]


def _write(folder, records, tail: str = "") -> None:
    with metrics_log(folder) as log:
        for record in records:
            log(record)
    with (folder / METRICS_FILE).open("a") as f:
        f.write(tail)


def test_read_metrics_gives_the_training_and_dev_curves(tmp_path):
    _write(tmp_path, STEPS)
    metrics = read_metrics(tmp_path)
    assert metrics.records == STEPS
    assert metrics.train == [(1, 2.5), (2, 2.0), (3, 1.5)] and metrics.dev == [(2, 2.2)]


def test_a_torn_last_line_is_dropped_a_bad_line_elsewhere_is_an_error(tmp_path):
    _write(tmp_path, STEPS[:2], tail='{"step": 3, "lo')
    assert read_metrics(tmp_path).records == STEPS[:2]
    (tmp_path / METRICS_FILE).write_text(
        json.dumps(STEPS[0]) + '\n{"step": 2, "lo\n' + json.dumps(STEPS[1]) + "\n"
    )
    with pytest.raises(ValueError, match=rf"{METRICS_FILE}:2: not a JSON record"):
        read_metrics(tmp_path)
    (tmp_path / METRICS_FILE).write_text(json.dumps(STEPS[0]) + '\n{"step": 2, "lo\n')  # has its newline
    with pytest.raises(ValueError, match=":2: not a JSON record"):
        read_metrics(tmp_path)


def test_a_folder_without_metrics_has_none(tmp_path):
    assert read_metrics(tmp_path).records == []


def test_truncate_keeps_the_steps_up_to_the_checkpoint(tmp_path):
    _write(tmp_path, STEPS, tail='{"step": 4, "lo')
    truncate_metrics(tmp_path, 2)
    assert (tmp_path / METRICS_FILE).read_text() == "".join(json.dumps(r) + "\n" for r in STEPS[:3])


def test_a_log_that_does_not_write_leaves_no_file(tmp_path):
    with metrics_log(tmp_path, write=False) as log:
        log(STEPS[0])
    assert not (tmp_path / METRICS_FILE).exists()
