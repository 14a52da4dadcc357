"""Left-to-right sampling of the autoregressive baseline: one network call per generated position.

``log_probs(inputs (B, L)) -> (B, L, V)`` is a next-token model whose input starts with BOS (its
``bos_id``, the mask id V); position n of the output is p(x^{n+1} | x^{<=n}). A prompt is the fixed
prefix of ``x_init``; positions still holding the mask id are generated in order.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.loss.autoregressive import shift_right
from maskdiff.process import sample_categorical
from maskdiff.sampling.common import SampleOutput, StepReporter, Timer, initial_state, nfe_counter
from maskdiff.sampling.transforms import adjust_log_probs


def autoregressive_sample(
    log_probs,
    shape: Tuple[int, int],
    *,
    generator: Optional[torch.Generator] = None,
    x_init: Optional[Tensor] = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    device=None,
    progress: bool = False,
    callback=None,
    steps: Optional[int] = None,
) -> SampleOutput:
    """Draw x^1..x^L in order. ``steps`` is accepted for a common call signature and must be L or None."""
    mask_id = log_probs.bos_id
    with Timer() as timer, torch.no_grad():
        x = initial_state(log_probs, shape, x_init, device)
        L = x.shape[1]
        if steps is not None and steps != L:
            raise MaskdiffError(f"autoregressive sampling takes exactly L = {L} steps, got {steps}")
        filled = (x != mask_id).cumprod(-1).sum(-1)  # length of the fixed prefix of each row
        if bool(((x != mask_id).sum(-1) != filled).any()):
            raise MaskdiffError("autoregressive sampling can only continue a prefix; fixed tokens after a gap are not supported")
        start = int(filled.min())
        nfe = nfe_counter(x.shape[0])
        report = StepReporter(L - start, progress, "autoregressive", callback)
        for n in range(start, L):
            rows = (x[:, n] == mask_id).nonzero().squeeze(-1)
            if rows.numel() == 0:
                continue
            # causal attention: only inputs 0..n matter for the prediction at n
            lp = log_probs(shift_right(x[rows, : n + 1], mask_id))[:, n]  # (R, V)
            nfe[rows.cpu()] += 1
            x[rows, n] = sample_categorical(adjust_log_probs(lp, temperature, top_p), generator)
            report.step(x)
        report.close()
    return SampleOutput(x, nfe, timer.seconds, L - start, "autoregressive")
