"""The samplers users name, one entry each: the function, the options it takes and what it needs.

Everything that offers a choice of sampler reads these entries: :class:`~maskdiff.sampling.request.SampleRequest`
checks a request's options against them, the objectives dispatch through them, ``maskdiff serve`` lists
them, and the command line makes its flags from :func:`cli_options` and turns their values into keyword
arguments with :func:`sampler_kwargs`. A new sampler is one function and one entry in :data:`REGISTRY`.

An :class:`Option` is a keyword argument of the function that a user may set; the other arguments
(the denoiser, the schedule, the shape, steps, the generator, the start state, the device, progress and
callback) are given by whoever runs the sampler, and ``bound`` fixes the ones an entry pins (ReMDM's
strategy, greedy's argmax).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.ancestral import ancestral_sample
from maskdiff.sampling.autoregressive import autoregressive_sample
from maskdiff.sampling.block import block_sample
from maskdiff.sampling.cached import cached_sample
from maskdiff.sampling.confidence import SCORES, confidence_sample
from maskdiff.sampling.dilated import dilated_sample
from maskdiff.sampling.first_hitting import first_hitting_sample
from maskdiff.sampling.genmd4 import genmd4_sample
from maskdiff.sampling.mean import mean_sample
from maskdiff.sampling.remasking import DEFAULT_ETA, remdm_sample
from maskdiff.sampling.threshold import CACHES, threshold_sample


@dataclass(frozen=True)
class Option:
    """One keyword argument of a sampler that a user may set."""

    name: str
    """The keyword of the sampler function."""
    kind: type
    """float, int, str or bool."""
    default: Any
    """The value when the option is left out (None: the sampler decides, as its help says)."""
    help: str
    """One line for --help, the web page and the API docs."""
    low: Optional[float] = None
    """The smallest valid value (numbers); None: unbounded."""
    high: Optional[float] = None
    """The largest valid value (numbers); None: unbounded."""
    open_low: bool = False
    """``low`` itself is not valid (temperature > 0)."""
    choices: Tuple[str, ...] = ()
    """The valid values of a str option."""
    flag: str = ""
    """The command-line flag ('--decode-block'); empty: '--' + name with dashes."""

    @property
    def cli_flag(self) -> str:
        if self.flag:
            return self.flag
        if self.kind is bool and self.default is True:
            return "--no-" + self.name.replace("_", "-")
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The argparse destination of the flag."""
        return self.cli_flag[2:].replace("-", "_")

    def valid_range(self) -> str:
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"in {'(' if self.open_low or self.low is None else '['}{lo}, {hi}{']' if self.high is not None else ')'}"

    def check(self, value: Any, sampler: str) -> None:
        """Raise a one-line MaskdiffError naming the option and what is valid unless ``value`` is."""
        if value is None and self.default is None:
            return
        if self.kind is bool:
            if not isinstance(value, bool):
                raise MaskdiffError(f"option {self.name} of the {sampler} sampler is true or false, got {value!r}")
            return
        if self.kind is str:
            if value not in self.choices:
                raise MaskdiffError(f"unknown {self.name} {value!r} for the {sampler} sampler; choose one of: {', '.join(self.choices)}")
            return
        number = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or (isinstance(value, float) and math.isnan(value)):
            raise MaskdiffError(f"{self.name} of the {sampler} sampler must be {'an integer' if self.kind is int else 'a number'} "
                                f"{self.valid_range()}, got {value!r}")
        below = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        if below or (self.high is not None and value > self.high):
            raise MaskdiffError(f"{self.name} must be {self.valid_range()}, got {value!r}")

    def argparse_kwargs(self, help: str) -> dict:
        """Keyword arguments of argparse's add_argument for this option's flag (value None: not given)."""
        if self.kind is bool:
            return dict(action="store_const", const=not self.default if self.default is not None else True, default=None,
                        dest=self.dest, help=help)
        kwargs = dict(default=None, dest=self.dest, help=help, type=self.kind)
        if self.choices:
            kwargs["choices"] = list(self.choices)
        return kwargs


@dataclass(frozen=True)
class SamplerEntry:
    """A sampler users can name: its function, its options and what it needs of a model."""

    name: str
    """The name users give (``--sampler``, the request's ``sampler``)."""
    function: Callable
    """The sampler function (sampling/*.py)."""
    law: str
    """What it draws from, in a few words (exact law, same law, biased)."""
    options: Tuple[Option, ...] = ()
    """The keyword arguments a user may set."""
    bound: Mapping[str, Any] = field(default_factory=dict)
    """Keyword arguments the entry fixes (ReMDM's strategy, greedy's argmax)."""
    unused: Tuple[str, ...] = ()
    """Keyword arguments of the function that do not apply to this entry (the loop's times for the other
    ReMDM strategies): neither offered nor set."""
    time_grid: bool = True
    """Steps on a grid of times: ``steps`` is T and the ``grid`` option chooses the grid."""
    time_independent: bool = False
    """Needs a time-independent network (it reuses a network output across time steps)."""
    kv_cache: bool = False
    """Can read a key-value cache of the network (block diffusion's finished blocks; Fast-dLLM's caches)."""
    objective: Optional[str] = None
    """None: any masked-diffusion model (masked, sedd); otherwise the one objective it samples (its own sampler)."""
    models: str = "masked-diffusion models"
    """The models it samples, in words."""

    @property
    def sampler(self) -> Callable:
        """The function with the bound arguments applied."""
        return partial(self.function, **self.bound) if self.bound else self.function

    def option(self, name: str) -> Optional[Option]:
        return next((o for o in self.options if o.name == name), None)


