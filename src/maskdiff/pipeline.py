"""Builders from a RunConfig, and :func:`load`, which turns a run directory back into a usable model.

    >>> import maskdiff
    >>> model = maskdiff.load("runs/demo")            # EMA weights of the newest valid checkpoint
    >>> model.nelbo("to be or not to be")              # nats, an upper bound on -log p
    >>> model.sample(4, steps=256).texts
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from maskdiff.checkpoint import network_weights
from maskdiff.config import RunConfig
from maskdiff.denoiser import SUBSDenoiser, check_tokens
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import get_modality
from maskdiff.objectives import Objective, build_objective
from maskdiff.network_runtime import NetworkRuntime, apply_runtime
from maskdiff.runs import checkpoint_to_load, read_distill_record, read_run_config, read_tokenizer, recommended_steps, write_distill_record
from maskdiff.sampling.common import SampleOutput
from maskdiff.sampling.request import CheckedRequest, SampleRequest, SamplingTarget
from maskdiff.sampling.request import template_ids as parse_template
from maskdiff.sampling.rows import CheckedRows, Row, RowsRequest, eos_cut, fixed_end
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


@dataclass
class RowResult:
    """One row of a many-prompts call (:meth:`Pipeline.run_rows`)."""

    index: int
    """The row's place in the input."""
    text: str
    """The decoded row: prompt (or template) and generated tokens, cut before its first generated end-of-text token."""
    tokens: List[int]
    """Every token id of the row as drawn (past the cut too; block and semi-autoregressive rows end where generation stopped)."""
    kept: int
    """How many of ``tokens`` the text holds."""
    eos: bool
    """Whether the text was cut at an end-of-text token."""
    network_calls: int
    """Network calls the row cost (its own, as if drawn alone)."""
    seconds: float
    """Wall-clock of the row's sampler (rows of one micro-batch run together: about the micro-batch's time)."""
    seed: int
    """The seed of the row's generator (its own, or derived from the request's seed and its index)."""


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
        self.recommended_steps: Optional[int] = None  # a distilled run's grid (its distill.json, maskdiff.runs)
        self.distill: dict = {}  # that distill.json: how the run was made; {} for other runs (an export copies it)

    @property
    def default_steps(self) -> int:
        """The steps of a sample request that names none: the grid a distilled run was made for, else 256."""
        return self.recommended_steps or 256

    @property
    def kind(self) -> str:
        return self.objective.kind

    def set_runtime(self, precision: str = "fp32", compile: bool = False) -> None:
        """How the network runs from now on, sampling and evaluation alike: precision 'fp32' (the default) or 'bf16' (autocast of
        the network call only), compile: torch.compile its forward. Once per pipeline (maskdiff.network_runtime)."""
        apply_runtime(self.objective.network, NetworkRuntime(precision, compile), self.device)

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
            from maskdiff.data.packing import length_log_probs, length_log_probs_from_counts
            from maskdiff.data.prepared import is_prepared
            from maskdiff.modalities.text import prepared_rows, split_rows

            L = self.config.data.length
            if is_prepared(self.config.data.corpus):  # counted from the document offsets: no row is built
                counts = prepared_rows(self.config.data.corpus, self.tokenizer, "train", L).length_counts()
                self._length_log_probs = length_log_probs_from_counts(counts, L)
            else:
                _, valid = split_rows(self.config, self.tokenizer, "train")
                self._length_log_probs = length_log_probs(valid, L)
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

    def run(self, request: Union[SampleRequest, CheckedRequest], *, progress: bool = False, callback=None,
            stop_at_eos: bool = False) -> Samples:
        """Run a request and decode it: :class:`Samples`. stop_at_eos: each text stops before the first
        end-of-text token generated after the row's fixed tokens (the tokens are kept whole)."""
        checked = request.check(self.target()) if isinstance(request, SampleRequest) else request
        out = self.draw(checked, progress=progress, callback=callback)
        tokens = out.tokens
        eos_id = getattr(self.tokenizer, "eos_id", None) if stop_at_eos else None
        steps = checked.steps if checked.entry.objective is None else out.steps
        lengths = out.extra.get("lengths") if checked.entry.objective is not None else None  # block diffusion: up to and including EOS
        if lengths is None and eos_id is None:
            return Samples(tokens, self.tokenizer.decode_batch(tokens), out.nfe, out.seconds, checked.sampler, steps)
        texts = []
        for i, row in enumerate(tokens):
            n = row.numel() if lengths is None else int(lengths[i])
            start = fixed_end(checked.x_init[i].tolist(), checked.mask_id) if checked.x_init is not None else (
                0 if checked.prefix is None else checked.prefix.shape[1])
            texts.append(self.tokenizer.decode(row[: eos_cut(row[:n], start, eos_id)]))
        return Samples(tokens, texts, out.nfe, out.seconds, checked.sampler, steps)

    def run_rows(self, request: Union[RowsRequest, CheckedRows], *, on_row: Optional[Callable[[RowResult], None]] = None,
                 callback=None) -> List[RowResult]:
        """Many prompts or templates, each its own length and seed (sampling/rows.py): one :class:`RowResult`
        per row, in input order. Masked-diffusion rows are drawn ``batch_size`` at a time with their network
        calls batched (sampling/batch.py); a model with its own sampler (autoregressive, block, GenMD4) draws
        them one by one. Either way a row's tokens depend on its own seed only. ``on_row``: called with each
        result as its micro-batch finishes; ``callback``: each row's state after every step."""
        from maskdiff.sampling.batch import draw_rows

        checked = request.check(self.target()) if isinstance(request, RowsRequest) else request
        results: List[Optional[RowResult]] = [None] * len(checked.rows)

        def finished(i: int, out) -> None:
            results[i] = self._row_result(i, checked, out)
            if on_row is not None:
                on_row(results[i])

        if self.objective.samples_with is None:
            draw_rows(self.denoiser, self.schedule, checked, device=self.device, on_row=finished, callback=callback)
        else:
            for batch in checked.batches():
                for i in batch:
                    finished(i, self.draw(checked.rows[i], callback=callback))
        return results  # type: ignore[return-value]

    def _row_result(self, i: int, checked: CheckedRows, out) -> RowResult:
        request = checked.rows[i]
        row = out.tokens[0].cpu()
        lengths = out.extra.get("lengths")  # block diffusion: up to and including the end-of-text token
        n = row.numel() if lengths is None else int(lengths[0])
        kept = eos_cut(row[:n], fixed_end(request.initial, request.mask_id), checked.eos_id)
        return RowResult(i, self.tokenizer.decode(row[:kept]), row[:n].tolist(), kept, kept < n, int(out.nfe[0]), out.seconds,
                         request.seed)

    def sample(
        self,
        num: int = 4,
        *,
        length: Optional[int] = None,
        steps: Optional[int] = None,
        sampler: Optional[str] = None,
        seed: int = 0,
        prompt: Optional[str] = None,
        template: Optional[str] = None,
        block: Optional[int] = None,
        progress: bool = False,
        callback=None,
        stop_at_eos: bool = False,
        **options,
    ) -> Samples:
        """Draw ``num`` samples.

        sampler: a name of maskdiff.sampling.REGISTRY (default: the model's own sampler, else cached for a
        time-independent network and ancestral otherwise). prompt: a fixed prefix; template: text with
        ``[N]`` spans to fill (infilling); either may be a list with one text per row. length beyond the
        training length L is generated semi-autoregressively, ``block`` tokens at a time (default L/4).
        Other keyword arguments are the sampler's options (temperature, top_p, grid, ...: its registry
        entry); callback is called with the (num, length) state after each step. stop_at_eos: each text
        stops before its first generated end-of-text token (see :meth:`run`).
        """
        steps = self.default_steps if steps is None else steps
        request = SampleRequest(num=num, sampler=sampler, steps=steps, seed=seed, length=length, prompt=prompt, template=template,
                                block=block, options=options)
        return self.run(request, progress=progress, callback=callback, stop_at_eos=stop_at_eos)

    def generate(self, prompt: Optional[str] = None, *, infill: Optional[str] = None, num: int = 1,
                 length: Optional[Union[int, Sequence[int]]] = None, steps: Optional[int] = None, sampler: Optional[str] = None, seed: int = 0,
                 prompts: Optional[Sequence[str]] = None, templates: Optional[Sequence[str]] = None, batch_size: int = 8,
                 stop_at_eos: Optional[bool] = None, **options) -> List[str]:
        """Text from the model: ``num`` strings, or one per prompt (template) of ``prompts`` (``templates``).

        prompt: the text continues it (the prompt's tokens stay fixed and come first in each string);
        infill: a text with ``[N]`` spans, each filled with N tokens ("to be or [12] to be"); neither:
        unconditional samples. length: tokens per sample (default the training length; longer is generated
        semi-autoregressively). Any sampler (see maskdiff.sampling.REGISTRY) and its options
        (temperature, top_p, grid) apply.

        prompts / templates: many rows in one call, each drawn with its own seed derived from ``seed`` and
        its index (:meth:`run_rows`); ``length`` is then one length for every prompt or a list of one per
        prompt; ``batch_size`` rows are drawn together. stop_at_eos: cut each text before its first
        generated end-of-text token; None: yes when there is a prompt or a template and the tokenizer has
        one (GPT-2 BPE ``<|endoftext|>``, BERT ``[SEP]``), no for unconditional samples.
        """
        eos = getattr(self.tokenizer, "eos_id", None) is not None
        steps = self.default_steps if steps is None else steps
        if prompts is not None or templates is not None:
            if prompt is not None or infill is not None or num != 1:
                raise MaskdiffError("prompts and templates give the rows; leave out prompt, infill and num")
            texts = list(prompts if prompts is not None else templates)
            lengths = _lengths(length, len(texts))
            rows = [Row(prompt=t, length=n) if prompts is not None else Row(template=t, length=n) for t, n in zip(texts, lengths)]
            request = RowsRequest(rows, sampler=sampler, steps=steps, seed=seed, options=options, batch_size=batch_size,
                                  stop_at_eos=stop_at_eos)
            return [r.text for r in self.run_rows(request)]
        if not isinstance(length, (int, type(None))):
            raise MaskdiffError("a list of lengths goes with a list of prompts or templates; give one length")
        stop = (prompt is not None or infill is not None) and eos if stop_at_eos is None else stop_at_eos
        if stop and not eos:
            raise MaskdiffError("this model's tokenizer has no end-of-text token to stop at; leave out stop_at_eos")
        request = SampleRequest(num=num, sampler=sampler, steps=steps, seed=seed, length=length, prompt=prompt, template=infill,
                                options=options)
        return self.run(request, stop_at_eos=stop).texts

    def save_pretrained(self, out, *, evaluation: Optional[dict] = None, overwrite: bool = False) -> Path:
        """Write this model as a folder that Hugging Face tooling recognises (maskdiff.pretrained): config.json,
        model.safetensors with the weights this pipeline holds (EMA when loaded with ema=True, the default),
        the tokenizer and a model card. evaluation: the measured bound for the card (see ``maskdiff export``)."""
        from maskdiff.pretrained import write_pretrained

        out = write_pretrained(out, self.config, self.tokenizer, self.objective.state_dict(), weights_kind=getattr(self, "weights", "model"),
                               step=self.step, evaluation=evaluation, source=getattr(self, "source", ""), overwrite=overwrite)
        if self.distill:  # a distilled model: the folder samples at its grid too
            write_distill_record(out, self.distill)
        return out


def _lengths(length, rows: int) -> List[Optional[int]]:
    """One length per row from one length for all (or None: each row's default) or a list of one per row."""
    if length is None or isinstance(length, int):
        return [length] * rows
    length = list(length)
    if len(length) != rows:
        raise MaskdiffError(f"give one length for every row or one length per row: {rows} rows, got {len(length)} lengths")
    return length


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
    prefix, weights = network_weights(path, state, ema)  # whole or sharded, in this process
    objective = build_objective(config, tokenizer.vocab_size)
    objective.load_weights(weights, path)
    pipe = Pipeline(config, tokenizer, objective, path, device=device)
    pipe.step, pipe.weights = state.get("step"), prefix
    pipe.distill, pipe.recommended_steps = read_distill_record(run_dir), recommended_steps(run_dir)
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
    pipe.distill, pipe.recommended_steps = read_distill_record(folder), recommended_steps(folder)  # an exported distilled run
    return pipe
