"""The math layer imports nothing from config, data, train, networks or cli: the import arrows point one way."""
import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maskdiff"
MATH = ["schedules.py", "process.py", "denoiser.py", "exact.py"] + [f"{d}/{p.name}" for d in ("sampling", "loss") for p in (SRC / d).glob("*.py")]
FORBIDDEN = ("maskdiff.config", "maskdiff.presets", "maskdiff.data", "maskdiff.train", "maskdiff.networks", "maskdiff.cli", "maskdiff.pipeline", "maskdiff.evaluate")


def imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("rel", MATH)
def test_math_layer_imports(rel):
    bad = [m for m in imports(SRC / rel) if m.startswith(FORBIDDEN)]
    assert not bad, f"{rel} imports {bad}"


def test_networks_hold_architecture_only():
    for path in (SRC / "networks").glob("*.py"):
        bad = [m for m in imports(path) if m.startswith("maskdiff.")]
        assert not bad, f"{path.name} imports {bad}"


def test_no_pickle_anywhere():
    """No module loads with pickle or torch.load."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "torch.load(" not in text, path
