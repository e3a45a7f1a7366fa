"""The benchmarks end to end on the tiny chat model (what they report, not how fast), and their bad flags."""

from __future__ import annotations

import json

import pytest

import quantum_adapters._kernel as kernel_module
from evals.bench.simulator import circuit_flops
from evals.cli import main as eval_main


def test_bench_serve_reports_every_figure(tiny_chat_model_dir, capsys):
    args = ["bench", "serve", "--model", str(tiny_chat_model_dir), "--r", "3", "--layers", "2"]
    assert eval_main([*args, "--tokens", "3", "--rounds", "2", "--clients", "2", "--lora", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (result["qubits"], result["layers"], result["tokens"], result["rounds"]) == (3, 2, 3, 2)
    assert result["base_tok_s"] > 0 and result["qtha_tok_s"] > 0
    low, median, high = result["ratio_quartiles"]
    assert low <= median <= high and result["ratio"] == median
    assert result["ttft_base_s"] > 0 and result["ttft_qtha_s"] > 0
    assert result["lora_tok_s"] > 0 and result["lora_ratio"] > 0 and result["qtha_vs_lora"] > 0
    concurrent = result["concurrent"]
    assert concurrent["clients"] == 2 and 0 < concurrent["completion_tokens"] <= 2 * 3
    assert concurrent["tok_s"] > 0


def test_bench_train_step_runs_both_methods_on_the_tiny_model(tiny_chat_model_dir):
    from evals.bench import train_step

    result = train_step.run(
        str(tiny_chat_model_dir),
        r=2,
        layers=1,
        variant="BC",
        steps=1,
        warmup=0,
        batch=1,
        seq=16,
        repeats=3,
        pairs=5,
    )
    assert result["step_s_qtha"] > 0 and result["step_s_lora"] > 0 and result["ratio"] > 0
    # time: five interleaved pairs of steps in one process, the median of their ratios and its range
    assert result["pairs"] == 5 and len(result["ratios"]) == 5
    assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
    assert result["ratio"] == sorted(result["ratios"])[2]
    # memory (and the per-process time ratio): three pairs of processes, medians over the pairs
    assert result["repeats"] == 3 and len(result["ratios_processes"]) == len(result["memory_ratios"]) == 3
    assert result["ratio_processes"] == sorted(result["ratios_processes"])[1]
    assert result["memory_ratio"] == sorted(result["memory_ratios"])[1]
    # the workers set the allocator as qtha-train does, and count the page faults of their timed steps
    assert result["keep_freed_memory"] is True
    assert result["minor_faults_per_step_qtha"] >= 0 and result["minor_faults_per_step_lora"] >= 0
    assert result["memory_ratio_min"] <= result["memory_ratio"] <= result["memory_ratio_max"]
    # trainable parameters by hand, for q_proj (64 -> 64) and v_proj (64 -> 32, two KV heads of 16) of
    # both decoder layers. LoRA r = 2: r (d_in + d_out) = 2 x 128 + 2 x 96 per layer.
    assert result["trainable_lora"] == 2 * (2 * (64 + 64) + 2 * (64 + 32)) == 896
    # QTHA BC, r = 2, one circuit layer: W_A d_in x r, W_B r x d_out, CW and QW r x r, circuit 1 x 4 x r.
    assert result["trainable_qtha"] == 2 * ((64 * 2 + 2 * 64 + 8 + 8) + (64 * 2 + 2 * 32 + 8 + 8)) == 960
    assert result["peak_mb_qtha"] > 0
    # the circuits' share of the step: time inside them, and what they keep for backward (1 x 16 rows):
    # the kernel recomputes the final states in its backward pass, so it keeps less than they would take;
    # the torch simulator keeps them
    assert 0 < result["circuit_s"] and 0 < result["circuit_share"] < 1
    n_modules = 2 * 2  # q_proj and v_proj of the tiny model's two decoder layers
    final_states = n_modules * 16 * 2 * 2**2 * 4  # (rows, 2, 2^r) float32
    saved = result["circuit_saved_mb"] * 2**20
    assert 0 < saved < final_states if kernel_module.load() is not None else saved >= final_states
    assert 0 < result["circuit_saved_share"] < 1


def test_bench_simulator_reports_its_rate_next_to_the_matmul_rate(capsys):
    args = [
        "bench",
        "simulator",
        "--qubits",
        "4",
        "--layers",
        "2",
        "--rows",
        "16",
        "--repeats",
        "1",
        "--json",
    ]
    assert eval_main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["max_abs_diff"] < 1e-5
    assert result["fast_gflops"] > 0 and result["matmul_gflops"] > 0 and result["torch_ops_s"] > 0
    assert result["gflop"] == pytest.approx(16 * circuit_flops(4, 2) / 1e9)


def test_circuit_flops_counts_the_kernels_arithmetic():
    # n = 2, L = 1: forward 12 * 1 * 3 * 4 = 144; backward 288 + 3 RY layers x 4 * 2 * 4 + 2 phases x 16
    assert circuit_flops(2, 1) == 144 + 288 + 96 + 32


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("serve", ["--rounds", "0"], "expected --rounds >= 1; got 0"),
        ("serve", ["--tokens", "0"], "expected --tokens >= 1; got 0"),
        ("serve", ["--clients", "-1"], "expected --clients >= 1; got -1"),
        ("serve", ["--r", "1"], "expected --r >= 2; got 1"),
        (
            "serve",
            ["--artifact", "/nonexistent/art"],
            "artifact not found: /nonexistent/art is not a directory",
        ),
        ("train-step", ["--steps", "0"], "expected --steps >= 1; got 0"),
        ("train-step", ["--r", "1"], "expected --r >= 2; got 1"),
        ("train-step", ["--warmup", "-1"], "expected --warmup >= 0; got -1"),
        ("train-step", ["--seq", "1"], "expected --seq >= 2; got 1"),
        ("train-step", ["--repeats", "0"], "expected --repeats >= 1; got 0"),
        ("train-step", ["--pairs", "0"], "expected --pairs >= 1; got 0"),
        ("simulator", ["--qubits", "1"], "expected --qubits >= 2; got 1"),
        ("simulator", ["--layers", "0"], "expected --layers >= 1; got 0"),
        ("simulator", ["--rows", "0"], "expected --rows >= 1; got 0"),
        ("simulator", ["--repeats", "0"], "expected --repeats >= 1; got 0"),
    ],
)
def test_benchmarks_refuse_bad_flags_before_loading_anything(
    tiny_chat_model_dir, capsys, command, args, message
):
    model = [] if command == "simulator" else ["--model", str(tiny_chat_model_dir)]
    assert eval_main(["bench", command, *model, *args]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bench_serve_concurrency_reports_every_level(tiny_chat_model_dir, capsys):
    args = [
        "bench",
        "serve",
        "--model",
        str(tiny_chat_model_dir),
        "--r",
        "2",
        "--layers",
        "1",
        "--tokens",
        "3",
    ]
    assert eval_main([*args, "--rounds", "2", "--concurrency", "1,3", "--mixed", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for mode in ("single", "mixed"):
        rows = result["concurrency"][mode]
        assert [row["clients"] for row in rows] == [1, 3]
        for row in rows:
            assert row["tok_s"] > 0 and 0 < row["ttft_p50_s"] <= row["ttft_p95_s"]
            assert 0 < row["tpot_p50_s"] <= row["tpot_p95_s"]
            low, high = row["speedup_range"]
            assert low <= row["speedup"] <= high
    single = result["concurrency"]["single"][0]
    assert single["speedup"] == 1.0 and single["speedup_range"] == [1.0, 1.0]
    assert set(result["mixed_vs_single"]) == set(result["mixed_vs_single_range"]) == {"1", "3"}
    assert result["generate_single_tok_s"] > 0
    assert 0 < result["reused_prompt_share"] < 1  # the system turn, never a whole prompt
    assert eval_main([*args, "--rounds", "1", "--concurrency", "2"]) == 0
    assert "x1.00 [1.00-1.00]" in capsys.readouterr().out
    assert eval_main([*args, "--concurrency", "4,x"]) != 0
    assert "expected --concurrency as integers >= 1 separated by commas; got '4,x'" in capsys.readouterr().err


def test_bench_serve_speedups_are_medians_of_per_round_ratios():
    """Each round's run against the same round's reference (seconds apart), not medians against medians:
    here the rounds ran at 10 and 30 tok/s against references of 5 and 10."""
    from evals.bench.serve import _paired

    assert _paired([{"tok_s": 10.0}, {"tok_s": 30.0}], [5.0, 10.0]) == (2.5, [2.0, 3.0])
