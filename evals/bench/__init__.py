"""Benchmarks that print figures: ``qtha-eval bench simulator|train-step|serve|device``."""

from __future__ import annotations


def check_bounds(command: str, bounds: dict[str, tuple[int, int]]) -> None:
    """Refuse a flag below its least value, ``{flag: (value, least)}``, before any model is loaded."""
    for flag, (value, least) in bounds.items():
        if value < least:
            raise ValueError(f"bench {command}: expected {flag} >= {least}; got {value}")