TEMPERATURE = Option("temperature", float, 1.0, "divide log mu by this before each draw (biased unless 1)", low=0.0, open_low=True)
TOP_P = Option("top_p", float, 1.0, "nucleus truncation of mu (biased unless 1)", low=0.0, high=1.0, open_low=True)
GRID = Option("grid", str, "uniform", "time grid: uniform t_k = k/T or MD4's cosine grid", choices=("uniform", "cosine"))
TRANSFORMS = (TEMPERATURE, TOP_P)
GRID_OPTIONS = (GRID,) + TRANSFORMS


def _eta(strategy: str, what: str) -> Option:
    return Option("eta", float, DEFAULT_ETA[strategy], f"{what}, in [0, 1]", low=0.0, high=1.0)


REMDM_CACHE = Option("cache", bool, None, "reuse a sample's network output while it is unchanged (default: when the network is "
                     "time-independent; set: require it)", flag="--remdm-cache")
CHOOSE = ("argmax", "sample")


def _remdm(strategy: str, what: str, *extra: Option) -> SamplerEntry:
    return SamplerEntry(f"remdm-{strategy}", remdm_sample, "ReMDM's remasking posterior; keeps the forward marginals",
                        GRID_OPTIONS + (_eta(strategy, what),) + extra + (REMDM_CACHE,), bound={"strategy": strategy},
                        unused=() if extra else ("t_on", "t_off", "alpha_on"))


_ENTRIES = (
    SamplerEntry("ancestral", ancestral_sample, "the T-step reverse chain (MD4 Alg. 2, MDLM 'ddpm')", GRID_OPTIONS),
    SamplerEntry("cached", cached_sample, "the same chain, reusing the network output while a sample is unchanged",
                 GRID_OPTIONS, time_independent=True),
    SamplerEntry("mean", mean_sample, "the same chain, MD4's two-stage draw", GRID_OPTIONS, bound={"greedy": False}),
    SamplerEntry("greedy", mean_sample, "argmax values (biased)", GRID_OPTIONS, bound={"greedy": True}),
    SamplerEntry("first-hitting", first_hitting_sample, "the exact continuous-time reverse process (Zheng et al. 2024)", TRANSFORMS,
                 time_grid=False),
    SamplerEntry("confidence", confidence_sample, "unmasks the most confident positions (MaskGIT, LLaDA; biased)", GRID_OPTIONS + (
        Option("choose", str, "sample", "confidence sampler: the candidate value, drawn from mu (LLaDA) or its argmax (MaskGIT)",
               choices=CHOOSE),
        Option("score", str, "probability", "confidence sampler: rank masked positions by mu of the candidate or by the margin "
               "between mu's two largest probabilities (Kim et al. 2025)", choices=SCORES, flag="--confidence-score"),
        Option("confidence_noise", float, 0.0, "confidence sampler: scale of the Gumbel noise on the log-confidence (MaskGIT)", low=0.0))),
    SamplerEntry("dilated", dilated_sample, "fills the chain's count of masks per step in a spread-out, coarse-to-fine order (DUS; "
                 "exact at one position per step, biased otherwise)", GRID_OPTIONS + (
        Option("rotate", bool, True, "dilated sampler: rotate each sample's order by a random offset (off: start at position 0)"),)),
    _remdm("cap", "remdm-cap: eta_cap, the cap on sigma_t"),
    _remdm("rescale", "remdm-rescale: eta_rescale, the fraction of sigma_t^max"),
    _remdm("conf", "remdm-conf: the scale of sigma_max shared by confidence"),
    _remdm("loop", "remdm-loop: sigma in the held phase, at most (1 - alpha_on)/alpha_on",
           Option("t_on", float, 0.55, "remdm-loop: the time where the remasking loop starts (alpha is held at alpha_on)",
                  low=0.0, high=1.0),
           Option("t_off", float, 0.05, "remdm-loop: the time where the loop ends and plain unmasking resumes", low=0.0, high=1.0),
           Option("alpha_on", float, 0.9, "remdm-loop: alpha held between t_on and t_off (ReMDM's 0.9)", low=0.0, high=1.0,
                  open_low=True)),
    SamplerEntry("threshold", threshold_sample, "fills every position whose confidence exceeds a threshold (Fast-dLLM; biased)", (
        Option("threshold", float, 0.9, "threshold sampler: fill every masked position whose confidence exceeds this, in [0, 1] "
               "(1: one position per call, 0: a whole block per call)", low=0.0, high=1.0),
        Option("block_size", int, None, "threshold sampler: decode in blocks of this many positions, left to right "
               "(default: the whole sample)", low=1, flag="--decode-block"),
        Option("cache", str, "none", "threshold sampler: Fast-dLLM's approximate key/value cache within a block",
               choices=CACHES, flag="--kv-cache"),
        Option("choose", str, "argmax", "threshold sampler: the candidate value, argmax (Fast-dLLM) or drawn from mu",
               choices=CHOOSE)) + TRANSFORMS, time_grid=False, kv_cache=True),
    SamplerEntry("genmd4", genmd4_sample, "GenMD4's reverse chain with its learned per-token schedule (MD4 Sec. 5)",
                 objective="genmd4", models="GenMD4 models"),
    SamplerEntry("autoregressive", autoregressive_sample, "left to right, one network call per position", TRANSFORMS,
                 time_grid=False, objective="ar", models="autoregressive models"),
    SamplerEntry("block", block_sample, "block by block, T ancestral steps each (BD3-LM)", GRID_OPTIONS + (
        Option("kv_cache", bool, True, "block diffusion models: cache the keys and values of the finished blocks (off: recompute "
               "them at every call; the same samples, slower)"),
        Option("context", int, None, "block diffusion models: tokens kept when the window slides (default: half the window)",
               low=0)), kv_cache=True, objective="block", models="block diffusion models"),
)

