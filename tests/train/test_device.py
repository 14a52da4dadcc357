"""Device correctness that a CPU can check (the CUDA runs are in tests/gpu/).

A static check: in sampling/, loss/, objectives/ and evaluation/nelbo.py every tensor factory names its device, taken from
its inputs (a ``*_like`` call inherits it), so nothing is silently made on the CPU next to a CUDA
denoiser. And the GPU knobs of training on the CPU: their validation, and bf16 autocast against float32
on a fixed batch.
"""
import ast
from pathlib import Path

import pytest
import torch

from helpers import assert_clean_error, micro_config, run_cli
from maskdiff.errors import MaskdiffError
from maskdiff.objectives import build_objective

SRC = Path(__file__).resolve().parents[2] / "src" / "maskdiff"
CHECKED = (sorted((SRC / "sampling").glob("*.py")) + sorted((SRC / "loss").glob("*.py")) + sorted((SRC / "objectives").glob("*.py"))
           + [SRC / "evaluation" / "nelbo.py"])
FACTORIES = {"zeros", "ones", "full", "empty", "arange", "rand", "randn", "randint", "randperm", "tensor", "as_tensor",
             "linspace", "logspace", "eye", "empty_strided", "Generator"}
# CPU on purpose: parameters made at construction, which move with their module.
ALLOWED = {("loss/genmd4.py", "LearnableExponents.__init__")}


def _factory_calls_without_device(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, scope):
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in FACTORIES
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"
                    and not any(k.arg == "device" for k in child.keywords)):
                found.append((scope, child.lineno, child.func.attr))
            visit(child, inner)

    visit(tree, "")
    return found


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(SRC)))
def test_every_tensor_factory_names_its_device(path):
    rel = str(path.relative_to(SRC))
    bad = [f"{rel}:{line} torch.{name} in {scope or 'module'}" for scope, line, name in _factory_calls_without_device(path)
           if (rel, scope) not in ALLOWED]
    assert not bad, "tensor factories without device= (take it from the inputs):\n" + "\n".join(bad)


def test_the_static_check_finds_a_cpu_tensor(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("import torch\ndef f(x):\n    return torch.zeros(3) + torch.ones(3, device=x.device) + torch.zeros_like(x)\n")
    assert _factory_calls_without_device(f) == [("f", 3, "zeros")]


def test_precision_and_compile_are_validated():
    for field, value, needle in [("precision", "fp16", "fp32, bf16"), ("compile", "yes", "auto, on, off")]:
        cfg = micro_config(**{field: value})
        with pytest.raises(MaskdiffError, match=needle):
            cfg.validate()


def test_bf16_autocast_loss_close_to_float32_on_a_fixed_batch():
    """bf16 autocast (the forward pass and the loss) against float32 on one fixed batch: within 2% (stated
    tolerance: bfloat16 keeps 8 mantissa bits; log-softmax and the weights stay float32/float64)."""
    from maskdiff.loss import low_discrepancy_times
    from maskdiff.step import autocast

    torch.manual_seed(0)
    cfg = micro_config()
    obj = build_objective(cfg, 27)
    with torch.no_grad():
        for p in obj.network.parameters():  # leave the zero initialisation (uniform mu makes every precision agree)
            p.add_(0.05 * torch.randn_like(p))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 27, (4, 32), generator=g)
    t = low_discrepancy_times(4, 0.3)
    noise = torch.rand((1, 4, 32), generator=g, dtype=torch.float64)
    with torch.no_grad():
        ref = obj.train_loss(x0, t, noise)[0].sum()
        with autocast("bf16", torch.device("cpu")):
            low = obj.train_loss(x0, t, noise)[0].sum()
    assert low.dtype == torch.float32
    assert abs(float(low) - float(ref)) <= 0.02 * abs(float(ref))


@pytest.mark.slow
def test_bf16_training_runs_on_cpu(tmp_path, plays):
    from maskdiff.train import train

    res = train(micro_config(steps=3, corpus=plays, precision="bf16"), tmp_path / "run", progress=False, log=lambda *a: None)
    assert res.step == 3 and res.last_loss is not None and res.last_loss == res.last_loss


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_device_cuda_without_a_gpu_is_a_clean_error(tmp_path):
    proc = run_cli("eval", tmp_path / "none", "--device", "cuda")
    assert_clean_error(proc, "no GPU")
