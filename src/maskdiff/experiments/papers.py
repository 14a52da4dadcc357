"""The papers' comparisons, as data: each is a list of variants (configs that differ in one choice) and
the paper trends it tests, with the budgets (scales) they run at. ``maskdiff experiment NAME`` runs one
(``maskdiff.experiments.paper_runner``).

Every variant is trained with the same budget (steps x batch x length tokens; FLOPs recorded) for several
seeds and evaluated on the same held-out sequences; a trend is judged on the paired per-seed difference of
bits per character (``maskdiff.experiments.base``). A claim of *no* difference (time conditioning, MDLM)
is judged against the equivalence margin ``BPC_MARGIN``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from maskdiff.config import RunConfig
from maskdiff.experiments.base import ModelScale, get_named, model_config

BPC_MARGIN = 0.02  # equivalence margin for "no difference" claims, bits per character
NOT_RESOLVED = "not resolved at this budget"


@dataclass
class Scale(ModelScale):
    """A budget: the model and training size every variant of an experiment gets."""

    lr: float
    """Peak learning rate."""
    eval_sequences: int
    """Validation sequences every variant is evaluated on."""
    eval_passes: int
    """Monte-Carlo passes of the NELBO over them (1 for an exact likelihood)."""
    seeds: int = 3
    """Seeds per variant (training and evaluation draws)."""


SCALES: Dict[str, Scale] = {
    # seconds per variant: for the test suite only, numbers mean nothing
    "test": Scale(width=32, depth=1, heads=2, length=32, batch_size=4, steps=3, lr=1e-3, eval_sequences=4, eval_passes=1),
    # minutes per variant on 2 CPU cores (the default)
    "cpu": Scale(width=64, depth=2, heads=4, length=64, batch_size=32, steps=300, lr=3e-3, eval_sequences=256, eval_passes=8),
    # the same comparisons bigger, for a GPU
    "gpu": Scale(width=384, depth=6, heads=6, length=256, batch_size=128, steps=10000, lr=5e-4, eval_sequences=2048, eval_passes=4),
}


@dataclass
class Variant:
    """One config of a comparison, trained and evaluated for every seed."""

    name: str
    """Its name in the tables and in ``runs/<name>-s<seed>``."""
    edit: Callable[[RunConfig], None]
    """Changes to the base config that define this variant."""
    eval_steps: Tuple[Optional[int], ...] = (None,)
    """Evaluations to run: None is the variant's own estimate (continuous, or its T), an int a discrete T."""
    budget: int = 1
    """Training steps as a multiple of the scale's: 2 gives a variant the FLOPs of one that runs the
    network twice per step (GenMD4 with k = 2), at twice the tokens."""


@dataclass
class Trend:
    """A paper's claim about two evaluations of a comparison."""

    better: str
    """The evaluation the paper says is lower: "variant" or "variant@T" (its discrete-T evaluation)."""
    worse: str
    """The evaluation it is compared with, written the same way."""
    claim: str
    """The paper's statement, cited."""
    equal: bool = False
    """A claim of no difference (judged against ``BPC_MARGIN``)."""


@dataclass
class Experiment:
    """One of the papers' comparisons."""

    name: str
    """Its name on the command line (``maskdiff experiment NAME``)."""
    question: str
    """What it asks, with the paper's section or table."""
    variants: List[Variant]
    """The configs compared."""
    trends: List[Trend] = field(default_factory=list)
    """The papers' claims it judges."""
    scale_edits: Dict[str, dict] = field(default_factory=dict)
    """Changes to a named scale for this experiment only (e.g. fewer steps where its variants are dearer),
    the same for every variant, so the budgets stay equal; results.json records the scale as run."""


def _set(**fields):
    def edit(cfg: RunConfig) -> None:
        for path, value in fields.items():
            section, name = path.split("__")
            setattr(getattr(cfg, section), name, value)

    return edit


