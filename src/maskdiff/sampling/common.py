"""What every sampler shares: the output record, the start state, and one reverse step."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import check_tokens
from maskdiff.errors import MaskdiffError
from maskdiff.process import uniform


# Every sampler also takes ``progress`` (a tqdm bar) and ``callback``: called with the (B, L) state after
# each step, e.g. to record the unmasking for a picture or to draw it live in a terminal.
#
# Devices: the state lives on ``device`` (or x_init's device), the denoiser's; every tensor a sampler
# makes is made there, except the per-sample NFE counters, which stay on the CPU. Random draws follow
# :func:`maskdiff.process.uniform`: made where the generator lives, then moved to the state's device, so
# a CPU generator works with a CUDA denoiser (and gives the same draws as on the CPU), and a generator
# on the denoiser's device avoids the copies.


@dataclass
class SampleOutput:
    """tokens: (B, L) ids; nfe: (B,) network calls made for each sample; seconds: wall-clock."""

    tokens: Tensor
    nfe: Tensor
    seconds: float
    steps: int
    sampler: str
    extra: dict = field(default_factory=dict)


def initial_state(denoise, shape: Tuple[int, int], x_init: Optional[Tensor], device) -> Tensor:
    """All masks, or ``x_init`` (B, L) whose non-mask positions are fixed (prompts, infilling)."""
    mask_id = denoise.vocab_size
    if x_init is None:
        if len(shape) != 2 or min(shape) < 1:
            raise MaskdiffError(f"sample shape must be (batch, length) with both >= 1, got {tuple(shape)}")
        return torch.full(tuple(shape), mask_id, dtype=torch.long, device=device)
    check_tokens(x_init, denoise.vocab_size, allow_mask=True)
    return x_init.to(device).clone().long() if device is not None else x_init.clone().long()


def nfe_counter(batch: int) -> Tensor:
    """(B,) network calls per sample, counted on the CPU (read back after every step)."""
    return torch.zeros(batch, dtype=torch.long, device="cpu")


def reverse_step(x: Tensor, log_mu: Tensor, alpha_s: float, alpha_t: float, mask_id: int, generator, *, last: bool,
                 sigma: float = 0.0) -> Tensor:
    """One ancestral step x_t -> x_s of the model's reverse process (MDLM eq. 7), rows of ``x`` only.

    x: (B, L); log_mu: (B, L, V). A masked position becomes v with probability
    mu_v (alpha_s - alpha_t)/(1 - alpha_t) and stays masked with probability (1 - alpha_s)/(1 - alpha_t).
    ``sigma``: ReMDM's remasking probability (sampling/remasking.py), which raises the chance to unmask to
    (alpha_s - (1 - sigma) alpha_t)/(1 - alpha_t); only the masked positions are drawn here, the
    remasking of unmasked ones is the caller's. sigma = 0 (the default) is MDLM's step, draw for draw.
    The draw over these V + 1 outcomes is one inverse-CDF draw with a float64 uniform u per masked
    position: u below the stay probability keeps the mask; otherwise the rescaled u picks v from the
    float64 cumulative sum of mu. The CDF is only built (and log_mu only read) at the positions that
    unmask, which at large T are a small fraction of them. ``last``: the step to s = 0, which fills every
    remaining mask from mu (needed when alpha_0 < 1).
    """
    masked = x == mask_id
    if not bool(masked.any()):
        return x
    n = int(masked.sum())
    u = uniform(n, generator, x.device)
    p_stay = 0.0 if last else (1.0 - alpha_s - sigma * alpha_t) / (1.0 - alpha_t)
    unmask = u >= p_stay
    if not bool(unmask.any()):
        return x
    v = (u[unmask] - p_stay) / (1.0 - p_stay)  # uniform on [0, 1) given that the position unmasks
    unmasking = masked.clone()
    unmasking[masked] = unmask  # (B, L): the positions that unmask; log_mu is read there only (N' rows, not N)
    cdf = log_mu[unmasking].to(torch.float64).exp().cumsum(-1)  # (N', V)
    values = torch.searchsorted(cdf, (v * cdf[:, -1])[:, None]).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
    new = torch.full((n,), mask_id, dtype=x.dtype, device=x.device)
    new[unmask] = values
    out = x.clone()
    out[masked] = new
    return out


def rows_of(values: Tensor, rows: Tensor) -> Tensor:
    """``values[rows]`` for sorted, distinct row indices (``nonzero()``), without the copy when they are every
    row: a per-sample cache of log mu is (B, L, V), 0.8 GB at B = 32, L = 128 and GPT-2's vocabulary, and a
    step that copies it whole for nothing (most steps of a long chain unmask nothing) costs more than the
    network. The result is read, never written."""
    return values if len(rows) == values.shape[0] else values[rows]


def masks_kept(n_t: Tensor, schedule, s, t, *, last: bool) -> Tensor:
    """(B,) masks a sample keeps after the grid step t -> s when a sampler fixes the count rather than drawing
    it: the ancestral chain's expectation n_t (1 - alpha_s) / (1 - alpha_t), rounded (0 at the last step).
    ``n_t``: (B,) masks before the step. Used by :func:`maskdiff.sampling.loop.counted_steps`."""
    if last:
        return torch.zeros_like(n_t)
    keep = float((1.0 - schedule.alpha(s)) / (1.0 - schedule.alpha(t)))
    return torch.round(n_t.to(torch.float64) * keep).long()


def call_denoiser(denoise, x: Tensor, t: float, rows: Tensor, cond: Optional[Tensor] = None) -> Tensor:
    """log mu for the given rows of x at time t, slicing the per-row conditioning with them."""
    t_rows = torch.full((len(rows),), t, device=x.device)
    if cond is None:
        return denoise(x[rows], t_rows)
    return denoise(x[rows], t_rows, cond=cond[rows])


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


class StepReporter:
    """The per-step side effects every sampler shares: an optional tqdm bar and an optional callback
    that receives the (B, L) state after each step."""

    def __init__(self, total: int, progress: bool, desc: str, callback=None):
        self.callback = callback
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)

    def step(self, x: Tensor) -> None:
        if self.callback is not None:
            self.callback(x)
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
