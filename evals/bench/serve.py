"""``qtha-eval bench serve``: decoding speed with a QTHA adapter against the base model.

Same prompts, same lengths: every prompt decodes exactly ``--tokens`` tokens greedily
(``min_new_tokens`` = ``max_new_tokens``) through the base model and with the adapter, whose circuit runs
once per generated token per adapted module. The two are interleaved prompt by prompt and repeated
``--rounds`` times (the order flips every round). ``ratio`` is the median over those base/adapter pairs
of base seconds / adapter seconds: on a shared or throttled CPU speed drifts by tens of percent within
a minute, which a base-then-adapter pass would book as a difference between them, while the two runs of
a pair are seconds apart. ``base_tok_s``/``qtha_tok_s`` are totals over all runs.

Also: time to first streamed text through the serving path (engine + safety + routing; the safety layer
releases whole sentences, so this is the first sentence or the 8-token limit, whichever comes first), and
throughput of ``--clients`` concurrent clients against a real uvicorn server on a loopback port (the
server runs one generation at a time, as on CPU).

``--concurrency 1,4,8,16``: instead, continuous batching. For each level c, c requests (the prompts in
turn, exactly ``--tokens`` greedy tokens each) are submitted at once to the engine's scheduler, the path
every API request takes. Each request is a different user: its message begins ``(user N)``, N counting
every request of the run, so the scheduler's prefix store can reuse only what distinct users' prompts
share (the chat template's system turn; ``reused_prompt_share`` says how much), never a whole repeated
prompt; reported per level: aggregate tokens/s (all tokens / wall time), p50/p95 time
to first token, p50/p95 time per output token (after the first) (medians over ``--rounds``), and the
speed-up over the first level: the median over rounds of each round's own ratio, with its range
(``speedup_range``). A round runs every level once, in reversed order every other round, so the runs
a ratio compares are seconds apart and drift of the machine's speed cancels instead of deciding the
figure. ``--mixed`` also runs every level with the rows spread over two adapters and the base model,
each right beside the single-adapter run of its level, and reports mixed / single per level the same
way (median of per-round ratios, ``mixed_vs_single_range``).
One stream through ``model.generate`` (the engine's path before batching) is timed in the same rounds
as the single-stream reference, from the main thread (timed on a thread of its own that then exits, it made
the scheduler's later steps 2-4x slower on the loaded machine, measured).

Without ``--artifact`` an untrained QTHA adapter (``--r``, ``--layers``) is frozen into a temporary
folder: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import add_command, check_bounds

__all__ = ["register", "run"]

PROMPTS = [
    "A baker makes 24 muffins and sells 17. How many are left?",
    "I have been feeling anxious before every exam. What can I do?",
    "Explain in two sentences why the sky is blue.",
    "Tom has 3 boxes of 12 pencils and gives away 9. How many pencils does he have?",
]


def _fresh_artifact(model: str, r: int, layers: int, folder: Path, method: str = "qtha") -> Path:
    """An untrained QTHA (or, ``method='lora'``, PEFT LoRA) adapter on q_proj and v_proj, frozen."""
    from peft import LoraConfig, get_peft_model

    from quantum_adapters import QTHAConfig
    from quantum_adapters.artifact import freeze
    from quantum_adapters.config import DEFAULT_TARGET_MODULES
    from quantum_adapters.models import load_base_model

    base, _, source = load_base_model(model)
    if method == "lora":
        config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(DEFAULT_TARGET_MODULES))
    else:
        config = QTHAConfig(r=r, n_layers=layers, init_seed=0)
    return freeze(
        get_peft_model(base, config),
        folder / method,
        base=source,
        training={"note": "untrained, for benchmarks"},
    )


@contextmanager
def _adapter(model: str, artifact: str | None, r: int, layers: int | None) -> Iterator[tuple[Path, Path]]:
    """``(the artifact to serve, a scratch folder)``: ``artifact`` if given (refused if it is no
    folder), else an untrained QTHA adapter of ``r`` qubits and ``layers`` layers (default ``r``)
    frozen into the scratch folder, which is removed afterwards."""
    if artifact is not None and not Path(artifact).is_dir():
        raise ValueError(f"bench serve: artifact not found: {artifact} is not a directory")
    from serving.batching import on_own_thread

    with tempfile.TemporaryDirectory() as tmp:
        if artifact is None:  # on a thread that ends, so that this one does no torch work (serving.batching)
            yield on_own_thread(lambda: _fresh_artifact(model, r, layers or r, Path(tmp))), Path(tmp)
        else:
            yield Path(artifact), Path(tmp)


def _decode_s(engine: Any, name: str, prompt: str, tokens: int) -> tuple[int, float]:
    """Greedy decode of exactly ``tokens`` tokens with ``model.generate``: (tokens generated, seconds).
    It runs on the engine's scheduler thread, as the served requests do (serving.batching's docstring:
    torch on a second thread would slow both)."""
    import torch

    ids = torch.tensor([engine.prompt_ids([{"role": "user", "content": prompt}], name)])

    def decode() -> tuple[int, float]:
        with engine._use(name) as model, torch.inference_mode():
            t0 = time.perf_counter()
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=engine.tokenizer.pad_token_id,
            )
            return out.shape[1] - ids.shape[1], time.perf_counter() - t0

    return engine.scheduler.call(decode)


def _decode_rounds(engine: Any, names: list[str], tokens: int, rounds: int) -> list[dict[str, float]]:
    """Per round and prompt, the seconds each model in ``names`` takes; prompt by prompt, alternating the
    order every round. Every call decodes exactly ``tokens`` tokens."""
    out = []
    for r in tqdm(range(rounds), desc="decode rounds", leave=False):
        for prompt in PROMPTS:
            timing = {}
            for name in names if r % 2 == 0 else names[::-1]:
                n, timing[name] = _decode_s(engine, name, prompt, tokens)
                if n != tokens:
                    raise RuntimeError(f"bench serve: {name} decoded {n} tokens, expected {tokens}")
            out.append(timing)
    return out


def _ttft(service: Any, model: str) -> float:
    from serving.sampling import SamplingParams

    times = []
    for prompt in PROMPTS:
        t0 = time.perf_counter()
        for part in service.stream(
            [{"role": "user", "content": prompt}], model, SamplingParams(max_tokens=8)
        ):
            if isinstance(part, str) and part:
                times.append(time.perf_counter() - t0)
                break
    return statistics.median(times)


def _concurrent(service: Any, model: str, clients: int, tokens: int) -> dict[str, float]:
    import httpx
    import uvicorn

    from serving.app import create_app
    from serving.settings import Settings

    app = create_app(Settings(max_queue=max(8, clients), request_timeout_s=600), service=service, ui=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    counts: list[int] = []

    def client(i: int) -> None:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "max_tokens": tokens,
            "temperature": 0,
        }
        with httpx.Client(timeout=600) as c:
            r = c.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            r.raise_for_status()
            counts.append(r.json()["usage"]["completion_tokens"])

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    server.should_exit = True
    thread.join(timeout=10)
    return {
        "clients": clients,
        "completion_tokens": sum(counts),
        "seconds": wall,
        "tok_s": sum(counts) / wall,
    }


def _timed_request(engine: Any, prompt: str, adapter: str, tokens: int, start: float) -> dict[str, float]:
    """One request through the scheduler, exactly ``tokens`` tokens: its TTFT, TPOT, token count and
    prompt length."""
    from serving.batching import Request
    from serving.sampling import SamplingParams

    ids = engine.prompt_ids([{"role": "user", "content": prompt}], adapter)
    req = engine.scheduler.submit(Request(ids, adapter, SamplingParams(max_tokens=tokens, ignore_eos=True)))
    first = None
    while True:
        item = req.out.get()
        if isinstance(item, BaseException):
            raise item
        now = time.perf_counter()
        if first is None:
            first = now
        if isinstance(item, dict):
            n = item["completion_tokens"]
            tpot = (now - first) / max(1, n - 1)
            return {"ttft": first - start, "tpot": tpot, "tokens": n, "prompt": len(ids)}


def _level(
    engine: Any, adapters: list[str], clients: int, tokens: int, users: Iterator[int]
) -> dict[str, float]:
    """``clients`` requests submitted at once (row i uses ``adapters[i % len(adapters)]``), each from
    the next of ``users``. Returns tokens/s, TTFT/TPOT percentiles and ``prompt_tokens`` (all rows)."""
    results: list[dict[str, float]] = [{}] * clients
    prompts = [f"(user {next(users)}) {PROMPTS[i % len(PROMPTS)]}" for i in range(clients)]
    start = time.perf_counter()

    def client(i: int) -> None:
        results[i] = _timed_request(engine, prompts[i], adapters[i % len(adapters)], tokens, start)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    if any(r.get("tokens") != tokens for r in results):
        raise RuntimeError(f"bench serve: a request decoded {[r.get('tokens') for r in results]} tokens")
    return {
        "tok_s": clients * tokens / wall,
        **_percentiles(results),
        "prompt_tokens": sum(r["prompt"] for r in results),
    }


def _percentiles(results: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in ("ttft", "tpot"):
        values = sorted(r[key] for r in results)
        for q in (50, 95):
            out[f"{key}_p{q}_s"] = values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]
    return out


def run_concurrency(
    model: str = "smollm2-135m-instruct",
    artifact: str | None = None,
    r: int = 4,
    layers: int | None = None,
    tokens: int = 32,
    levels: tuple[int, ...] = (1, 4, 8, 16),
    rounds: int = 3,
    mixed: bool = False,
) -> dict[str, Any]:
    """Continuous batching at each concurrency level (see the module docstring)."""
    from serving.engine import BASE, Engine

    check_bounds("serve", {"--tokens": (tokens, 1), "--rounds": (rounds, 1), "--r": (r, 2)})
    with _adapter(model, artifact, r, layers) as (path, _):
        adapters = {"adapter": path}
        if mixed:  # a second adapter: the same files under another name run as a separate adapter
            adapters["adapter2"] = path
        engine = Engine(model, adapters, max_batch=max(levels))
        modes = {"single": ["adapter"], **({"mixed": ["adapter", "adapter2", BASE]} if mixed else {})}
        users = itertools.count()
        for names in modes.values():  # warm-up: caches, allocator pools, a batched step
            _level(engine, names, 2, 4, users)
        _decode_s(engine, "adapter", PROMPTS[0], 4)
        runs: dict[str, dict[int, list[dict[str, float]]]] = {m: {c: [] for c in levels} for m in modes}
        generate_s: list[float] = []
        reused0 = engine.scheduler.reused_tokens
        for k in tqdm(range(rounds), desc="concurrency rounds", leave=False):
            n, seconds = _decode_s(engine, "adapter", PROMPTS[k % len(PROMPTS)], tokens)
            generate_s.append(seconds / n)
            for c in levels if k % 2 == 0 else levels[::-1]:
                for mode in modes if (k + c) % 2 == 0 else list(modes)[::-1]:
                    runs[mode][c].append(_level(engine, modes[mode], c, tokens, users))
        reused = engine.scheduler.reused_tokens - reused0
        circuit = engine.adapters["adapter"].manifest.get("circuit", {})
    table = {
        mode: [
            {
                "clients": c,
                **{
                    key: statistics.median(x[key] for x in runs[mode][c])
                    for key in runs[mode][c][0]
                    if key != "prompt_tokens"
                },
            }
            for c in levels
        ]
        for mode in modes
    }
    single = {row["clients"]: row for row in table["single"]}
    reference = [x["tok_s"] for x in runs["single"][levels[0]]]  # per round
    for mode in table:
        for row in table[mode]:
            row["speedup"], row["speedup_range"] = _paired(runs[mode][row["clients"]], reference)
    out: dict[str, Any] = {
        "model": model,
        "tokens": tokens,
        "rounds": rounds,
        "qubits": circuit.get("n_qubits"),
        "layers": circuit.get("n_layers"),
        "generate_single_tok_s": 1.0 / statistics.median(generate_s),
        "reused_prompt_share": reused
        / sum(x["prompt_tokens"] for by_level in runs.values() for xs in by_level.values() for x in xs),
        "concurrency": table,
    }
    if 1 in single:
        out["engine_single_vs_generate"] = single[1]["tok_s"] * statistics.median(generate_s)
    if mixed:
        paired = {c: _paired(runs["mixed"][c], [x["tok_s"] for x in runs["single"][c]]) for c in levels}
        out["mixed_vs_single"] = {c: ratio for c, (ratio, _) in paired.items()}
        out["mixed_vs_single_range"] = {c: spread for c, (_, spread) in paired.items()}
    return out


def _paired(runs: list[dict[str, float]], reference: list[float]) -> tuple[float, list[float]]:
    """Median and [min, max] over rounds of ``tok_s`` of each round's run / that round's reference."""
    ratios = [x["tok_s"] / ref for x, ref in zip(runs, reference, strict=True)]
    return statistics.median(ratios), [min(ratios), max(ratios)]


def run(
    model: str = "smollm2-135m-instruct",
    artifact: str | None = None,
    r: int = 4,
    layers: int | None = None,
    tokens: int = 32,
    clients: int = 8,
    rounds: int = 3,
    lora: bool = False,
) -> dict[str, Any]:
    from serving.batching import on_own_thread
    from serving.engine import BASE, Engine
    from serving.service import ChatService

    check_bounds(
        "serve", {"--tokens": (tokens, 1), "--clients": (clients, 1), "--rounds": (rounds, 1), "--r": (r, 2)}
    )
    with _adapter(model, artifact, r, layers) as (path, tmp):
        adapters = {"adapter": path}
        if lora:  # PEFT LoRA served unmerged (same r, q_proj + v_proj): the classical reference
            # (not named 'lora': PEFT warns that a name inside its 'lora_' prefix may reinitialise weights)
            adapters["classical"] = on_own_thread(lambda: _fresh_artifact(model, r, 0, tmp, method="lora"))
        engine = Engine(model, adapters)
        names = [BASE, *adapters]
        for name in names:  # warm-up: first calls build caches and allocator pools
            _decode_s(engine, name, PROMPTS[0], 4)
        pairs = _decode_rounds(engine, names, tokens, rounds)
        # a pair's runs are seconds apart, so its ratio is immune to the drift between pairs
        ratios = [p[BASE] / p["adapter"] for p in pairs]
        service = ChatService(engine)
        ttft_base, ttft_qtha = _ttft(service, BASE), _ttft(service, "adapter")
        conc = _concurrent(service, "adapter", clients, tokens)
        circuit = engine.adapters["adapter"].manifest.get("circuit", {})
    return {
        "model": model,
        "tokens": tokens,
        "prompts": len(PROMPTS),
        "rounds": rounds,
        "qubits": circuit.get("n_qubits"),
        "layers": circuit.get("n_layers"),
        "base_tok_s": tokens * len(pairs) / sum(p[BASE] for p in pairs),
        "qtha_tok_s": tokens * len(pairs) / sum(p["adapter"] for p in pairs),
        "ratio": statistics.median(ratios),
        "ratio_quartiles": [float(q) for q in statistics.quantiles(ratios, n=4)]
        if len(ratios) > 1
        else ratios,
        "ttft_base_s": ttft_base,
        "ttft_qtha_s": ttft_qtha,
        "concurrent": conc,
        **(_lora_figures(pairs, tokens, BASE) if lora else {}),
    }


def _lora_figures(pairs: list[dict[str, float]], tokens: int, base: str) -> dict[str, Any]:
    ratios = [p[base] / p["classical"] for p in pairs]
    return {
        "lora_tok_s": tokens * len(pairs) / sum(p["classical"] for p in pairs),
        "lora_ratio": statistics.median(ratios),
        "qtha_vs_lora": statistics.median(p["classical"] / p["adapter"] for p in pairs),
    }


def _levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(x) for x in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1:
        raise ValueError(
            f"bench serve: expected --concurrency as integers >= 1 separated by commas; got {text!r}"
        )
    return levels


def _cmd_concurrency(args: argparse.Namespace) -> int:
    levels = _levels(args.concurrency)
    result = run_concurrency(
        args.model, args.artifact, args.r, args.layers, args.tokens, levels, args.rounds, args.mixed
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"continuous batching, {result['model']}, {result['tokens']} greedy tokens per request, "
        f"median of {result['rounds']} rounds ({result['qubits']} qubits, {result['layers']} layers); "
        "speed-ups: median of per-round ratios [range]"
    )
    print(
        f"  one stream through model.generate: {result['generate_single_tok_s']:.1f} tok/s; "
        f"prompt tokens reused from the prefix store: {result['reused_prompt_share']:.0%}"
    )
    for mode, rows in result["concurrency"].items():
        for row in rows:
            c = row["clients"]
            extra = (
                f"   mixed/single {result['mixed_vs_single'][c]:.2f} "
                f"[{result['mixed_vs_single_range'][c][0]:.2f}-{result['mixed_vs_single_range'][c][1]:.2f}]"
                if mode == "mixed"
                else ""
            )
            low, high = row["speedup_range"]
            print(
                f"  {mode:6s} {c:3d} clients: {row['tok_s']:6.1f} tok/s (x{row['speedup']:.2f} [{low:.2f}-{high:.2f}])  "
                f"TTFT p50/p95 {row['ttft_p50_s'] * 1000:.0f}/{row['ttft_p95_s'] * 1000:.0f} ms  "
                f"TPOT p50/p95 {row['tpot_p50_s'] * 1000:.0f}/{row['tpot_p95_s'] * 1000:.0f} ms{extra}"
            )
    return 0


def _cmd(args: argparse.Namespace) -> int:
    if args.concurrency is not None:
        return _cmd_concurrency(args)
    result = run(
        args.model, args.artifact, args.r, args.layers, args.tokens, args.clients, args.rounds, args.lora
    )
    if args.json:
        print(json.dumps(result))
    else:
        c = result["concurrent"]
        print(
            f"decode, {result['model']}, {result['prompts']} prompts x {result['tokens']} tokens, greedy, "
            f"{result['rounds']} rounds"
        )
        print(
            f"  base  {result['base_tok_s']:.1f} tok/s   first streamed text {result['ttft_base_s'] * 1000:.0f} ms"
        )
        print(
            f"  QTHA  {result['qtha_tok_s']:.1f} tok/s   first streamed text {result['ttft_qtha_s'] * 1000:.0f} ms"
            f"   ({result['qubits']} qubits, {result['layers']} layers)"
        )
        q = result["ratio_quartiles"]
        print(
            f"  ratio {result['ratio']:.2f} (median over {result['rounds'] * result['prompts']} base/QTHA pairs; "
            f"quartiles {q[0]:.2f}-{q[-1]:.2f})"
        )
        if "lora_tok_s" in result:
            print(
                f"  LoRA  {result['lora_tok_s']:.1f} tok/s (PEFT, unmerged)   ratio {result['lora_ratio']:.2f}; "
                f"QTHA / LoRA {result['qtha_vs_lora']:.2f}"
            )
        print(
            f"  {c['clients']} concurrent clients over HTTP: {c['tok_s']:.1f} tok/s "
            f"({c['completion_tokens']} tokens in {c['seconds']:.1f} s)"
        )
    return 0


def register(subparsers: Any) -> None:
    p = add_command(
        subparsers, "serve", "decoding tok/s with a QTHA adapter vs the base model, TTFT, 8 clients", _cmd
    )
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model (default: embedded SmolLM2-135M)"
    )
    p.add_argument("--artifact", default=None, help="a frozen QTHA artifact (default: an untrained one)")
    p.add_argument("--r", type=int, default=4, help="qubits of the untrained adapter (default 4)")
    p.add_argument(
        "--layers", type=int, default=None, help="circuit layers of the untrained adapter (default r)"
    )
    p.add_argument("--tokens", type=int, default=32, help="tokens decoded per prompt (default 32)")
    p.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of interleaved base/adapter runs of every prompt (default 3)",
    )
    p.add_argument(
        "--lora",
        action="store_true",
        help="also time an unmerged PEFT LoRA adapter (same r, q_proj + v_proj) in every round",
    )
    p.add_argument(
        "--concurrency",
        default=None,
        help="continuous batching instead: comma-separated client counts, e.g. 1,4,8,16",
    )
    p.add_argument(
        "--mixed",
        action="store_true",
        help="with --concurrency: also spread the rows over two adapters and the base model",
    )
