"""Conditional NELBOs (a prompt never masked, never scored) on the V = 3, L = 3 toy: the estimators against
enumeration (maskdiff.exact.conditional), the bound against the true -log p(response | prompt), and the
forward process of the masked and block losses leaving the prompt alone."""
import torch

from maskdiff.denoiser import FunctionDenoiser
from maskdiff.exact.conditional import exact_conditional_nelbo, true_conditional_nll
from maskdiff.loss import nelbo, token_counts
from maskdiff.loss.block import block_nelbo
from maskdiff.schedules import get_schedule

V, L, N = 3, 3, 27
REPS = 400


def _prompts(rows: int) -> torch.Tensor:
    """Prompts of one and two tokens in turn: (rows, L) bool."""
    k = 1 + torch.arange(rows) % 2
    return torch.arange(L)[None] < k[:, None]


def test_conditional_nelbo_bounds_the_true_conditional(toy, wrong_denoiser, make_mixed_denoiser):
    """With the exact denoiser the conditional NELBO is -log p(response | prompt) for every row (to 1e-6); with
    other denoisers its average under the true law is above the true conditional entropy, by a margin."""
    seqs, p, true = toy
    schedule = get_schedule("cosine")
    for k in (1, 2):
        cond = (torch.arange(L) < k)[None].expand(N, L)
        target = true_conditional_nll(seqs, p, seqs, cond)
        assert torch.allclose(exact_conditional_nelbo(true, seqs, cond, schedule), target, atol=1e-6)
        mixed = FunctionDenoiser(make_mixed_denoiser(true, lambda t: 0.3 + 0 * t).fn, V, time_independent=True)
        for other in (wrong_denoiser, mixed):
            bound = exact_conditional_nelbo(other, seqs, cond, schedule)
            assert float(p @ bound) > float(p @ target) + 0.05
        # not the unconditional figure: the prompt is not scored
        assert float(p @ target) < float(p @ -torch.log(p)) - 0.1


def test_conditional_estimator_is_unbiased(toy, time_dependent_denoiser):
    """The Monte-Carlo NELBO with ``cond`` (t ~ U[t_min, 1], one mask per row) averages to the enumeration,
    within 4 standard errors over all rows and per row (chi-square); the prompt is never counted."""
    seqs, _, _ = toy
    schedule, t_min = get_schedule("linear"), 0.05
    cond = _prompts(N).repeat(REPS, 1)
    x0 = seqs.repeat(REPS, 1)
    g = torch.Generator().manual_seed(0)
    t = t_min + (1.0 - t_min) * torch.rand(x0.shape[0], generator=g, dtype=torch.float64)
    terms = nelbo(time_dependent_denoiser, x0, t, schedule, g, t_min=t_min, cond=cond)
    assert torch.equal(terms.tokens, (~cond).sum(-1).float())
    exact = exact_conditional_nelbo(time_dependent_denoiser, seqs, cond[:N], schedule, t_min=t_min, panels=8)
    per = terms.total.double().view(REPS, N)
    mean, se = per.mean(0), per.std(0) / REPS**0.5
    overall = float((mean - exact).mean() / (se.pow(2).sum().sqrt() / N))
    assert abs(overall) < 4, (overall, mean - exact)
    assert float(((mean - exact) / se).pow(2).sum()) < 60  # chi-square with 27 degrees of freedom: p < 1e-4 beyond


class _Seen:
    """A denoiser that keeps the inputs it was called with (the real one does the work)."""

    def __init__(self, denoise):
        self.denoise, self.inputs = denoise, []
        self.vocab_size, self.time_independent = denoise.vocab_size, denoise.time_independent
        self.block_size = getattr(denoise, "block_size", None)

    def __call__(self, x_t, *args, **kwargs):
        self.inputs.append(x_t.clone())
        return self.denoise(x_t, *args, **kwargs)


def test_prompt_never_masked_masked_and_block():
    """The masked NELBO and the block NELBO (a real block denoiser) never mask a prompt position and count only
    the others."""
    from helpers import micro_config
    from maskdiff.objectives import build_objective

    cfg = micro_config()
    masked = build_objective(cfg, 27).eval()
    cfg.diffusion.objective, cfg.diffusion.block_size = "block", 8
    block = build_objective(cfg, 27).eval()
    x0 = torch.randint(0, 27, (6, 32), generator=torch.Generator().manual_seed(0))
    cond = torch.arange(32)[None] < torch.tensor([3, 8, 11, 1, 20, 31])[:, None]
    t = torch.full((6,), 0.999)
    for objective, run in ((block, lambda d, g: block_nelbo(d, x0, t, get_schedule("linear"), g, cond=cond)),
                           (masked, lambda d, g: nelbo(d, x0, t, get_schedule("linear"), g, cond=cond))):
        seen = _Seen(objective.denoiser)
        with torch.no_grad():
            terms = run(seen, torch.Generator().manual_seed(1))
        for x_t in seen.inputs:
            assert torch.equal(x_t[cond], x0[cond])
        assert any(bool((x_t[~cond] == 27).any()) for x_t in seen.inputs)
        assert torch.equal(terms.tokens, token_counts(x0, cond=cond)) and torch.equal(terms.tokens, (~cond).sum(-1).float())
