"""Benchmarks that print figures: ``qtha-eval bench simulator|train-step|serve|device``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def check_bounds(command: str, bounds: dict[str, tuple[int, int]]) -> None:
    """Refuse a flag below its least value, ``{flag: (value, least)}``, before any model is loaded."""
    for flag, (value, least) in bounds.items():
        if value < least:
            raise ValueError(f"bench {command}: expected {flag} >= {least}; got {value}")


def add_circuit_arguments(
    p: argparse.ArgumentParser, *, qubits: int, layers: int, rows: int, rows_help: str
) -> None:
    """``--qubits``, ``--layers``, ``--rows``: the circuit a circuit benchmark runs and how many inputs
    it feeds it (the defaults differ: the simulator times a training-sized batch, a device a few rows)."""
    p.add_argument(
        "--qubits", type=int, default=qubits, help=f"circuit qubits = adapter rank r (default {qubits})"
    )
    p.add_argument("--layers", type=int, default=layers, help=f"circuit layers L (default {layers})")
    p.add_argument("--rows", type=int, default=rows, help=f"{rows_help} (default {rows})")


def add_command(
    subparsers: Any,
    name: str,
    help_text: str,
    command: Callable[[argparse.Namespace], int],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """``qtha-eval bench NAME``, run by ``command``, with the ``--json`` flag every benchmark takes;
    returns the sub-command's parser for the benchmark's own flags."""
    p = subparsers.add_parser(name, help=help_text, description=description)
    p.add_argument("--json", action="store_true", help="one JSON object as the last line")
    p.set_defaults(func=command)
    return p
