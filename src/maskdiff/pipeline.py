"""Builders from a RunConfig, and :func:`load`, which turns a run directory back into a usable model.

    >>> import maskdiff
    >>> model = maskdiff.load("runs/demo")            # EMA weights of the newest valid checkpoint
    >>> model.nelbo("to be or not to be")              # nats, an upper bound on -log p
    >>> model.sample(4, steps=256).texts
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch
from torch import Tensor

from maskdiff.checkpoint import prefixed_weights, read_tensors
from maskdiff.config import RunConfig
from maskdiff.denoiser import SUBSDenoiser, check_tokens
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import get_modality
from maskdiff.objectives import Objective, build_objective
from maskdiff.runs import checkpoint_to_load, read_run_config, read_tokenizer
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.request import CheckedRequest, SampleRequest, SamplingTarget
from maskdiff.sampling.request import template_ids as parse_template
from maskdiff.schedules import Schedule, get_schedule


def build_denoiser(config: RunConfig, vocab_size: int) -> SUBSDenoiser:
    """The denoiser of a masked-diffusion config (its network freshly initialised)."""
    return build_objective(config, vocab_size).denoiser


def build_schedule(config: RunConfig) -> Schedule:
    return get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)


@dataclass
class Samples:
    """Decoded samples of a request."""

    tokens: Tensor
    """(num, length) token ids on the CPU."""
    texts: List[str]
    """The decoded rows (block diffusion: each up to and including its end-of-text token)."""
    nfe: Tensor
    """(num,) network calls each sample cost."""
    seconds: float
    """Wall-clock of the sampler."""
    sampler: str = ""
    """The sampler's registry name."""
    steps: int = 0
    """Reverse steps (the request's T; the own sampler's count for GenMD4, autoregressive and block models)."""


