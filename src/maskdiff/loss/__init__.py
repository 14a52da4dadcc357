"""Losses: functions of (denoise, x_0, t, schedule, generator), one file per objective.

* masked.py          the masked-diffusion NELBO, continuous and discrete time (MD4 Sec. 3, MDLM Sec. 3)
* ablation.py        the full per-position discrete-time KL without the SUBS simplifications (MDLM's ablation)
* genmd4.py          GenMD4's state-dependent schedule: NELBO and its REINFORCE leave-one-out gradient (MD4 Sec. 5)
* score_entropy.py   SEDD's score entropy for the absorbing process (the papers' baseline)
* autoregressive.py  next-token negative log-likelihood of the autoregressive baseline
"""
from maskdiff.loss.masked import (
    DEFAULT_T_MIN,
    TIME_SAMPLERS,
    NELBOTerms,
    continuous_diffusion_term,
    discrete_diffusion_term,
    discrete_step,
    importance_steps,
    importance_times,
    low_discrepancy_times,
    masked_cross_entropy,
    nelbo,
    prior_term,
    reconstruction_term,
    scored_positions,
    stratified_times,
    token_counts,
)

__all__ = [
    "DEFAULT_T_MIN",
    "TIME_SAMPLERS",
    "NELBOTerms",
    "continuous_diffusion_term",
    "discrete_diffusion_term",
    "discrete_step",
    "importance_steps",
    "importance_times",
    "low_discrepancy_times",
    "masked_cross_entropy",
    "nelbo",
    "prior_term",
    "reconstruction_term",
    "scored_positions",
    "stratified_times",
    "token_counts",
]
