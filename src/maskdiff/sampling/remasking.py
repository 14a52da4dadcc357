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
| loop | 0 outside [t_off, t_on]; inside, alpha is held at alpha(t_on) and sigma_t = min(eta, sigma_t^max) |

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

from maskdiff.errors import MaskdiffError
from maskdiff.process import uniform
from maskdiff.schedules import Schedule, time_grid
from maskdiff.sampling.common import SampleOutput, reverse_step
from maskdiff.sampling.loop import Chain
from maskdiff.sampling.transforms import adjust_log_probs, check_transform

STRATEGIES = ("cap", "rescale", "conf", "loop")
DEFAULT_ETA = {"cap": 0.02, "rescale": 0.02, "conf": 1.0, "loop": 0.02}
"""maskdiff's defaults for eta, one per strategy (small: a few remasked tokens per step)."""


@dataclass
class RemaskingPlan:
    """The numbers a ReMDM chain runs on: step k goes from times[k] to times[k - 1] (k = T .. 1).

    times: (T + 1,) the grid; alphas: (T + 1,) alpha at each grid point (the schedule's, or the loop's
    three-phase alpha); sigmas: (T,) sigma of step k at index k - 1 (the base sigma of 'conf', shared
    among positions by confidence); 0 for the last step, which fills every remaining mask.
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


def loop_alpha(schedule: Schedule, times: Tensor, t_on: float, t_off: float) -> Tensor:
    """ReMDM-loop's alpha on ``times``: the schedule's alpha(t) for t >= t_on (phase 1, MDLM), alpha(t_on)
    held for t_off <= t <= t_on (phase 2, remasking at a fixed noise level), and for t < t_off the rest of
    the schedule squeezed into [0, t_off]: alpha(t t_on / t_off) (phase 3, MDLM down to alpha_0)."""
    t = times.to(torch.float64)
    held = schedule.alpha(torch.full_like(t, t_on))
    late = schedule.alpha(t * (t_on / t_off)) if t_off > 0 else held
    return torch.where(t >= t_on, schedule.alpha(t), torch.where(t >= t_off, held, late))


def check_remasking(strategy: str, eta: float, t_on: float, t_off: float) -> None:
    if strategy not in STRATEGIES:
        raise MaskdiffError(f"unknown remasking strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if not (isinstance(eta, (int, float)) and 0.0 <= eta <= 1.0):
        raise MaskdiffError(f"eta must be in [0, 1] (sigma_t may not exceed sigma_t^max), got {eta!r}")
    if strategy == "loop" and not 0.0 <= t_off < t_on <= 1.0:
        raise MaskdiffError(f"the loop needs 0 <= t_off < t_on <= 1, got t_on={t_on}, t_off={t_off}")


def remasking_plan(schedule: Schedule, steps: int, strategy: str = "cap", eta: Optional[float] = None, *,
                   grid: str = "uniform", t_on: float = 0.55, t_off: float = 0.05) -> RemaskingPlan:
    """alpha and sigma at every step of a T-step ReMDM chain (the table in the module docstring)."""
    eta = DEFAULT_ETA.get(strategy, 0.0) if eta is None else eta
    check_remasking(strategy, eta, t_on, t_off)
    times = time_grid(steps, grid)
    alphas = loop_alpha(schedule, times, t_on, t_off) if strategy == "loop" else schedule.alpha(times).to(torch.float64)
    a_s, a_t = alphas[:-1], alphas[1:]
    smax = sigma_max(a_s, a_t)
    if strategy in ("cap", "loop"):
        sigmas = smax.clamp(max=eta)
    else:  # rescale, and conf's base
        sigmas = eta * smax
    if strategy == "loop":
        in_loop = (times[:-1] >= t_off) & (times[1:] <= t_on)  # both ends of the step in phase 2
        sigmas = torch.where(in_loop, sigmas, torch.zeros_like(sigmas))
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
    denoise,
    schedule: Schedule,
    shape: Tuple[int, int],
    *,
    steps: int,
    strategy: str = "cap",
    eta: Optional[float] = None,
    t_on: float = 0.55,
    t_off: float = 0.05,
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

    eta: the strategy's parameter (eta_cap, eta_rescale, conf's scale of sigma^max, the loop's cap;
        default :data:`DEFAULT_ETA`); t_on, t_off: the loop's phase-2 interval.
    cache: reuse a sample's network output while its state is unchanged; None (default) caches when the
        denoiser is time-independent, True requires it. Positions fixed by ``x_init`` are never remasked.
    ``extra`` of the output: 'strategy', 'eta', 'remasked' (B,) tokens remasked per sample.
    """
    eta = DEFAULT_ETA.get(strategy, 0.0) if eta is None else eta
    check_transform(temperature, top_p)
    plan = remasking_plan(schedule, steps, strategy, eta, grid=grid, t_on=t_on, t_off=t_off)
    time_independent = bool(getattr(denoise, "time_independent", False))
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
        store: Optional[Tensor] = None  # (B, L, V) log mu of each sample's state at its last call
        stale = torch.ones(B, dtype=torch.bool, device=x.device)
        for k in range(steps, 0, -1):
            t = plan.times[k]
            a_s, a_t, sig = alphas[k - 1], alphas[k], sigmas[k - 1]
            masked = x == mask_id
            active = masked.any(-1)
            if not bool(active.any()) and max(sigmas[:k]) == 0.0:
                break
            new = x.clone()
            rows = active.nonzero().squeeze(-1)
            if len(rows):
                need = (stale[rows] | (not use_cache)).nonzero().squeeze(-1)
                if len(need):
                    fresh = adjust_log_probs(chain.call(rows[need], t, cond), temperature, top_p)
                    if store is None:
                        store = torch.empty((B,) + fresh.shape[1:], dtype=fresh.dtype, device=fresh.device)
                    store[rows[need]] = fresh
                    stale[rows[need]] = False
                log_mu = store[rows]
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
            stale |= (new != x).any(-1)
            x.copy_(new)
            chain.report.step(x)
    out = chain.output()
    out.extra.update(strategy=strategy, eta=float(eta), remasked=remasked.cpu())
    if strategy == "loop":
        out.extra.update(t_on=t_on, t_off=t_off)
    return out
