"""The packages' imports point one way (DESIGN.md), and PennyLane is imported in one place."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("quantum_adapters", "training", "evals", "serving")
# who may import whom (besides itself); everything else between our packages is forbidden
ALLOWED = {
    "quantum_adapters": set(),
    "training": {"quantum_adapters"},
    "serving": {"quantum_adapters"},
    "evals": {"quantum_adapters", "training", "serving"},
}


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    assert _sources(package), f"{package} has no sources"
    bad = []
    for path in _sources(package):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "\n".join(bad)


def test_pennylane_is_imported_in_one_place():
    users = sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in _sources(package)
        if any(m.split(".")[0] == "pennylane" for m, _ in _imports(path))
    )
    assert users == ["quantum_adapters/pennylane_backend.py"]


def test_every_shipped_yaml_config_loads():
    from training.cli import _load_yaml
    from training.recipe import TrainConfig

    files = sorted(f for f in (ROOT / "configs").rglob("*.yaml") if not f.name.startswith("study"))
    assert len(files) >= 8
    for f in files:
        values = _load_yaml(str(f))
        if "steps" in values and values.get("epochs") is not None:
            values["steps"] = None
        cfg = TrainConfig(**values)
        assert cfg.method in ("qtha", "lora"), f


def test_study_yaml_loads_into_train_configs(tmp_path):
    from evals.study import load_config, plan
    from training.recipe import TrainConfig

    for file in sorted((ROOT / "configs").glob("study*.yaml")):
        cfg = load_config(str(file), check_data=False)
        runs, _ = plan(cfg, tmp_path)
        assert runs, file
        for run in runs:
            if run.values:  # base evaluations train nothing
                TrainConfig(**{**run.values, "lr": run.values["lr"] or 1e-3}, out="x")
