"""The CPU speed changes keep results, and the side-by-side benchmark refuses bad input clearly."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import maskdiff
from maskdiff.denoiser import FunctionDenoiser, SUBSDenoiser
from maskdiff.networks.transformer import DiT, RotaryEmbedding
from maskdiff.sampling import first_hitting_sample

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_rotary_is_the_pairwise_rotation():
    """Each channel pair (x_2i, x_2i+1) turns by position * frequency: the textbook formula, bit for bit."""
    r = RotaryEmbedding(8, 16)
    x = torch.randn(2, 3, 16, 8, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    x1, x2 = x[..., 0::2], x[..., 1::2]
    want = torch.stack((x1 * r.cos - x2 * r.sin, x1 * r.sin + x2 * r.cos), dim=-1).flatten(-2)
    assert torch.equal(r(x), want)


@pytest.mark.parametrize("schedule", ["linear", "geometric"])
def test_first_hitting_masked_logits_path_equals_full_call(schedule):
    """First-hitting asks a SUBSDenoiser for log mu at the filled positions only; a denoiser without that
    capability is called whole. Same seed, same samples."""
    torch.manual_seed(0)
    net = DiT(11, 12, width=32, depth=2, heads=2)
    torch.nn.init.normal_(net.head.weight, std=0.5)
    den = SUBSDenoiser(net, 11, max_length=12).eval()
    plain = FunctionDenoiser(lambda x, t: den(x, t), 11, True)
    sched = maskdiff.get_schedule(schedule)
    a = first_hitting_sample(den, sched, (4, 12), generator=torch.Generator().manual_seed(3))
    b = first_hitting_sample(plain, sched, (4, 12), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nfe, b.nfe)


def test_flop_formula_counts_the_matrix_products():
    """6 x (12 depth width^2 + width V) is 6 x the weights of every linear layer a token meets."""
    import vs_reference

    net = DiT(50, 64, width=32, depth=3, heads=2)
    weights = sum(m.weight.numel() for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert vs_reference.model_flops_per_token(vocab=50, length=64, width=32, depth=3) == 6 * weights + 12 * 3 * 32 * 64


def _run(*args):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "vs_reference.py"), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_vs_reference_help_and_bad_input(tmp_path):
    assert _run("--help").returncode == 0
    bad = _run("--parts", "trian", "--no-reference")
    assert bad.returncode != 0 and "choose from: train, gpt2, sample" in bad.stderr
    missing = _run("--peers", str(tmp_path), "--parts", "train")
    assert missing.returncode != 0 and "mdlm_bench.py" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_step_budget_runs_small_and_refuses_bad_input(tmp_path):
    out = tmp_path / "budget.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_budget.py"), "--vocab", "16", "--length", "16",
                          "--width", "32", "--depth", "2", "--heads", "2", "--batch", "2", "--repeats", "2", "--steps", "2",
                          "--rounds", "1", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    import json

    med = json.loads(out.read_text())["medians_s"]
    for key in ("floor_all", "floor_masked", "step_all", "step_masked", "qkv", "attention", "mlp_masked"):
        assert med[key] > 0, key
    assert "| **floor** |" in run.stdout
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "step_budget.py"), "--width", "30", "--heads", "4"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "must split into 4 heads" in bad.stderr and "Traceback" not in bad.stderr
