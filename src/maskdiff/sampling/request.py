"""What a user asks of a trained model, checked once against it, and the masked-diffusion draw of it.

    request = SampleRequest(num=4, prompt="to be", length=64, sampler="ancestral", options={"temperature": 0.8})
    checked = request.check(target)      # every problem: one MaskdiffError naming what is valid
    out = draw(denoise, schedule, checked, generator=gen, device=device)

A :class:`SamplingTarget` is what the check needs to know of a model (its vocabulary, its length, the
samplers it can use, how text becomes tokens); :meth:`Pipeline.target <maskdiff.pipeline.Pipeline.target>`
builds it and ``maskdiff serve`` narrows it to its own limits. Prompts, templates and lengths are checked
here and nowhere else; sampler options by the registry's declarations (sampling/registry.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.conditioning import semi_autoregressive_sample
from maskdiff.sampling.guidance import GuidedDenoiser
from maskdiff.sampling.registry import MASKED_SAMPLERS, REGISTRY, SamplerEntry, check_options, get_entry

SPAN = re.compile(r"\[(\d+)\]")
"""A template's masked span: [N] stands for N masked positions."""

Rows = Union[None, str, Sequence[str]]


@dataclass(frozen=True)
class SamplingTarget:
    """What a request is checked against: the facts of one loaded model (and of a server's limits)."""

    kind: str
    """The objective's name, for messages ('masked', 'ar', 'block', ...)."""
    mask_id: int
    """The mask token id (V): the positions to generate."""
    max_length: int
    """The longest sample drawn in one window: the training length L, or a server's lower limit."""
    encode: Callable[[str], Tensor]
    """Text to (P,) token ids (the tokenizer's encode)."""
    own: Optional[str] = None
    """The objective's own sampler (registry name); None: the masked-diffusion samplers."""
    time_independent: bool = False
    """The network ignores t (the cached sampler applies)."""
    any_length: bool = False
    """The own sampler draws any length (block diffusion), stopping at ``eos_id``."""
    eos_id: Optional[int] = None
    """The tokenizer's end-of-text token, for samplers of any length."""
    num_classes: int = 0
    """Classes of a class-conditional model (0: not one); the null class is ``num_classes``."""
    semi_autoregressive: bool = True
    """Masked diffusion beyond ``max_length``, window after window; False: longer is refused."""
    who: str = "the model's"
    """Whose maximum length ``max_length`` is, for messages ("this server's")."""

    @property
    def samplers(self) -> Tuple[str, ...]:
        return (self.own,) if self.own is not None else MASKED_SAMPLERS

    @property
    def default_sampler(self) -> str:
        """The own sampler; else cached for a time-independent network and ancestral for a time-conditioned one."""
        return self.own or ("cached" if self.time_independent else "ancestral")


