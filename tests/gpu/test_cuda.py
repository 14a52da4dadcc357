"""Samplers, losses, the evaluator, bf16 and compiled training, and the CLI with the model on CUDA.

The library's rule (maskdiff.process.uniform): a draw is made where its generator lives and moved to
the denoiser's device. So a CUDA generator and a CPU generator both work with a CUDA denoiser, and a
CPU generator gives the same draws as on the CPU: the samples then agree with the CPU model's up to
the rare token where float32 rounding of the two devices' networks tips a draw.
"""
import pytest
import torch

from helpers import MICRO_FLAGS, micro_config, run_cli
from maskdiff.evaluation.nelbo import evaluate
from maskdiff.loss import low_discrepancy_times
from maskdiff.objectives import build_objective
from maskdiff.sampling import (SAMPLERS, GuidedDenoiser, autoregressive_sample, genmd4_sample, semi_autoregressive_sample)
from maskdiff.sampling.conditioning import prompt_state
from maskdiff.step import autocast, compile_blocks

CUDA = torch.device("cuda")
V, L = 13, 16


def _objective(kind="masked", **model):
    torch.manual_seed(0)
    cfg = micro_config()
    cfg.data.length = L
    cfg.diffusion.objective = kind
    for k, v in model.items():
        setattr(cfg.model, k, v)
    obj = build_objective(cfg, V)
    with torch.no_grad():  # away from the zero initialisation, where mu is uniform and every device agrees
        for p in obj.network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return obj.eval()


def _check(tokens, device=CUDA):
    assert tokens.device.type == device.type
    assert int(tokens.min()) >= 0 and int(tokens.max()) < V


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("where", ["cuda", "cpu"])
def test_every_sampler_runs_on_cuda(name, where):
    obj = _objective().to(CUDA)
    gen = torch.Generator(device=where).manual_seed(0)
    out = SAMPLERS[name](obj.denoiser, obj.schedule, (4, L), steps=8, generator=gen, device=CUDA)
    _check(out.tokens)
    assert out.nfe.device.type == "cpu"
    # prompts from the CPU, temperature and nucleus
    x_init = prompt_state(torch.tensor([1, 2, 3]), L, V, 4)
    out = SAMPLERS[name](obj.denoiser, obj.schedule, (4, L), steps=8, generator=gen, device=CUDA, x_init=x_init,
                         temperature=0.8, top_p=0.9)
    _check(out.tokens)
    assert torch.equal(out.tokens[:, :3].cpu(), x_init[:, :3])


@pytest.mark.parametrize("name", ["ancestral", "cached", "mean", "first-hitting", "dilated"])
def test_a_cpu_generator_gives_the_cpu_draws(name):
    obj = _objective()
    cpu = SAMPLERS[name](obj.denoiser, obj.schedule, (8, L), steps=8, generator=torch.Generator().manual_seed(3)).tokens
    obj.to(CUDA)
    gpu = SAMPLERS[name](obj.denoiser, obj.schedule, (8, L), steps=8, generator=torch.Generator().manual_seed(3), device=CUDA).tokens
    agree = float((gpu.cpu() == cpu).double().mean())
    assert agree >= 0.9, agree


def test_guided_semi_autoregressive_genmd4_and_autoregressive_on_cuda():
    obj = _objective(num_classes=3).to(CUDA)
    guided = GuidedDenoiser(obj.denoiser, 1.5, null_class=3)
    for name in ["ancestral", "cached", "first-hitting", "confidence"]:
        out = SAMPLERS[name](guided, obj.schedule, (4, L), steps=8, generator=torch.Generator(device="cuda").manual_seed(0),
                             cond=torch.tensor([0, 1, 2, 0], device=CUDA), device=CUDA)
        _check(out.tokens)
    obj = _objective().to(CUDA)
    out = semi_autoregressive_sample(SAMPLERS["cached"], obj.denoiser, obj.schedule, batch=2, total_length=2 * L, window=L,
                                     block=4, generator=torch.Generator(device="cuda").manual_seed(0),
                                     prompt=torch.tensor([1, 2]), steps=8, device=CUDA)
    _check(out.tokens)
    assert out.tokens.shape == (2, 2 * L)
    g4 = _objective("genmd4").to(CUDA)
    _check(genmd4_sample(g4.denoiser, g4.schedule, (4, L), steps=8, generator=torch.Generator(device="cuda").manual_seed(0),
                         device=CUDA).tokens)
    ar = _objective("ar").to(CUDA)
    _check(autoregressive_sample(ar.denoiser, (4, L), generator=torch.Generator(device="cuda").manual_seed(0), device=CUDA).tokens)


