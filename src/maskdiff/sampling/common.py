"""What every sampler shares: the output record, the start state, and one reverse step."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.denoiser import check_tokens
from maskdiff.errors import MaskdiffError
from maskdiff.process import reverse_log_probs, sample_categorical


# Every sampler also takes ``progress`` (a tqdm bar) and ``callback``: called with the (B, L) state after
# each step, e.g. to record the unmasking for a picture or to draw it live in a terminal.


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
    return x_init.clone().long()


def reverse_step(x: Tensor, log_mu: Tensor, alpha_s: float, alpha_t: float, mask_id: int, generator, *, last: bool) -> Tensor:
    """One ancestral step x_t -> x_s of the model's reverse process (MDLM eq. 7), rows of ``x`` only.

    x: (B, L); log_mu: (B, L, V). A masked position becomes v with probability
    mu_v (alpha_s - alpha_t)/(1 - alpha_t) and stays masked otherwise; the draw is one float64
    Gumbel-max over the V + 1 outcomes. ``last``: the step to s = 0, which fills every remaining mask
    from mu (needed when alpha_0 < 1). Only masked positions are drawn; the rest are left as they are.
    """
    masked = x == mask_id
    if not bool(masked.any()):
        return x
    rows_log_mu = log_mu[masked]  # (N, V)
    if last:
        new = sample_categorical(rows_log_mu, generator)
    else:
        n = rows_log_mu.shape[0]
        a_s = torch.full((n,), alpha_s, dtype=torch.float64, device=x.device)
        a_t = torch.full((n,), alpha_t, dtype=torch.float64, device=x.device)
        logp = reverse_log_probs(
            torch.full((n, 1), mask_id, dtype=torch.long, device=x.device), rows_log_mu[:, None, :], a_s, a_t, mask_id
        )[:, 0, :]  # (N, V + 1)
        new = sample_categorical(logp, generator)
    out = x.clone()
    out[masked] = new
    return out


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
