"""ReMDM: remasking samplers over any trained masked model (Wang et al. 2025, "Remasking Discrete Diffusion
Models with Inference-Time Scaling").

MDLM's reverse step never changes a token once it is unmasked. ReMDM replaces the posterior by a family
indexed by sigma_t in [0, sigma_t^max], sigma_t^max = min(1, (1 - alpha_s)/alpha_t) (docs/math.md#remdm):

    z_t unmasked:  z_s = z_t  w.p. 1 - sigma_t,   mask  w.p. sigma_t
    z_t masked:    z_s = x    w.p. (alpha_s - (1 - sigma_t) alpha_t)/(1 - alpha_t),
                   mask       w.p. (1 - alpha_s - sigma_t alpha_t)/(1 - alpha_t)

Given x, every member keeps the forward marginals q(z_s | x) = alpha_s x + (1 - alpha_s) m, so a model
trained for MDLM samples with it unchanged (x replaced by mu_theta, as in MDLM eq. 7); sigma = 0 is MDLM.
The strategies choose sigma_t per step (ReMDM Sec. 4.1):

| strategy | sigma_t |
|---|---|
| cap | min(eta, sigma_t^max) (eta: eta_cap) |
| rescale | eta sigma_t^max (eta: eta_rescale) |
| conf | eta sigma_t^max shared among the unmasked positions by softmax(-psi), psi the probability each token had when it was unmasked |
| loop | 0 outside [t_off, t_on]; inside, alpha is held at alpha_on and sigma_t = eta (at most sigma_t^max) |

The loop runs on its own alpha (ReMDM Sec. 4.1, docs/math.md (eq. 27)), piecewise linear in t: from 0 at
t = 1 to alpha_on at t_on (MDLM steps), alpha_on until t_off (remasking), then to 1 at t = 0 (MDLM steps).
A time-conditioned network is given the time at which the trained schedule reaches that alpha.

Draws are float64 (docs/math.md#samplers). In each step the masked positions are drawn first, exactly
as the ancestral sampler draws them (:func:`~maskdiff.sampling.common.reverse_step`), then the unmasked
ones are remasked with one float64 uniform each; with sigma = 0 no remasking uniform is drawn, so the
chain is the ancestral chain draw for draw. The network is called for a sample only when its state
has a mask (remasking needs no network output) and, with a time-independent denoiser, only when the
state changed since its last call (MDLM's cache, per sample); NFE counts those calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import Denoiser
from maskdiff.errors import MaskdiffError
from maskdiff.process import uniform
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.cached import StepCache
from maskdiff.sampling.common import SampleOutput, reverse_step
from maskdiff.sampling.loop import Chain
from maskdiff.sampling.transforms import check_transform

STRATEGIES = ("cap", "rescale", "conf", "loop")
DEFAULT_ETA = {"cap": 0.02, "rescale": 0.02, "conf": 1.0, "loop": 0.02}
"""maskdiff's defaults for eta, one per strategy (small: a few remasked tokens per step)."""


@dataclass
class RemaskingPlan:
    """The numbers a ReMDM chain runs on: step k goes from grid point k to grid point k - 1 (k = T .. 1).

    times: (T + 1,) the time the network is given at each grid point: the grid itself, or for the loop the
    time at which the trained schedule reaches the loop's alpha; alphas: (T + 1,) alpha at each grid point
    (the schedule's, or the loop's three-phase alpha, eq. 27); sigmas: (T,) sigma of step k at index
    k - 1 (the base sigma of 'conf', shared among positions by confidence); 0 for the last step, which
    fills every remaining mask.
    """

    times: Tensor
    alphas: Tensor
    sigmas: Tensor
    strategy: str


def sigma_max(alpha_s: Tensor, alpha_t: Tensor) -> Tensor:
    """min(1, (1 - alpha_s)/alpha_t): the largest sigma whose posterior is a distribution (ReMDM Sec. 3).
    alpha_t = 0 gives 1 (no position is unmasked at such a t anyway)."""
    alpha_s, alpha_t = alpha_s.to(torch.float64), alpha_t.to(torch.float64)
    ratio = torch.where(alpha_t > 0, (1.0 - alpha_s) / alpha_t.clamp(min=1e-300), torch.ones_like(alpha_t))
    return ratio.clamp(max=1.0)