REGISTRY: Dict[str, SamplerEntry] = {e.name: e for e in _ENTRIES}
"""Every sampler by name."""

MASKED_SAMPLERS: Tuple[str, ...] = tuple(n for n, e in REGISTRY.items() if e.objective is None)
"""The samplers of every masked-diffusion model (masked, sedd), in the order they are listed."""

RUNTIME_ARGUMENTS = frozenset({"denoise", "log_probs", "schedule", "shape", "batch", "length", "steps", "generator", "x_init",
                               "cond", "device", "progress", "callback", "prompt", "window", "eos_id"})
"""Arguments of sampler functions that the caller gives, not the user (the rest are options or bound)."""


def get_entry(name: str, choices: Optional[Tuple[str, ...]] = None) -> SamplerEntry:
    """The entry called ``name``; ``choices``: the names valid here (default: the masked-diffusion samplers)."""
    choices = MASKED_SAMPLERS if choices is None else choices
    if name not in choices:
        raise MaskdiffError(f"unknown sampler {name!r}; choose one of: {', '.join(choices)}")
    return REGISTRY[name]


def options_for(name: str) -> Tuple[Option, ...]:
    """The options the sampler ``name`` takes."""
    if name not in REGISTRY:
        raise MaskdiffError(f"unknown sampler {name!r}; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name].options


def owners(option: str) -> List[str]:
    """The samplers that take an option of this name."""
    return [n for n, e in REGISTRY.items() if e.option(option) is not None]


def check_options(name: str, options: Mapping[str, Any]) -> Dict[str, Any]:
    """The options of one request for the sampler ``name``, checked: a dict for its keyword arguments."""
    entry = REGISTRY[name]
    for key, value in options.items():
        option = entry.option(key)
        if option is None:
            if key == "grid" and not entry.time_grid:
                raise MaskdiffError(f"the {name} sampler has no time grid; leave out grid")
            takes = ", ".join(o.name for o in entry.options) or "no options"
            where = owners(key)
            if not where:
                raise MaskdiffError(f"unknown sampler option {key!r}; the {name} sampler takes: {takes}")
            whose = ", ".join(sorted({REGISTRY[w].models for w in where}))
            raise MaskdiffError(f"option {key} applies to the {', '.join(where)} sampler{'s' if len(where) > 1 else ''} ({whose}), "
                                f"not to {name}; {name} takes: {takes}")
        option.check(value, name)
    return dict(options)


def cli_options() -> Dict[str, Tuple[Option, Tuple[str, ...]]]:
    """Every command-line flag of a sampler option: flag -> (its option, the samplers that take it), in
    registry order. One flag stands for options of the same name and kind in several samplers."""
    out: Dict[str, Tuple[Option, Tuple[str, ...]]] = {}
    for name, entry in REGISTRY.items():
        for option in entry.options:
            first, names = out.get(option.cli_flag, (option, ()))
            out[option.cli_flag] = (first, names + (name,))
    return out


def sampler_kwargs(name: str, values: Mapping[str, Any]) -> Dict[str, Any]:
    """Command-line values (argparse destinations of :func:`cli_options`' flags; None: not given) to the
    keyword arguments of the sampler ``name``, refusing a flag the sampler does not take by its name."""
    entry = get_entry(name, tuple(REGISTRY))
    out: Dict[str, Any] = {}
    for flag, (option, names) in cli_options().items():
        value = values.get(option.dest)
        if value is None:
            continue
        own = next((o for o in entry.options if o.cli_flag == flag), None)
        if own is None:
            if option.name == "grid" and not entry.time_grid:
                raise MaskdiffError(f"the {name} sampler has no time grid; leave out {flag}")
            whose = ", ".join(sorted({REGISTRY[n].models for n in names}))
            raise MaskdiffError(f"{flag} applies to {', '.join(names)} ({whose}), not to {name}")
        own.check(value, name)
        out[own.name] = value
    return out
