"""How a loaded model's network runs (maskdiff.network_runtime, Pipeline.set_runtime, --precision and --compile):
bfloat16 autocast of the network call only, float32 untouched, torch.compile with a clear error when it fails."""
import pytest
import torch
from helpers import run_main

import maskdiff
from maskdiff.errors import MaskdiffError


def _pipe(run, precision="fp32", compile=False):
    """The served micro run with every weight matrix redrawn at scale 1/sqrt(fan-in): logits of order one (the
    trained micro run's are near zero, so bfloat16 could hardly move them)."""
    pipe = maskdiff.load(run)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in pipe.objective.network.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    pipe.set_runtime(precision, compile)
    return pipe


def _half_masked(pipe, rows=8):
    gen = torch.Generator().manual_seed(0)
    V, L = pipe.tokenizer.vocab_size, pipe.config.data.length
    x = torch.randint(0, V, (rows, L), generator=gen)
    x[torch.rand(rows, L, generator=gen) < 0.5] = V
    return x, torch.rand(rows, generator=gen)


def test_bfloat16_moves_the_network_by_its_rounding_and_keeps_the_probabilities_float32(served_run):
    f32, bf16 = _pipe(served_run), _pipe(served_run, "bf16")
    x, t = _half_masked(f32)
    masked = x == f32.tokenizer.mask_id
    with torch.no_grad():
        a, b = f32.denoiser(x, t)[masked], bf16.denoiser(x, t)[masked]  # (N, V) log mu
    assert b.dtype == torch.float32  # what the sampler draws from
    gap = (a - b).abs().max().item()
    assert 1e-4 < gap < 0.1, gap  # autocast did act, at bfloat16's rounding (8-bit mantissa) of logits of order one
    assert 0.5 * (a.exp() - b.exp()).abs().sum(-1).max().item() < 0.03  # total variation of each position's mu
    out = bf16.sample(3, steps=8, sampler="ancestral", seed=2)
    assert out.tokens.shape == (3, f32.config.data.length) and int(out.tokens.max()) < f32.tokenizer.mask_id
    assert all(0 < n <= 8 for n in out.nfe.tolist())


def test_float32_wraps_nothing_and_a_runtime_is_set_once(served_run):
    pipe = maskdiff.load(served_run)
    before = pipe.sample(2, steps=8, seed=5).tokens
    pipe.set_runtime("fp32", False)
    assert "forward" not in vars(pipe.objective.network)  # the network's own forward: float32 samples bit-identical
    assert torch.equal(pipe.sample(2, steps=8, seed=5).tokens, before)
    with pytest.raises(MaskdiffError, match="unknown precision 'float16'; choose one of: fp32, bf16"):
        pipe.set_runtime("float16")
    pipe.set_runtime("bf16")
    pipe.set_runtime("bf16")  # the same again: nothing to do
    with pytest.raises(MaskdiffError, match="already runs with precision bf16 .* load it again"):
        pipe.set_runtime("fp32")


def test_sample_command_reports_the_precision_network_calls_and_seconds(served_run, tmp_path):
    proc = run_main("sample", served_run, "--num", "2", "--steps", "4", "--precision", "bf16", "--no-progress",
                    "--out", tmp_path / "s.txt")
    assert proc.returncode == 0, proc.stderr
    assert "network calls)" in proc.stdout
    summary = [line for line in proc.stdout.splitlines() if line.startswith("2 samples")][0]
    assert "mean NFE" in summary and summary.endswith(" s, bf16"), summary


@pytest.mark.slow
def test_compiled_network_matches_eager_and_a_failed_compilation_names_the_flag(served_run):
    """With the C++ compiler made unfindable, compiling fails as one MaskdiffError naming --compile (not dynamo's
    traceback); then a real compilation of the one-block network on the CPU (about 30 s on a loaded 2-core machine)."""
    import torch._inductor.config as inductor

    eager = _pipe(served_run)
    x, t = _half_masked(eager)
    broken = _pipe(served_run, compile=True)
    torch._dynamo.reset()  # nothing compiled before in this process is reused
    with inductor.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}), torch.no_grad():
        with pytest.raises(MaskdiffError, match="--compile: torch.compile could not compile the network .*C\\+\\+ compiler"):
            broken.denoiser(x, t)
    torch._dynamo.reset()
    compiled = _pipe(served_run, compile=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled.denoiser(x, t), eager.denoiser(x, t), atol=1e-4, rtol=1e-4)
