"""Derived: a value built from weights is reused until a weight is written, replaced, or asked in another form."""

from __future__ import annotations

import torch

from quantum_adapters._derived import Derived


def test_rebuilt_exactly_when_a_tensor_or_the_extra_key_changes():
    a, b = torch.zeros(3), torch.ones(2)
    derived: Derived[float] = Derived()
    builds = []

    def build() -> float:
        builds.append(1)
        return float(a.sum() + b.sum())

    assert derived.get([a, b], build) == 2.0
    assert derived.get([a, b], build) == 2.0 and len(builds) == 1  # unchanged: reused
    a.add_(1.0)  # written in place: its version moves
    assert derived.get([a, b], build) == 5.0 and len(builds) == 2
    b.data = torch.full((2,), 3.0)  # replaced: its storage moves
    assert derived.get([a, b], build) == 9.0 and len(builds) == 3
    assert derived.get([a, b], build, torch.float64) == 9.0 and len(builds) == 4  # another form asked
    assert derived.get([a, b], build, torch.float64) == 9.0 and len(builds) == 4
