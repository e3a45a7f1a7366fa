"""``qtha-adapters``: count parameters, verify frozen artifacts, print their circuits as OpenQASM.

qtha-adapters params --config CONFIG.json --r 8 --targets q_proj,v_proj [--param-budget 0.3] [--json]
qtha-adapters verify ARTIFACT [--public-key KEY.pub]
qtha-adapters keygen KEY                      (writes KEY, the private key, and KEY.pub)
qtha-adapters sign ARTIFACT --key KEY
qtha-adapters refreeze OLD_ARTIFACT NEW_DIR   (a format-1 artifact, after checking its manifest.json)
qtha-adapters qasm ARTIFACT [--module NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .config import DEFAULT_TARGET_MODULES, QTHAConfig

__all__ = ["count_params", "main"]


def count_params(
    config_path: str | Path,
    r: int,
    n_layers: int | None = None,
    targets: list[str] | None = None,
    variant: str = "ABC",
    bottleneck: int | None = None,
    param_budget: float | None = None,
) -> dict[str, Any]:
    """Trainable parameters of QTHA and of PEFT's LoRA (same r, same targets) for a model config.

    The model is built on the meta device: no weights are allocated or loaded. ``layouts`` lists, per
    adapted layer shape "d_in->d_out", the MPO bottleneck and bond dimension QTHA chose there.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from .layer import QTHALinear

    path = Path(config_path)
    if not path.is_file():
        raise ValueError(f"--config: file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if "model_type" not in raw:
        raise ValueError(f"--config {path}: field 'model_type' is missing (not a Hugging Face model config)")
    hf_config = AutoConfig.for_model(**raw)
    targets = targets or list(DEFAULT_TARGET_MODULES)

    def trainable(peft_config) -> int:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
        model = get_peft_model(model, peft_config)
        return sum(p.numel() for p in model.parameters() if p.requires_grad), model

    config = QTHAConfig(
        r=r,
        n_layers=n_layers,
        target_modules=targets,
        variant=variant,
        bottleneck=bottleneck,
        param_budget=param_budget,
    )
    qtha, model = trainable(config)
    lora, _ = trainable(LoraConfig(r=r, target_modules=targets))
    layouts: dict[str, dict[str, int]] = {}
    for module in model.modules():
        if isinstance(module, QTHALinear) and "default" in module.qtha_mpo_a:
            mpo = module.qtha_mpo_a["default"]
            bond = max(s[3] for s in module.qtha_mpo_b["default"].shapes)
            layouts[f"{module.in_features}->{module.out_features}"] = {
                "bottleneck": mpo.d_out,
                "bond_dim": bond,
            }
    return {
        "qtha_trainable": qtha,
        "lora_trainable": lora,
        "ratio": qtha / lora,
        "reduction_vs_lora": 1 - qtha / lora,
        "layouts": layouts,
    }


def _cmd_params(args: argparse.Namespace) -> int:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    result = count_params(
        args.config, args.r, args.layers, targets, args.variant, args.bottleneck, args.param_budget
    )
    result = {"config": str(args.config), "r": args.r, "targets": targets, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model config      {args.config}")
        print(f"targets, r        {','.join(targets)}, r={args.r}")
        print(f"QTHA trainable    {result['qtha_trainable']:,}")
        print(f"LoRA trainable    {result['lora_trainable']:,}")
        print(f"QTHA / LoRA       {result['ratio']:.1%}  ({result['reduction_vs_lora']:.1%} fewer)")
        for shape, layout in result["layouts"].items():
            print(
                f"  {shape:<14}  MPO bottleneck {layout['bottleneck']}, bond dimension {layout['bond_dim']}"
            )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .artifact import signer_key, verify

    manifest, blobs = verify(args.artifact, public_key=args.public_key)
    base = manifest["base_model"]
    signer = signer_key(args.artifact)
    signed = f"; signed by ed25519 key {signer[:16]}..." if signer else "; not signed"
    print(
        f"ok: {args.artifact} ({len(blobs)} files and the manifest verified{signed}; "
        f"{manifest['adapter']['method']} adapter for {base.get('name')} sha256 "
        f"{str(base.get('sha256'))[:12]}...)"
    )
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from .artifact import generate_key

    private, public = generate_key(args.key)
    print(f"private key {private} (keep it secret), public key {public} (give it to those who verify)")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from .artifact import sign

    key_hex = sign(args.artifact, args.key)
    print(f"signed: {args.artifact} (ed25519 key {key_hex[:16]}...)")
    return 0


def _cmd_refreeze(args: argparse.Namespace) -> int:
    from .artifact import refreeze

    out = refreeze(args.artifact, args.out)
    print(f"re-frozen: {out} (manifest of {args.artifact} taken as it is, now covered by its digest)")
    return 0


def _cmd_qasm(args: argparse.Namespace) -> int:
    from safetensors.torch import load

    from .artifact import WEIGHTS_FILE, module_qasm, verify

    _, blobs = verify(args.artifact)
    print(module_qasm(load(blobs[WEIGHTS_FILE]), args.module), end="")
    return 0


_ARTIFACT = ("artifact", {"help": "artifact directory"})

# subcommand -> (its help, its handler, its arguments as (name, add_argument options)), in --help order
_COMMANDS: dict[str, tuple[str, Any, list[tuple[str, dict[str, Any]]]]] = {
    "params": (
        "count trainable parameters of QTHA vs LoRA for a model config (no weights)",
        _cmd_params,
        [
            (
                "--config",
                {"required": True, "help": "a Hugging Face config.json (e.g. configs/hf/qwen2.5-7b.json)"},
            ),
            ("--r", {"type": int, "default": 8, "help": "rank = qubits (default 8)"}),
            ("--layers", {"type": int, "default": None, "help": "circuit layers (default r)"}),
            (
                "--targets",
                {
                    "default": ",".join(DEFAULT_TARGET_MODULES),
                    "help": f"comma-separated module names (default {','.join(DEFAULT_TARGET_MODULES)})",
                },
            ),
            (
                "--variant",
                {"default": "ABC", "choices": ["ABC", "AB", "BC"], "help": "adapter variant (default ABC)"},
            ),
            (
                "--bottleneck",
                {"type": int, "default": None, "help": "MPO bottleneck m (default: per-layer rule)"},
            ),
            (
                "--param-budget",
                {
                    "type": float,
                    "default": None,
                    "help": "size QTHA to at most this fraction of LoRA's parameters per layer, e.g. 0.3 "
                    "(default: off)",
                },
            ),
            ("--json", {"action": "store_true", "help": "print one JSON object"}),
        ],
    ),
    "verify": (
        "check every file of a frozen artifact, the manifest included",
        _cmd_verify,
        [
            _ARTIFACT,
            (
                "--public-key",
                {"default": None, "help": "require a signature by this ed25519 public key (PEM)"},
            ),
        ],
    ),
    "keygen": (
        "make an ed25519 key pair for signing artifacts",
        _cmd_keygen,
        [("key", {"help": "private key file to write (the public key goes to KEY.pub)"})],
    ),
    "sign": (
        "sign a frozen artifact's manifest (adds manifest.sig)",
        _cmd_sign,
        [
            _ARTIFACT,
            ("--key", {"required": True, "help": "ed25519 private key (PEM, from qtha-adapters keygen)"}),
        ],
    ),
    "refreeze": (
        "re-freeze an artifact of format 1 (no manifest digest)",
        _cmd_refreeze,
        [
            ("artifact", {"help": "the old artifact directory (read its manifest.json first)"}),
            ("out", {"help": "new artifact directory (must not exist)"}),
        ],
    ),
    "qasm": (
        "print the trained circuit of an artifact as OpenQASM",
        _cmd_qasm,
        [
            _ARTIFACT,
            (
                "--module",
                {"default": None, "help": "adapted module name (default: the first with a circuit)"},
            ),
        ],
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qtha-adapters", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, handler, arguments) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        for argument, options in arguments:
            p.add_argument(argument, **options)
        p.set_defaults(func=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, ImportError) as exc:  # user input problems: one line, no traceback
        print(f"qtha-adapters {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