@pytest.mark.parametrize("kind", ["masked", "genmd4", "sedd", "ar", "ablation", "masked_logits"])
def test_losses_and_evaluator_on_cuda_match_the_cpu(kind):
    """The same weights, batch and CPU generators on both devices: the same numbers to 1e-4 (float32 rounding;
    TF32 is off here)."""
    if kind == "ablation":
        torch.manual_seed(0)
        cfg = micro_config()
        cfg.data.length = L
        cfg.diffusion.discrete_steps, cfg.diffusion.carry_over = 10, False
        obj = build_objective(cfg, V).eval()
    else:
        obj = _objective("masked", masked_logits=True) if kind == "masked_logits" else _objective(kind)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (6, L), generator=g)
    valid = torch.ones(6, L, dtype=torch.bool)
    valid[0, L // 2:] = False
    t = low_discrepancy_times(6, 0.4)
    noise = torch.rand((obj.noise_draws, 6, L), generator=g, dtype=torch.float64)

    def run(device):
        obj.to(device)
        with torch.no_grad():
            loss, logged = obj.train_loss(x0.to(device), t.to(device), noise.to(device))
            terms = obj.eval_terms(x0.to(device), t.to(device), torch.Generator().manual_seed(5))
        res = evaluate(lambda x, tt, gen, v: obj.eval_terms(x, tt, gen, v), x0, valid, passes=2, batch_size=4, seed=0, device=device)
        assert res.nelbo.device.type == "cpu"
        return loss.cpu(), terms.total.cpu(), res.nelbo

    for a, b in zip(run("cpu"), run(CUDA)):
        torch.testing.assert_close(b.double(), a.double(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("masked_logits", [False, True])
def test_bf16_and_compiled_training_loss_close_to_float32_eager(masked_logits):
    """Stated tolerance: bf16 autocast within 2% of float32 on a fixed batch; compiled float32 within 1e-4.
    With masked logits the last block runs at a data-dependent number of rows, under compile too."""
    torch.backends.cuda.matmul.allow_tf32 = False
    obj = _objective(masked_logits=masked_logits).to(CUDA).train()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (8, L), generator=g).to(CUDA)
    t = low_discrepancy_times(8, 0.3).to(CUDA)
    noise = torch.rand((1, 8, L), generator=g, dtype=torch.float64).to(CUDA)

    def loss(precision):
        with torch.no_grad(), autocast(precision, CUDA):
            return float(obj.train_loss(x0, t, noise)[0].sum())

    ref = loss("fp32")
    assert abs(loss("bf16") - ref) <= 0.02 * abs(ref)
    compile_blocks(obj.network)
    assert abs(loss("fp32") - ref) <= 1e-4 * abs(ref)
    assert abs(loss("bf16") - ref) <= 0.02 * abs(ref)


@pytest.mark.parametrize("name", ["cached", "first-hitting"])
def test_compiled_and_eager_networks_give_the_same_samples(name):
    torch.backends.cuda.matmul.allow_tf32 = False
    obj = _objective().to(CUDA)
    draw = lambda: SAMPLERS[name](obj.denoiser, obj.schedule, (4, L), steps=16, generator=torch.Generator(device="cuda").manual_seed(0),
                                  device=CUDA).tokens
    eager = draw()
    compile_blocks(obj.network)
    assert torch.equal(draw(), eager)


def test_cli_trains_evaluates_and_samples_on_cuda(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "--run-dir", run, "--steps", "20", "--device", "cuda", "--precision", "bf16", "--compile", "auto",
                   *MICRO_FLAGS, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("eval", run, "--device", "cuda", "--limit", "8", "--no-progress")
    assert proc.returncode == 0 and "BPC <=" in proc.stdout, proc.stdout + proc.stderr
    for sampler in ["cached", "first-hitting"]:
        proc = run_cli("sample", run, "--device", "cuda", "--num", "2", "--steps", "16", "--sampler", sampler, "--no-progress")
        assert proc.returncode == 0 and "2 samples" in proc.stdout, proc.stdout + proc.stderr


def test_cli_block_diffusion_on_cuda(tmp_path):
    """Block diffusion trains (bf16, compiled where it helps), evaluates and samples past L on CUDA, with
    and without its key-value cache. On the CPU the two give identical samples (tests/objectives/test_block.py); on
    CUDA the attention kernels of the two paths differ in the last bits, so only their shape is checked
    here and whether they agree is printed."""
    run = tmp_path / "bd3"
    proc = run_cli("train", "--run-dir", run, "--steps", "10", "--objective", "block", "--block-size", "8", "--device", "cuda",
                   "--precision", "bf16", *MICRO_FLAGS, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli("eval", run, "--device", "cuda", "--limit", "8", "--no-progress")
    assert proc.returncode == 0 and "BPC <=" in proc.stdout, proc.stdout + proc.stderr
    outs = []
    for extra in ([], ["--no-kv-cache"]):
        out = tmp_path / f"s{len(extra)}.txt"
        proc = run_cli("sample", run, "--device", "cuda", "--num", "2", "--length", "80", "--steps", "4", "--prompt", "the ",
                       "--no-progress", "--out", out, *extra)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(out.read_text())
    texts = outs[0].split("\n\n")
    assert len(texts) == 2 and all(len(t.strip("\n")) == 80 and t.startswith("the ") for t in texts)
    print("cached and uncached block samples identical on CUDA:", outs[0] == outs[1])