class Pipeline:
    """A trained model: config, tokenizer, schedule and denoiser, with NELBO and sampling helpers.

    ``device``: where the model lives and runs (see :func:`load`). Inputs are moved there and results
    come back on the CPU. Sampling draws from a generator on this device (so a seed gives the same samples
    as before on the CPU, and other samples on a GPU); evaluation draws t and masks from CPU generators,
    so its estimate is the same on every device up to the network's arithmetic.
    """

    def __init__(self, config: RunConfig, tokenizer, objective: Objective, checkpoint: Optional[Path] = None, device="cpu"):
        self.config = config
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.objective = objective.to(self.device).eval()
        self.denoiser = objective.denoiser  # a SUBS or block denoiser, or the next-token model of the autoregressive baseline
        self.schedule = objective.schedule  # GenMD4: the learned per-token schedule; None for the autoregressive baseline
        self.checkpoint = checkpoint
        self.step = None

    @property
    def kind(self) -> str:
        return self.objective.kind

    def evaluate(self, tokens: Tensor, valid: Optional[Tensor], *, discrete_steps: Optional[int] = None, cond: Optional[Tensor] = None,
                 **kwargs):
        """NELBO (an exact NLL for the autoregressive baseline) of every row: an EvalResult. kwargs: passes, batch_size, seed, progress.
        cond: (N, L) bool, each row's prompt: the NELBO of the rest of the row (the response) given it."""
        from maskdiff.evaluation.nelbo import evaluate

        self.objective.check_conditional(cond)

        def terms(x, t, gen, v, *c):
            return self.objective.eval_terms(x, t, gen, v, discrete_steps=discrete_steps, **({"cond": c[0]} if c else {}))

        with torch.no_grad():
            result = evaluate(terms, tokens, valid, t_min=self.config.diffusion.t_min, device=self.device, cond=cond, **kwargs)
        result.bound = not self.objective.exact_likelihood
        if valid is not None and self.charges_length:
            # 'pad' rows tell the network (and the AR model) where each row ends: the terms above bound
            # -log p(x | length); adding -log p(length) makes the figure a bound on -log p(x) again.
            from maskdiff.data.packing import length_nll

            result.length = length_nll(valid, self.length_log_probs())
            result.nelbo = result.nelbo + result.length
        return result

    @property
    def charges_length(self) -> bool:
        """Whether evaluation adds -log p(length) to each row (text runs with 'pad' packing)."""
        return get_modality(self.config).charges_length(self.config)

    def length_log_probs(self) -> Tensor:
        """log p(row length), (L + 1,): the training split's row lengths with add-one smoothing, computed
        once per pipeline from the training data (deterministic, so nothing is stored in the run)."""
        if getattr(self, "_length_log_probs", None) is None:
            from maskdiff.data.packing import length_log_probs
            from maskdiff.modalities.text import split_rows

            _, valid = split_rows(self.config, self.tokenizer, "train")
            self._length_log_probs = length_log_probs(valid, self.config.data.length)
        return self._length_log_probs

    def describe_estimate(self, discrete_steps: Optional[int] = None) -> str:
        """What :meth:`evaluate` computes, in words."""
        return self.objective.describe_estimate(discrete_steps)

    def encode(self, text: Union[str, List[str]]) -> Tensor:
        rows = [self.tokenizer.encode(t) for t in ([text] if isinstance(text, str) else text)]
        lengths = {r.numel() for r in rows}
        if len(lengths) != 1:
            raise MaskdiffError("texts in one batch must have the same length after normalization")
        x = torch.stack(rows)
        check_tokens(x, self.tokenizer.vocab_size, allow_mask=False, max_length=self.config.data.length)
        return x

    @torch.no_grad()
    def nelbo(self, text: Union[str, List[str]], passes: int = 16, seed: int = 0) -> Tensor:
        """Monte-Carlo NELBO in nats per sequence (averaged over ``passes``), an upper bound on -log p."""
        x = self.encode(text)
        return self.evaluate(x, None, passes=passes, seed=seed).nelbo

    def conditional_nelbo(self, prompts: List[str], responses: List[str], *, passes: int = 16, seed: int = 0, batch_size: int = 64):
        """NELBO of each response given its prompt, rows laid out as training lays them (data/pairs.py: [prompt]
        [response][end-of-text up to L]): an EvalResult whose ``nelbo`` is nats per response (end-of-text
        included) and whose ``per_sequence()`` and ``summary()`` give the 95% intervals."""
        from maskdiff.data.pairs import encode_pairs

        if len(prompts) != len(responses):
            raise MaskdiffError(f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt")
        rows = encode_pairs(list(zip(prompts, responses)), self.tokenizer, self.config.data.length, "the pairs")
        return self.evaluate(rows.tokens, None, cond=rows.cond, passes=passes, seed=seed, batch_size=batch_size)

    def template_ids(self, template: str) -> Tensor:
        """Token ids of a template where ``[N]`` stands for N masked positions: "to be or [12] to be"."""
        return parse_template(template, self.target())

    def target(self, **limits) -> SamplingTarget:
        """What a :class:`SampleRequest` is checked against for this model; ``limits`` narrow it (a server's
        max_length, semi_autoregressive, who)."""
        obj = self.objective
        facts = dict(kind=obj.kind, mask_id=self.tokenizer.mask_id, max_length=self.config.data.length, encode=self.tokenizer.encode,
                     own=obj.samples_with, time_independent=obj.denoiser.time_independent, any_length=obj.any_length,
                     eos_id=getattr(self.tokenizer, "eos_id", None), num_classes=self.config.model.num_classes)
        return SamplingTarget(**dict(facts, **limits))

    def draw(self, request: Union[SampleRequest, CheckedRequest], *, progress: bool = False, callback=None) -> SampleOutput:
        """Run a request (checked here unless it already is) through the objective: a SampleOutput, tokens on the CPU."""
        checked = request.check(self.target()) if isinstance(request, SampleRequest) else request
        out = self.objective.sample(checked, progress=progress, callback=callback)
        out.tokens = out.tokens.cpu()
        return out

    def run(self, request: Union[SampleRequest, CheckedRequest], *, progress: bool = False, callback=None) -> Samples:
        """Run a request and decode it: :class:`Samples`."""
        checked = request.check(self.target()) if isinstance(request, SampleRequest) else request
        out = self.draw(checked, progress=progress, callback=callback)
        tokens = out.tokens
        if checked.entry.objective is None:
            return Samples(tokens, self.tokenizer.decode_batch(tokens), out.nfe, out.seconds, checked.sampler, checked.steps)
        lengths = out.extra.get("lengths")  # block diffusion: each sample up to and including its end-of-text token
        texts = (self.tokenizer.decode_batch(tokens) if lengths is None
                 else [self.tokenizer.decode(row[: int(n)]) for row, n in zip(tokens, lengths)])
        return Samples(tokens, texts, out.nfe, out.seconds, checked.sampler, out.steps)

    def sample(
        self,
        num: int = 4,
        *,
        length: Optional[int] = None,
        steps: int = 256,
        sampler: Optional[str] = None,
        seed: int = 0,
        prompt: Optional[str] = None,
        template: Optional[str] = None,
        block: Optional[int] = None,
        progress: bool = False,
        callback=None,
        **options,
    ) -> Samples:
        """Draw ``num`` samples.

        sampler: a name of maskdiff.sampling.REGISTRY (default: the model's own sampler, else cached for a
        time-independent network and ancestral otherwise). prompt: a fixed prefix; template: text with
        ``[N]`` spans to fill (infilling); either may be a list with one text per row. length beyond the
        training length L is generated semi-autoregressively, ``block`` tokens at a time (default L/4).
        Other keyword arguments are the sampler's options (temperature, top_p, grid, ...: its registry
        entry); callback is called with the (num, length) state after each step.
        """
        request = SampleRequest(num=num, sampler=sampler, steps=steps, seed=seed, length=length, prompt=prompt, template=template,
                                block=block, options=options)
        return self.run(request, progress=progress, callback=callback)

    def generate(self, prompt: Optional[str] = None, *, infill: Optional[str] = None, num: int = 1, length: Optional[int] = None,
                 steps: int = 256, sampler: Optional[str] = None, seed: int = 0, **options) -> List[str]:
        """Text from the model: ``num`` strings.

        prompt: the text continues it (the prompt's tokens stay fixed and come first in each string);
        infill: a text with ``[N]`` spans, each filled with N tokens ("to be or [12] to be"); neither:
        unconditional samples. length: tokens per sample (default the training length; longer is generated
        semi-autoregressively). Any sampler (see maskdiff.sampling.REGISTRY) and its options
        (temperature, top_p, grid) apply.
        """
        return self.sample(num, length=length, steps=steps, sampler=sampler, seed=seed, prompt=prompt, template=infill, **options).texts

    def save_pretrained(self, out, *, evaluation: Optional[dict] = None, overwrite: bool = False) -> Path:
        """Write this model as a folder that Hugging Face tooling recognises (maskdiff.pretrained): config.json,
        model.safetensors with the weights this pipeline holds (EMA when loaded with ema=True, the default),
        the tokenizer and a model card. evaluation: the measured bound for the card (see ``maskdiff export``)."""
        from maskdiff.pretrained import write_pretrained

        return write_pretrained(out, self.config, self.tokenizer, self.objective.state_dict(), weights_kind=getattr(self, "weights", "model"),
                                step=self.step, evaluation=evaluation, source=getattr(self, "source", ""), overwrite=overwrite)


def load(run_dir, *, checkpoint: Optional[Union[str, Path]] = None, ema: bool = True, device: str = "cpu") -> Pipeline:
    """Load a run directory: its config, tokenizer and the weights of a checkpoint (default: newest valid).

    ema: use the exponential moving average of the weights (the default for evaluation and sampling).
    device: 'cpu' (the default), 'cuda' or 'auto' (a GPU when PyTorch sees one), or a torch.device.
    """
    from maskdiff.distributed import pick_device

    device = pick_device(device) if isinstance(device, str) and device in ("auto", "cpu", "cuda") else torch.device(device)  # fail first
    run_dir = Path(run_dir)
    from maskdiff.pretrained import is_pretrained_folder

    if is_pretrained_folder(run_dir):
        if checkpoint is not None or not ema:
            raise MaskdiffError(f"{run_dir} is a model folder with one set of weights; leave out the checkpoint and raw-weights choices")
        return from_pretrained(run_dir, device=device)
    config = read_run_config(run_dir)
    tokenizer = read_tokenizer(run_dir)
    path, state = checkpoint_to_load(run_dir, checkpoint)
    tensors = read_tensors(path / "model.safetensors")
    objective = build_objective(config, tokenizer.vocab_size)
    prefix = "ema" if ema and any(k.startswith("ema.") for k in tensors) else "model"
    objective.load_weights(prefixed_weights(tensors, prefix, path), path)
    pipe = Pipeline(config, tokenizer, objective, path, device=device)
    pipe.step = state.get("step")
    pipe.weights = prefix
    return pipe


def from_pretrained(name_or_path, *, device: str = "cpu", revision: Optional[str] = None) -> Pipeline:
    """Load a model folder written by :meth:`Pipeline.save_pretrained`, ``maskdiff export`` or ``maskdiff convert``:
    a local folder (offline), or a hub name ``owner/name`` where a hub is reachable."""
    from maskdiff.distributed import pick_device
    from maskdiff.pretrained import read_pretrained, resolve

    device = pick_device(device) if isinstance(device, str) and device in ("auto", "cpu", "cuda") else torch.device(device)
    folder = resolve(name_or_path, revision)
    config, tokenizer, tensors, meta = read_pretrained(folder)
    objective = build_objective(config, tokenizer.vocab_size)
    objective.load_weights(tensors, folder)
    pipe = Pipeline(config, tokenizer, objective, None, device=device)
    pipe.step, pipe.weights, pipe.source = meta.get("step"), meta.get("weights", "model"), meta.get("source", "")
    return pipe