@dataclass
class SampleRequest:
    """What to sample: ``num`` rows, each from a prompt, a template or all masks."""

    num: int = 4
    """Samples (rows)."""
    sampler: Optional[str] = None
    """A registry name; None: the model's default (its own sampler, else cached or ancestral)."""
    steps: int = 256
    """Reverse steps T (per block for block diffusion; ignored by first-hitting, threshold, autoregressive)."""
    seed: int = 0
    """Seed of the sampler's generator: the same request gives the same samples on the same device."""
    length: Optional[int] = None
    """Tokens per sample with a prompt or none (default: the model's L); a template fixes it."""
    prompt: Rows = None
    """A fixed prefix: one text for every row, or one per row."""
    template: Rows = None
    """Text with [N] spans of N tokens to fill: one for every row, or one per row (all of one length)."""
    block: Optional[int] = None
    """Tokens per window beyond L (semi-autoregressive masked diffusion; default L/4)."""
    options: Dict[str, Any] = field(default_factory=dict)
    """The sampler's options by name (temperature, top_p, grid, eta, ...: sampling/registry.py)."""
    labels: Optional[Tensor] = None
    """(num,) class labels of a class-conditional model (classifier-free guidance)."""
    guidance: float = 0.0
    """Guidance weight w >= -1 with ``labels`` (0: the conditional model, -1: the unconditional one)."""

    def check(self, model: SamplingTarget) -> "CheckedRequest":
        """This request for ``model``, checked: a :class:`CheckedRequest`, or a one-line MaskdiffError."""
        for name in ("num", "steps"):
            _positive(name, getattr(self, name))
        entry = _entry(self.sampler, model)
        prompts, templates = _rows("prompt", self.prompt, self.num), _rows("template", self.template, self.num)
        if prompts and templates:
            raise MaskdiffError("give either a prompt or a template, not both")
        if entry.objective is not None and (templates or self.block is not None):
            raise MaskdiffError(f"templates and blocks apply to masked diffusion models, not to a {model.kind} model")
        options = check_options(entry.name, self.options)
        labels = _labels(self, model)
        out = CheckedRequest(entry, self.num, self.steps, self.seed, 0, model.mask_id, window=model.max_length, options=options,
                             labels=labels, guidance=self.guidance, null_class=model.num_classes)
        L = model.max_length
        if templates:
            ids = [template_ids(t, model) for t in templates]
            n = ids[0].numel()
            if any(i.numel() != n for i in ids):
                raise MaskdiffError(f"the templates are {sorted({i.numel() for i in ids})} tokens long; every row of a request has one length")
            if self.length is not None and self.length != n:
                raise MaskdiffError(f"the template fixes the length at {n} tokens (its text plus its [N] spans); leave out length")
            if n > L:
                raise MaskdiffError(f"the template is {n} tokens long, more than {model.who} maximum length {L}")
            out.length, out.x_init = n, torch.stack(ids)
            return out
        length = L if self.length is None else self.length
        _positive("length", length)
        prefixes = [model.encode(p) if p else None for p in prompts] if prompts else []
        for p in prefixes:
            if p is not None and p.numel() >= length:
                raise MaskdiffError(f"the prompt has {p.numel()} tokens; the sample length {length} leaves nothing to generate")
        if entry.objective is not None and model.any_length:
            out.options["eos_id"] = model.eos_id
            if len({tuple(p.tolist()) if p is not None else () for p in prefixes}) > 1:
                raise MaskdiffError(f"a {model.kind} model takes one prompt for every row")
        elif length > L and entry.objective is not None:
            raise MaskdiffError(f"a {model.kind} model samples at most its training length {L}")
        elif length > L and not model.semi_autoregressive:
            raise MaskdiffError(f"length {length} is above {model.who} maximum length {L}")
        elif length > L:
            out.block = self.block or max(1, L // 4)
            if not 0 < out.block <= L:
                raise MaskdiffError(f"block must be in 1..{L} (the model length), got {out.block}")
            if len({0 if p is None else p.numel() for p in prefixes}) > 1:
                raise MaskdiffError("beyond the model's length every row's prompt must have the same number of tokens")
            out.length, out.prefix = length, torch.stack(prefixes) if prefixes and prefixes[0] is not None else None
            return out
        out.length = length
        if any(p is not None for p in prefixes):
            out.x_init = torch.full((self.num, length), model.mask_id, dtype=torch.long, device="cpu")
            for row, p in enumerate(prefixes):
                if p is not None:
                    out.x_init[row, : p.numel()] = p
        return out


@dataclass
class CheckedRequest:
    """A request checked against a model: what a sampler needs, in tensors."""

    entry: SamplerEntry
    """The sampler (registry entry)."""
    num: int
    """Rows."""
    steps: int
    """Reverse steps T."""
    seed: int
    """Seed of the generator."""
    length: int
    """Tokens per sample."""
    mask_id: int
    """The mask token id."""
    window: int = 0
    """The most tokens one sampler call draws (the model's L)."""
    x_init: Optional[Tensor] = None
    """(num, length) start state on the CPU: fixed tokens, the mask id elsewhere; None: all masks."""
    prefix: Optional[Tensor] = None
    """(num, P) fixed first tokens when the length exceeds the window (semi-autoregressive)."""
    block: Optional[int] = None
    """New tokens per window beyond the first (semi-autoregressive); None: one window."""
    options: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the sampler (the checked options, and eos_id for samplers of any length)."""
    labels: Optional[Tensor] = None
    """(num,) class labels, or None."""
    guidance: float = 0.0
    """Classifier-free guidance weight."""
    null_class: int = 0
    """The null class of a class-conditional model."""
    stop_id: Optional[int] = None
    """Beyond the window (semi-autoregressive): stop adding blocks once every row has generated this token."""

    @property
    def sampler(self) -> str:
        return self.entry.name

    @property
    def initial(self) -> List[int]:
        """Row 0's start state as token ids (the mask id at the positions to generate)."""
        if self.x_init is not None:
            return self.x_init[0].tolist()
        fixed = [] if self.prefix is None else self.prefix[0].tolist()
        return fixed + [self.mask_id] * (self.length - len(fixed))


def template_ids(template: str, model: SamplingTarget) -> Tensor:
    """Token ids of a template where ``[N]`` stands for N masked positions: "to be or [12] to be"."""
    spans = [int(m.group(1)) for m in SPAN.finditer(template)]
    if any(n == 0 for n in spans):
        raise MaskdiffError("a template span [0] fills nothing; write [N] with N >= 1")
    if sum(spans) > model.max_length:  # before anything of that size is made
        raise MaskdiffError(f"the template's [N] spans ask for {sum(spans)} tokens, more than {model.who} maximum length {model.max_length}")
    ids: List[Tensor] = []
    pos = 0
    for m in SPAN.finditer(template):
        if m.start() > pos:
            ids.append(model.encode(template[pos : m.start()]))
        ids.append(torch.full((int(m.group(1)),), model.mask_id, dtype=torch.long, device="cpu"))  # as the tokenizer's ids
        pos = m.end()
    if pos < len(template):
        ids.append(model.encode(template[pos:]))
    if not ids:
        raise MaskdiffError("the template is empty")
    if not spans:
        raise MaskdiffError("the template has no [N] span to fill; write one or more [N] spans, e.g. 'to be or [12] to be'")
    return torch.cat(ids)


def draw(denoise, schedule, request: CheckedRequest, *, generator: torch.Generator, device=None, progress: bool = False,
         callback=None) -> SampleOutput:
    """Run a checked request with a masked-diffusion sampler of the registry on ``denoise``."""
    fn = request.entry.sampler
    kwargs = dict(request.options, device=device, progress=progress)
    if callback is not None:
        kwargs["callback"] = callback
    if request.labels is not None:
        denoise = GuidedDenoiser(denoise, request.guidance, null_class=request.null_class)
        kwargs["cond"] = request.labels.to(device)
    if request.block is not None:
        if request.stop_id is not None:
            kwargs["stop_at"] = request.stop_id
        return semi_autoregressive_sample(fn, denoise, schedule, batch=request.num, total_length=request.length, window=request.window,
                                          block=request.block, generator=generator, prompt=request.prefix, steps=request.steps, **kwargs)
    return fn(denoise, schedule, (request.num, request.length), steps=request.steps, generator=generator, x_init=request.x_init, **kwargs)


def _entry(name: Optional[str], model: SamplingTarget) -> SamplerEntry:
    name = model.default_sampler if name is None else name
    if model.own is not None:
        if name != model.own:
            raise MaskdiffError(f"a {model.kind} model samples with its own sampler ({model.own}); leave out the sampler or choose {model.own}")
        return REGISTRY[model.own]
    entry = get_entry(name)
    if entry.time_independent and not model.time_independent:
        raise MaskdiffError(f"the {name} sampler reuses the network output across time steps and needs a time-independent network; "
                            f"this model is time-conditioned: choose another of: {', '.join(n for n in MASKED_SAMPLERS if n != name)}")
    return entry


def _rows(what: str, rows: Rows, num: int) -> List[Optional[str]]:
    """One text per row, from one text for all or a list of one per row; [] when none is given."""
    if rows is None:
        return []
    if isinstance(rows, str):
        return [rows] * num
    rows = list(rows)
    if len(rows) != num or not all(isinstance(r, str) for r in rows):
        raise MaskdiffError(f"give one {what} for every row or one {what} per row: {num} texts, got {len(rows)}")
    return rows


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MaskdiffError(f"{name} must be a positive integer, got {value!r}")


def _labels(request: SampleRequest, model: SamplingTarget) -> Optional[Tensor]:
    labels, guidance = request.labels, request.guidance
    if guidance < -1:
        raise MaskdiffError(f"the guidance weight must be >= -1 (-1: unconditional, 0: conditional), got {guidance}")
    if (labels is not None or guidance) and not model.num_classes:
        raise MaskdiffError("this run is not class-conditional; labels and guidance need a run trained with --num-classes")
    if labels is None:
        if guidance:
            raise MaskdiffError("guidance needs class labels to guide towards")
        return None
    if tuple(labels.shape) != (request.num,):
        raise MaskdiffError(f"give one label per sample: {request.num} samples, labels of shape {tuple(labels.shape)}")
    return labels