def _schedule(name, **args):
    return _set(diffusion__schedule=name, diffusion__schedule_args=args)


EVAL_T = (10, 100, 1000, None)

EXPERIMENTS: Dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment(
            "schedules",
            "Which masking schedule trains best on character text? (MD4 Sec. 4 and Fig. 1: the schedules; MD4 uses "
            "linear for text, cosine for images)",
            [Variant("linear", _schedule("linear")), Variant("cosine", _schedule("cosine")),
             Variant("polynomial-w2", _schedule("polynomial", w=2.0)), Variant("geometric", _schedule("geometric")),
             Variant("loglinear", _schedule("loglinear", eps=1e-3))],
            [Trend("linear", "cosine", "MD4 trains its text models with the linear schedule and its image models with cosine")],
        ),
        Experiment(
            "time-conditioning",
            "Does conditioning the network on t matter? (MDLM, time-conditioning ablation on OWT: a negligible difference)",
            [Variant("no-time", _set(model__time_conditioned=False)), Variant("time", _set(model__time_conditioned=True))],
            [Trend("time", "no-time", "MDLM: time conditioning has a minimal effect on perplexity", equal=True)],
        ),
        Experiment(
            "subs",
            "Do SUBS's carry-over and zero masking probability help? (MDLM's parameterization ablation on LM1B; discrete "
            "time T = 1000 for every variant, the full per-position KL where a choice is off)",
            [Variant("subs", _set(diffusion__discrete_steps=1000), (1000,)),
             Variant("no-carry-over", _set(diffusion__discrete_steps=1000, diffusion__carry_over=False)),
             Variant("no-zero-mask", _set(diffusion__discrete_steps=1000, diffusion__zero_mask=False)),
             Variant("neither", _set(diffusion__discrete_steps=1000, diffusion__carry_over=False, diffusion__zero_mask=False))],
            [Trend("subs@1000", "no-carry-over", "MDLM: carry-over unmasking improves perplexity"),
             Trend("subs@1000", "no-zero-mask", "MDLM: zero masking probability improves perplexity")],
        ),
        Experiment(
            "discrete-time",
            "Discrete T in {10, 100, 1000} against continuous time, for training and for evaluation (MD4 Table 6; MDLM's "
            "continuous-time ablation)",
            [Variant("train-T10", _set(diffusion__discrete_steps=10), EVAL_T),
             Variant("train-T100", _set(diffusion__discrete_steps=100), EVAL_T),
             Variant("train-T1000", _set(diffusion__discrete_steps=1000), EVAL_T),
             Variant("continuous", _set(diffusion__discrete_steps=0), EVAL_T)],
            [Trend("continuous@None", "continuous@10", "MD4 Table 6: the bound tightens as T grows, continuous time is best"),
             Trend("continuous@1000", "continuous@10", "MD4 Table 6: T = 1000 is tighter than T = 10"),
             Trend("continuous@None", "train-T10@10", "MDLM: training and evaluating in continuous time beats discrete T")],
        ),
        Experiment(
            "genmd4",
            "GenMD4's learned per-token schedule against MD4's linear one, and k = 1 vs k = 2 draws of x_t for the "
            "REINFORCE leave-one-out gradient (MD4 Sec. 5; text8 at paper scale: 1.34 vs 1.37 BPC). Time-conditioned networks.",
            [Variant("md4", _set(model__time_conditioned=True)),
             Variant("genmd4-k2", _set(model__time_conditioned=True, diffusion__objective="genmd4", diffusion__genmd4_samples=2)),
             Variant("genmd4-k1", _set(model__time_conditioned=True, diffusion__objective="genmd4", diffusion__genmd4_samples=1)),
             Variant("md4-2x", _set(model__time_conditioned=True), budget=2)],
            [Trend("genmd4-k2", "md4", "MD4: GenMD4 improves on MD4 (text8 1.34 vs 1.37 BPC); equal tokens, GenMD4 k = 2 at twice the FLOPs"),
             Trend("genmd4-k2", "md4-2x", "the same at equal FLOPs: MD4 trained twice as many steps"),
             Trend("genmd4-k1", "md4", "the same at equal tokens and FLOPs: GenMD4 with k = 1"),
             Trend("genmd4-k2", "genmd4-k1", "the leave-one-out baseline (k = 2) lowers gradient variance")],
        ),
        Experiment(
            "sedd",
            "MDLM's masked-diffusion loss against SEDD's score entropy on the same network, schedule (log-linear, as "
            "both papers) and budget (MDLM's OWT and LM1B tables: MDLM's bound is lower than SEDD's)",
            [Variant("mdlm", _schedule("loglinear", eps=1e-3)),
             Variant("sedd", _set(diffusion__schedule="loglinear", diffusion__schedule_args={"eps": 1e-3},
                                  diffusion__objective="sedd"))],
            [Trend("mdlm", "sedd", "MDLM: its NELBO is lower than SEDD's absorbing-state score-entropy bound")],
        ),
        Experiment(
            "ar",
            "Masked diffusion against an autoregressive model on the same transformer, same tokens and FLOPs "
            "(text8 at paper scale: AR about 1.23 BPC, MD4 1.37)",
            [Variant("md4", _set()), Variant("ar", _set(diffusion__objective="ar"))],
            [Trend("ar", "md4", "MD4 / MDLM: autoregressive models still reach a lower NLL at equal size")],
        ),
        Experiment(
            "block",
            "Block diffusion (BD3-LM, Arriola et al. 2025) with blocks of L' = 4 and 16 against masked diffusion "
            "(MDLM) and an autoregressive model on the same transformer, same training tokens (BD3-LM's LM1B and "
            "OpenWebText tables: the block bound lies between AR and MDLM, and tightens as L' shrinks)",
            [Variant("mdlm", _set()), Variant("bd3-16", _set(diffusion__objective="block", diffusion__block_size=16)),
             Variant("bd3-4", _set(diffusion__objective="block", diffusion__block_size=4)),
             Variant("ar", _set(diffusion__objective="ar"))],
            [Trend("bd3-4", "mdlm", "BD3-LM: block diffusion with L' = 4 has a lower NELBO than MDLM"),
             Trend("bd3-16", "mdlm", "BD3-LM: block diffusion with L' = 16 has a lower NELBO than MDLM"),
             Trend("ar", "bd3-4", "BD3-LM: the autoregressive NLL stays below block diffusion with L' = 4"),
             Trend("ar", "bd3-16", "BD3-LM: the autoregressive NLL stays below block diffusion with L' = 16"),
             Trend("bd3-4", "bd3-16", "BD3-LM: smaller blocks give a lower NELBO (L' = 4 below L' = 16)")],
            # block diffusion reads 2L tokens per sequence: half the cpu scale's steps and evaluation passes keep
            # the four variants x 3 seeds near 10 minutes on 2 idle cores (equal tokens for every variant)
            scale_edits={"cpu": dict(steps=150, eval_passes=4)},
        ),
    ]
}


def base_config(scale: Scale, seed: int) -> RunConfig:
    """The config every variant of a comparison starts from, before its ``edit``."""
    cfg = model_config(scale, scale.lr, scale.steps, seed)
    # the papers' estimator: with importance-sampled t a time-independent network sees the same masks and
    # weights under every schedule with the same endpoints, which would empty the schedule comparisons
    cfg.diffusion.time_sampler = "uniform"
    return cfg


def get_experiment(name: str) -> Experiment:
    """The paper comparison ``name``, or a MaskdiffError naming the valid ones."""
    return get_named(EXPERIMENTS, name, "experiment")


def get_scale(name: str) -> Scale:
    """The scale ``name`` of the paper comparisons, or a MaskdiffError naming the valid ones."""
    return get_named(SCALES, name, "scale")
