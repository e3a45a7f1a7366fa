"""``qtha-eval bench serve`` end to end on the tiny chat model (what it reports, not how fast)."""

from __future__ import annotations

import json

from evals.cli import main as eval_main


def test_bench_serve_reports_every_figure(tiny_chat_model_dir, capsys):
    args = ["bench", "serve", "--model", str(tiny_chat_model_dir), "--r", "3", "--layers", "2"]
    assert eval_main([*args, "--tokens", "3", "--rounds", "2", "--clients", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["qubits"], result["layers"], result["tokens"], result["rounds"]) == (3, 2, 3, 2)
    assert result["base_tok_s"] > 0 and result["qtha_tok_s"] > 0
    low, median, high = result["ratio_quartiles"]
    assert low <= median <= high and result["ratio"] == median
    assert result["ttft_base_s"] > 0 and result["ttft_qtha_s"] > 0
    concurrent = result["concurrent"]
    assert concurrent["clients"] == 2 and 0 < concurrent["completion_tokens"] <= 2 * 3
    assert concurrent["tok_s"] > 0


def test_bench_serve_rejects_zero_rounds(tiny_chat_model_dir, capsys):
    code = eval_main(["bench", "serve", "--model", str(tiny_chat_model_dir), "--rounds", "0"])
    assert code != 0
    assert "expected --rounds >= 1; got 0" in capsys.readouterr().err