def loop_alpha(times: Tensor, t_on: float, t_off: float, alpha_on: float) -> Tensor:
    """ReMDM-loop's alpha on ``times`` (docs/math.md (eq. 27)), piecewise linear in t: alpha_on (1 - t)/(1 - t_on)
    for t > t_on (phase 1, MDLM from alpha = 0 at t = 1), alpha_on for t_off <= t <= t_on (phase 2,
    remasking at a fixed noise level), 1 - (1 - alpha_on) t / t_off for t < t_off (phase 3, MDLM to 1)."""
    t = times.to(torch.float64)
    early = alpha_on * (1.0 - t) / (1.0 - t_on)
    late = 1.0 - (1.0 - alpha_on) * t / t_off
    return torch.where(t > t_on, early, torch.where(t < t_off, late, torch.full_like(t, alpha_on)))


def check_remasking(strategy: str, eta: float, t_on: float, t_off: float, alpha_on: float) -> None:
    if strategy not in STRATEGIES:
        raise MaskdiffError(f"unknown remasking strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise MaskdiffError(f"eta must be in [0, 1] (sigma_t may not exceed sigma_t^max), got {eta!r}")
    if strategy != "loop":
        return
    if not 0.0 < t_off < t_on < 1.0:
        raise MaskdiffError(f"the loop needs 0 < t_off < t_on < 1, got t_on={t_on}, t_off={t_off}")
    if not 0.0 < alpha_on < 1.0:
        raise MaskdiffError(f"the loop needs 0 < alpha_on < 1, got alpha_on={alpha_on}")
    held_max = min(1.0, (1.0 - alpha_on) / alpha_on)
    if eta > held_max:
        raise MaskdiffError(f"remdm-loop's eta must be at most sigma_t^max = min(1, (1 - alpha_on)/alpha_on) = {held_max:.4g} "
                            f"at alpha_on={alpha_on}, got {eta}")


def remasking_plan(schedule: Schedule, steps: int, strategy: str = "cap", eta: Optional[float] = None, *,
                   grid: str = "uniform", t_on: float = 0.55, t_off: float = 0.05, alpha_on: float = 0.9) -> RemaskingPlan:
    """alpha and sigma at every step of a T-step ReMDM chain (the table in the module docstring)."""
    eta = DEFAULT_ETA.get(strategy, 0.0) if eta is None else eta
    check_remasking(strategy, eta, t_on, t_off, alpha_on)
    times = time_grid(steps, grid)
    if strategy == "loop":
        alphas = loop_alpha(times, t_on, t_off, alpha_on)
        in_loop = (times[:-1] >= t_off) & (times[1:] <= t_on)  # both ends of the step in phase 2
        sigmas = torch.where(in_loop, torch.full_like(alphas[1:], eta), torch.zeros_like(alphas[1:]))
        sigmas[0] = 0.0  # the last step fills every mask
        net_times = schedule.inverse(alphas.clamp(min=schedule.alpha_1, max=schedule.alpha_0))
        return RemaskingPlan(times=net_times, alphas=alphas, sigmas=sigmas, strategy=strategy)
    alphas = schedule.alpha(times).to(torch.float64)
    smax = sigma_max(alphas[:-1], alphas[1:])
    sigmas = smax.clamp(max=eta) if strategy == "cap" else eta * smax  # rescale, and conf's base
    sigmas[0] = 0.0  # the last step fills every mask
    return RemaskingPlan(times=times, alphas=alphas, sigmas=sigmas, strategy=strategy)


def confidence_sigmas(psi: Tensor, candidates: Tensor, sigma: float) -> Tensor:
    """ReMDM-conf: sigma^(l) = sigma softmax_l(-psi^(l)) over the candidates of each row (unmasked, not
    fixed), 0 elsewhere. psi: (B, L) float64 confidences; candidates: (B, L) bool. Returns (B, L) float64:
    the tokens the model was least sure of are the likeliest to be remasked; each row's total is sigma."""
    scores = (-psi).masked_fill(~candidates, -torch.inf)
    has = candidates.any(-1, keepdim=True)
    weights = torch.softmax(torch.where(has, scores, torch.zeros_like(scores)), dim=-1)
    return torch.where(candidates, sigma * weights, torch.zeros_like(weights))


def remdm_sample(
    denoise: Denoiser,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    strategy: str = "cap",
    eta: Optional[float] = None,
    t_on: float = 0.55,
    t_off: float = 0.05,
    alpha_on: float = 0.9,
    cache: Optional[bool] = None,
    generator: Optional[torch.Generator] = None,
    grid: str = "uniform",
    x_init: Optional[Tensor] = None,
    cond: Optional[Tensor] = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
) -> SampleOutput:
    """Sample with ReMDM's remasking posterior on a T-step grid (strategies: see the module docstring).

    eta: the strategy's parameter (eta_cap, eta_rescale, conf's scale of sigma^max, the loop's sigma;
        default :data:`DEFAULT_ETA`); t_on, t_off: the loop's phase-2 interval; alpha_on: the loop's alpha
        in phase 2 (ReMDM's 0.9 by default).
    cache: reuse a sample's network output while its state is unchanged; None (default) caches when the
        denoiser is time-independent, True requires it. Positions fixed by ``x_init`` are never remasked.
    ``extra`` of the output: 'strategy', 'eta', 'remasked' (B,) tokens remasked per sample.
    """
    eta = DEFAULT_ETA.get(strategy, 0.0) if eta is None else eta
    check_transform(temperature, top_p)
    plan = remasking_plan(schedule, steps, strategy, eta, grid=grid, t_on=t_on, t_off=t_off, alpha_on=alpha_on)
    time_independent = bool(denoise.time_independent)
    if cache and not time_independent:
        raise MaskdiffError("cache=True reuses the network output across time steps and needs a time-independent denoiser; "
                            "this one is time-conditioned (leave cache unset)")
    use_cache = time_independent if cache is None else bool(cache)
    mask_id = denoise.vocab_size
    name = f"remdm-{strategy}"
    sigmas = plan.sigmas.tolist()
    alphas = plan.alphas.tolist()
    with Chain(denoise, shape, steps, name, x_init=x_init, device=device, progress=progress, callback=callback) as chain:
        x = chain.x
        B, L = x.shape
        fixed = x != mask_id  # prompt / infilling positions: never remasked
        remasked = torch.zeros(B, dtype=torch.long, device=x.device)
        psi = torch.full((B, L), math.inf, dtype=torch.float64, device=x.device)  # confidence when unmasked
        mu_cache = StepCache(chain, temperature, top_p, enabled=use_cache)
        for k in range(steps, 0, -1):
            a_s, a_t, sig = alphas[k - 1], alphas[k], sigmas[k - 1]
            masked = x == mask_id
            active = masked.any(-1)
            if not bool(active.any()) and max(sigmas[:k]) == 0.0:
                break
            new = x.clone()
            rows = active.nonzero().squeeze(-1)
            if len(rows):
                log_mu = mu_cache.log_mu(rows, plan.times[k], cond)
                sig_masked = 0.0 if strategy == "conf" else sig
                new[rows] = reverse_step(x[rows], log_mu, a_s, a_t, mask_id, generator, last=k == 1, sigma=sig_masked)
                if strategy == "conf":
                    newly = masked[rows] & (new[rows] != mask_id)
                    p = log_mu.gather(-1, new[rows].clamp(max=mask_id - 1)[..., None]).squeeze(-1).to(torch.float64).exp()
                    psi_rows = psi[rows]
                    psi_rows[newly] = p[newly]
                    psi[rows] = psi_rows
            if sig > 0.0:
                candidates = ~masked & ~fixed  # unmasked in z_t: the remasking branch of the posterior
                n = int(candidates.sum())
                if n:
                    u = uniform(n, generator, x.device)
                    if strategy == "conf":
                        p_remask = confidence_sigmas(psi, candidates, sig)[candidates]
                    else:
                        p_remask = torch.full((n,), sig, dtype=torch.float64, device=x.device)
                    hit = torch.zeros_like(candidates)
                    hit[candidates] = u < p_remask
                    new[hit] = mask_id
                    psi[hit] = math.inf
                    remasked += hit.sum(-1)
            mu_cache.changed(new)
            x.copy_(new)
            chain.report.step(x)
    out = chain.output()
    out.extra.update(strategy=strategy, eta=float(eta), remasked=remasked.cpu())
    if strategy == "loop":
        out.extra.update(t_on=t_on, t_off=t_off, alpha_on=alpha_on)
    return out
