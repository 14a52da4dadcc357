"""Builders from a RunConfig, and :func:`load`, which turns a run directory back into a usable model.

    >>> import maskdiff
    >>> model = maskdiff.load("runs/demo")            # EMA weights of the newest valid checkpoint
    >>> model.nelbo("to be or not to be")              # nats, an upper bound on -log p
    >>> model.sample(4, steps=256).texts
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch
from torch import Tensor

from maskdiff.checkpoint import prefixed_weights, read_tensors
from maskdiff.config import RunConfig
from maskdiff.denoiser import SUBSDenoiser, check_tokens
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import build_tokenizer, eval_chunks, get_modality  # noqa: F401  (build_tokenizer, eval_chunks: re-exported)
from maskdiff.objectives import Objective, build_objective
from maskdiff.runs import checkpoint_to_load, read_run_config, read_tokenizer
from maskdiff.schedules import Schedule, get_schedule


def build_denoiser(config: RunConfig, vocab_size: int) -> SUBSDenoiser:
    """The denoiser of a masked-diffusion config (its network freshly initialised)."""
    return build_objective(config, vocab_size).model


def build_schedule(config: RunConfig) -> Schedule:
    return get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)


@dataclass
class Samples:
    tokens: Tensor
    texts: List[str]
    nfe: Tensor
    seconds: float
    sampler: str = ""
    steps: int = 0


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
        self.denoiser = objective.model  # a SUBS denoiser, or the next-token model of the autoregressive baseline
        self.schedule = getattr(objective, "schedule", None)  # GenMD4: the learned per-token schedule
        self.checkpoint = checkpoint
        self.step = None

    @property
    def kind(self) -> str:
        return self.objective.kind

    def evaluate(self, tokens: Tensor, valid: Optional[Tensor], *, discrete_steps: Optional[int] = None, **kwargs):
        """NELBO (an exact NLL for the autoregressive baseline) of every row: an EvalResult. kwargs: passes, batch_size, seed, progress."""
        from maskdiff.evaluation.nelbo import evaluate

        def terms(x, t, gen, v):
            return self.objective.eval_terms(x, t, gen, v, discrete_steps=discrete_steps)

        with torch.no_grad():
            result = evaluate(terms, tokens, valid, t_min=self.config.diffusion.t_min, device=self.device, **kwargs)
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

    def template_ids(self, template: str) -> Tensor:
        """Token ids of a template where ``[N]`` stands for N masked positions: "to be or [12] to be"."""
        ids: List[Tensor] = []
        pos = 0
        spans = sum(int(m.group(1)) for m in re.finditer(r"\[(\d+)\]", template))
        if spans > self.config.data.length:  # before anything of that size is made
            raise MaskdiffError(f"the template's [N] spans ask for {spans} tokens, more than the model's maximum length {self.config.data.length}")
        for m in re.finditer(r"\[(\d+)\]", template):
            if m.start() > pos:
                ids.append(self.tokenizer.encode(template[pos : m.start()]))
            ids.append(torch.full((int(m.group(1)),), self.tokenizer.mask_id, dtype=torch.long))
            pos = m.end()
        if pos < len(template):
            ids.append(self.tokenizer.encode(template[pos:]))
        if not ids:
            raise MaskdiffError("the template is empty")
        out = torch.cat(ids)
        if not bool((out == self.tokenizer.mask_id).any()):
            raise MaskdiffError("the template has no [N] span to fill, e.g. 'to be or [12] to be'")
        return out

    @torch.no_grad()
    def sample(
        self,
        num: int = 4,
        *,
        length: Optional[int] = None,
        steps: int = 256,
        sampler: str = "cached",
        seed: int = 0,
        prompt: Optional[str] = None,
        template: Optional[str] = None,
        block: Optional[int] = None,
        progress: bool = False,
        **sampler_kwargs,
    ) -> Samples:
        """Draw ``num`` samples.

        prompt: a fixed prefix; template: text with ``[N]`` spans to fill (infilling); length beyond
        the training length L is generated semi-autoregressively, ``block`` tokens at a time
        (default L/4). Extra keyword arguments go to the sampler (temperature, top_p, grid, callback).
        """
        from maskdiff.sampling import get_sampler, semi_autoregressive_sample
        from maskdiff.sampling.conditioning import prompt_state

        L = self.config.data.length
        gen = torch.Generator(device=self.device).manual_seed(seed)
        sampler_kwargs["device"] = self.device
        if "kv_cache" in sampler_kwargs and not self.objective.any_length:
            raise MaskdiffError(f"the key-value cache switch applies to block diffusion models, not to a {self.kind} model")
        if self.objective.samples_with is not None:  # SEDD's network read as a softmax samples as masked diffusion
            return self._sample_other(num, length, steps, sampler, gen, prompt, template, block, progress, **sampler_kwargs)
        fn = get_sampler(sampler)
        if prompt is not None and template is not None:
            raise MaskdiffError("give either a prompt or a template, not both")
        if template is not None:
            ids = self.template_ids(template)
            if length is not None and length != ids.numel():
                raise MaskdiffError(f"the template fixes the length at {ids.numel()}; leave out the length")
            if ids.numel() > L:
                raise MaskdiffError(f"the template is {ids.numel()} tokens long, more than the model's maximum length {L}")
            x_init = ids[None].repeat(num, 1)
            out = fn(self.denoiser, self.schedule, tuple(x_init.shape), steps=steps, generator=gen, x_init=x_init, progress=progress, **sampler_kwargs)
        else:
            length = length or L
            prefix = self.tokenizer.encode(prompt) if prompt else None
            if prefix is not None and prefix.numel() >= length:
                raise MaskdiffError(f"the prompt has {prefix.numel()} tokens; the sample length {length} leaves nothing to generate")
            if length > L:
                block = block or max(1, L // 4)
                out = semi_autoregressive_sample(fn, self.denoiser, self.schedule, batch=num, total_length=length, window=L,
                                                 block=block, generator=gen, prompt=prefix, steps=steps, progress=progress, **sampler_kwargs)
            else:
                x_init = prompt_state(prefix, length, self.tokenizer.mask_id, num) if prefix is not None else None
                out = fn(self.denoiser, self.schedule, (num, length), steps=steps, generator=gen, x_init=x_init, progress=progress, **sampler_kwargs)
        tokens = out.tokens.cpu()
        return Samples(tokens, self.tokenizer.decode_batch(tokens), out.nfe, out.seconds, sampler, steps)

    def generate(self, prompt: Optional[str] = None, *, infill: Optional[str] = None, num: int = 1, length: Optional[int] = None,
                 steps: int = 256, sampler: str = "cached", seed: int = 0, **sampler_kwargs) -> List[str]:
        """Text from the model: ``num`` strings.

        prompt: the text continues it (the prompt's tokens stay fixed and come first in each string);
        infill: a text with ``[N]`` spans, each filled with N tokens ("to be or [12] to be"); neither:
        unconditional samples. length: tokens per sample (default the training length; longer is generated
        semi-autoregressively). Any sampler (see maskdiff.sampling.SAMPLERS) and its keyword arguments
        (temperature, top_p, grid) apply.
        """
        if prompt is not None and infill is not None:
            raise MaskdiffError("give either a prompt or an infill template, not both")
        if infill is not None and "[" not in infill:
            raise MaskdiffError("an infill template needs [N] spans to fill, e.g. 'to be or [12] to be'")
        out = self.sample(num, length=length, steps=steps, sampler=sampler, seed=seed, prompt=prompt, template=infill, **sampler_kwargs)
        return out.texts

    def save_pretrained(self, out, *, evaluation: Optional[dict] = None, overwrite: bool = False) -> Path:
        """Write this model as a folder that Hugging Face tooling recognises (maskdiff.pretrained): config.json,
        model.safetensors with the weights this pipeline holds (EMA when loaded with ema=True, the default),
        the tokenizer and a model card. evaluation: the measured bound for the card (see ``maskdiff export``)."""
        from maskdiff.pretrained import write_pretrained

        return write_pretrained(out, self.config, self.tokenizer, self.objective.state_dict(), weights_kind=getattr(self, "weights", "model"),
                                step=self.step, evaluation=evaluation, source=getattr(self, "source", ""), overwrite=overwrite)

    def _sample_other(self, num, length, steps, sampler, gen, prompt, template, block, progress, **kwargs) -> Samples:
        """GenMD4 (its own sampler, MD4 Sec. 5), the autoregressive baseline (left to right) and block
        diffusion (block by block, any length, stopping at the tokenizer's end-of-text token)."""
        from maskdiff.sampling.conditioning import prompt_state

        own = self.objective.samples_with
        if sampler not in (own, "cached", "ancestral"):
            raise MaskdiffError(f"a {self.kind} model samples with its own sampler ({own}); leave out --sampler")
        if template is not None or block is not None or kwargs.get("grid", "uniform") != "uniform":
            raise MaskdiffError(f"templates, blocks and grids apply to masked diffusion models, not to a {self.kind} model")
        L = self.config.data.length
        length = length or L
        if self.objective.any_length:
            kwargs["eos_id"] = getattr(self.tokenizer, "eos_id", None)
        elif length > L:
            raise MaskdiffError(f"a {self.kind} model samples at most its training length {L}")
        prefix = self.tokenizer.encode(prompt) if prompt else None
        if prefix is not None and prefix.numel() >= length:
            raise MaskdiffError(f"the prompt has {prefix.numel()} tokens; the sample length {length} leaves nothing to generate")
        x_init = prompt_state(prefix, length, self.tokenizer.mask_id, num) if prefix is not None else None
        out = self.objective.own_sample((num, length), steps=steps, generator=gen, x_init=x_init, progress=progress, **kwargs)
        tokens = out.tokens.cpu()
        lengths = out.extra.get("lengths")  # block diffusion: each sample up to and including its end-of-text token
        texts = (self.tokenizer.decode_batch(tokens) if lengths is None
                 else [self.tokenizer.decode(row[: int(n)]) for row, n in zip(tokens, lengths)])
        return Samples(tokens, texts, out.nfe, out.seconds, own, out.steps)


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
    objective.load_state_dict(prefixed_weights(tensors, prefix, path), path)
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
    objective.load_state_dict(tensors, folder)
    pipe = Pipeline(config, tokenizer, objective, None, device=device)
    pipe.step, pipe.weights, pipe.source = meta.get("step"), meta.get("weights", "model"), meta.get("source", "")
    return pipe
