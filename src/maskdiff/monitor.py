"""Training you can watch: what a run reports while it trains (docs/scale.md, "Watching a run").

Every ``train.log_every`` steps one record goes to ``log.jsonl``, beside the progress bar, to TensorBoard
event files in ``RUN/tb`` (when the ``tensorboard`` package is installed) and to Weights & Biases
(``train.wandb``): the training NELBO estimate, the learning rate, the gradient norm, tokens/s and the
model FLOP utilisation (MFU). Every ``train.eval_every`` steps the record also holds the validation NELBO
with its 95% interval on a fixed held-out subset; every ``train.sample_every`` steps a few samples are
written to ``RUN/samples/``.

None of this changes what training computes: evaluation and sampling run without gradients, in eval mode,
from their own generators (the global random state is restored after them), on the EMA weights swapped in
and back bit for bit; their time is left out of tokens/s.
"""
from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.distributed import Context, local
from maskdiff.errors import MaskdiffError
from maskdiff.evaluation.nelbo import EvalResult, nelbo_estimates
from maskdiff.loss import scored_positions
from maskdiff.monitor_sinks import Sinks

EVAL_SEED = 0
"""Seed of the validation estimates' t and masks: the same draws at every evaluation and in every run, so
that the figures of two evaluations differ by the weights only."""
SAMPLE_SEED = 0
"""Seed of the samples drawn during training: the same draws every time, so that successive samples differ
by the weights only."""
EVAL_BATCH = 16
"""Validation rows per forward pass and per stratified draw of t, unless train.micro_batch_size (or a smaller
train.batch_size) sets it: a figure that does not depend on the number of processes."""

# Datasheet peak dense bf16 tensor throughput per GPU, TFLOP/s (without sparsity), matched in order
# against torch.cuda.get_device_name(): the more specific names first.
PEAK_BF16_TFLOPS: Tuple[Tuple[str, float], ...] = (
    (r"H100.*PCIe", 756.0),
    (r"H100.*NVL", 835.0),
    (r"H100", 989.0),  # SXM
    (r"H200.*NVL", 835.0),
    (r"H200", 989.0),  # SXM
    (r"GH200", 989.0),
    (r"B200", 2250.0),
    (r"A100", 312.0),
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)


def peak_flops(device: torch.device, tflops: float = 0.0) -> Tuple[Optional[float], str]:
    """(peak FLOP/s of one device, where the figure comes from): ``tflops`` when given, else the datasheet
    figure of a known GPU, else (None, why not)."""
    if tflops:
        return tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for the CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for pattern, value in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return value * 1e12, f"{name} datasheet bf16 dense"
    return None, f"{name} is not in the table of peaks (give --peak-tflops)"


def flops_per_token(objective, length: int) -> Optional[float]:
    """Training FLOPs per token of the objective's network (forward and backward), counting every pass it
    makes per sequence (GenMD4's draws of x_t, block diffusion's two streams); None when the network has
    no FLOP formula (a Hugging Face backbone, MDLM's DiT)."""
    network = objective.network
    if not hasattr(network, "flops_per_token"):
        return None
    return network.flops_per_token(length) * objective.noise_draws * objective.streams


@contextmanager
def ema_swapped_in(params: List[Tensor], ema: Optional[List[Tensor]]):
    """The EMA weights in the parameters' storage for the duration (each rank its own shards), then the
    trained weights back, bit for bit. Without an EMA the weights stay as they are."""
    if ema is None:
        yield
        return
    with torch.no_grad():
        kept = [local(p).detach().clone() for p in params]
        for p, e in zip(params, ema):
            local(p).copy_(e)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, k in zip(params, kept):
                local(p).copy_(k)


def validation_nelbo(objective, tokens: Tensor, valid: Tensor, *, t_min: float, batch: int, ctx: Context,
                     cond: Optional[Tensor] = None) -> EvalResult:
    """The NELBO of each row of ``tokens`` (N, L) with the estimator of maskdiff.evaluation.nelbo, the rows
    cut into batches of ``batch`` and batch b estimated with seed EVAL_SEED + b: the same figure for any
    number of processes. The batches are dealt out to the ranks and the estimates summed over them; a rank
    left without a batch in a round estimates the first one again and drops it, because under FSDP2 every
    rank takes part in every forward pass."""
    N = tokens.shape[0]
    starts = list(range(0, N, batch))
    est = torch.zeros(N, dtype=torch.float64)

    def terms(x, t, gen, v, c=None):
        return objective.eval_terms(x, t, gen, v) if c is None else objective.eval_terms(x, t, gen, v, cond=c)

    for k in range(-(-len(starts) // ctx.world)):
        b = k * ctx.world + ctx.rank
        lo = starts[b] if b < len(starts) else 0
        rows = slice(lo, lo + batch)
        value = nelbo_estimates(terms, tokens[rows], valid[rows], t_min=t_min, batch_size=batch, seed=EVAL_SEED + b, device=ctx.device,
                                cond=None if cond is None else cond[rows])
        if b < len(starts):
            est[rows] = value
    if ctx.distributed:
        import torch.distributed as dist

        on = est.to(ctx.device) if ctx.device.type == "cuda" else est
        dist.all_reduce(on)
        est = on.cpu()
    scored = valid if cond is None else scored_positions(valid, cond)  # a pairs run scores its responses only
    return EvalResult(est, scored.sum(-1).double().cpu(), bound=not objective.exact_likelihood, conditional=cond is not None)


def _eager():
    """Compiled blocks run eagerly (torch.compiler.set_stance, PyTorch 2.6 and later; before it, nothing to do)."""
    set_stance = getattr(torch.compiler, "set_stance", None)
    return set_stance("force_eager") if set_stance is not None else nullcontext()


@contextmanager
def _root_unsharded(objective, ctx: Context):
    """Under FSDP2, the objective's own parameters (GenMD4's exponents) gathered for the duration:
    evaluation and sampling call the objective's methods, not its forward, so no hook gathers them.
    The network's blocks gather their own in their forward passes."""
    if ctx.mode != "fsdp" or not ctx.distributed:
        yield
        return
    objective.unshard()
    try:
        yield
    finally:
        objective.reshard()


class Monitor:
    """What one training run reports as it goes: a context manager around the training loop, told of each
    finished step by :meth:`step_done`. Every rank holds one (evaluation and sampling are collectives under
    FSDP2); rank 0 writes.

    ``run``: the trainer's state of the run (maskdiff.train._Run: config, run_dir, ctx, objective, params,
    ema, start, per_rank)."""

    def __init__(self, run: Any, *, progress: bool):
        self.run = run
        self.config = run.config
        tc = self.config.train
        self.ctx: Context = run.ctx
        self.tokens_per_step = tc.batch_size * self.config.data.length
        self.progress = progress
        self.sinks: Optional[Sinks] = None
        self.bar = None
        self.window_tokens, self.paused = 0, 0.0
        self.flops_per_token = flops_per_token(run.objective, self.config.data.length)
        peak, self.peak_from = peak_flops(self.ctx.device, tc.peak_tflops)
        if peak is not None and self.flops_per_token is None:
            peak, self.peak_from = None, "the network has no FLOP formula"
        self.peak = None if peak is None else peak * self.ctx.world  # every process's device
        self.tokenizer = None
        self.eval_data: Optional[Tuple[Tensor, Tensor]] = None
        if tc.eval_every or tc.sample_every:
            from maskdiff.modalities import build_tokenizer

            self.tokenizer = build_tokenizer(self.config)
        if tc.eval_every:
            self.eval_data = self._eval_rows()
        self.pipe = None
        if tc.sample_every:  # the one way to sample, around the trained objective (placed and sharded already)
            from maskdiff.pipeline import Pipeline

            self.pipe = Pipeline(self.config, self.tokenizer, run.objective, device=self.ctx.device)
            run.objective.train()  # the pipeline put it in eval mode

    def _eval_rows(self) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """The first train.eval_rows rows of the validation split (maskdiff.modalities.eval_chunks), and their
        condition: the prompts of a run on prompt/response pairs (data.pairs), None otherwise."""
        from maskdiff.modalities import eval_chunks

        n = self.config.train.eval_rows
        if self.config.data.pairs:  # the validation pairs, scored on their responses given their prompts
            from maskdiff.modalities.text import pair_split

            rows = pair_split(self.config, self.tokenizer, "validation")
            return rows.tokens[:n], torch.ones_like(rows.tokens[:n], dtype=torch.bool), rows.cond[:n]
        try:
            tokens, valid = eval_chunks(self.config, self.tokenizer, "validation")
        except MaskdiffError as err:
            raise MaskdiffError(f"--eval-every needs a validation split: {err}") from None
        if tokens.shape[0] == 0:
            raise MaskdiffError(f"--eval-every needs a validation split: the one of {self.config.data.corpus} has no rows")
        return tokens[:n], valid[:n], None

    def __enter__(self) -> "Monitor":
        if self.ctx.main:
            self.sinks = Sinks(self.run.run_dir, self.config, start=self.run.start)
        if self.progress:
            from tqdm.auto import tqdm

            tc = self.config.train
            self.bar = tqdm(total=tc.steps, initial=self.run.start, desc="train", unit="step", dynamic_ncols=True, mininterval=0.5)
        self.t_begin = self.window_start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.sinks is not None:
            self.sinks.close()

    def step_done(self, step: int, loss: float, lr: float, grad_norm: float, skipped: int) -> None:
        """Step ``step`` is done (``loss``: its NELBO estimate in nats per token): evaluate, sample and log
        as the config asks."""
        tc = self.config.train
        self.window_tokens += self.tokens_per_step
        due = lambda every: bool(every) and (step % every == 0 or step == tc.steps)  # noqa: E731
        evaluate, sample = due(tc.eval_every), due(tc.sample_every)
        extra: Dict[str, Any] = {}
        if evaluate or sample:
            t0 = time.perf_counter()
            with self._watching():
                if evaluate:
                    extra = self._evaluate()
                if sample:
                    self._sample(step)
            self.paused += time.perf_counter() - t0
        if self.sinks is not None and (step % tc.log_every == 0 or step == tc.steps or evaluate):
            now = time.perf_counter()
            tok_s = self.window_tokens / max(now - self.window_start - self.paused, 1e-9)
            self.window_start, self.window_tokens, self.paused = now, 0, 0.0
            record = {"step": step, "loss_nats_per_token": loss, "loss_bits_per_token": loss / math.log(2), "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": tok_s, "elapsed_s": now - self.t_begin, "skipped_steps": skipped}
            record.update(self._mfu(tok_s))
            record.update(extra)
            self.sinks.write(record)
            if self.bar is not None:
                self.bar.set_postfix(_postfix(record))
        if self.bar is not None:
            self.bar.update(1)

    def _mfu(self, tokens_per_s: float) -> Dict[str, Any]:
        """The model FLOP utilisation: achieved model FLOP/s over the peak of every process's device."""
        if self.peak is not None:
            return {"mfu": self.flops_per_token * tokens_per_s / self.peak, "mfu_peak": self.peak_from}
        quiet = self.ctx.device.type == "cpu" and not self.config.train.peak_tflops  # no MFU on the CPU unless asked
        return {} if quiet else {"mfu_peak": self.peak_from}

    @contextmanager
    def _watching(self):
        """Eval mode, the EMA weights, no gradients, the global random state put back afterwards; blocks
        compiled for training (train.compile) run eagerly, not recompiled for evaluation's shapes."""
        run = self.run
        devices = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), _eager(), \
                ema_swapped_in(run.params, run.ema), _root_unsharded(run.objective, self.ctx):
            run.objective.eval()
            try:
                yield
            finally:
                run.objective.train()

    def _evaluate(self) -> Dict[str, Any]:
        tokens, valid, cond = self.eval_data
        tc = self.config.train
        t0 = time.perf_counter()
        res = validation_nelbo(self.run.objective, tokens, valid, t_min=self.config.diffusion.t_min,
                               batch=tc.micro_batch_size or min(EVAL_BATCH, tc.batch_size), ctx=self.ctx, cond=cond)
        bits, lo, hi = res.bits_per_token()
        return {"val_nelbo_bits_per_token": bits, "val_low": lo, "val_high": hi, "val_rows": int(tokens.shape[0]),
                "val_weights": "ema" if self.run.ema is not None else "model", "val_s": time.perf_counter() - t0}

    def _sample(self, step: int) -> None:
        """train.sample_num samples through the one way to sample (a SampleRequest checked against the
        model, run by the objective), the model's default sampler with one step per position, SAMPLE_SEED; rank 0 writes
        them to samples/ and TensorBoard. Every rank draws (FSDP2 needs every rank in each forward)."""
        from maskdiff.sampling.request import SampleRequest

        tc = self.config.train
        out = self.pipe.run(SampleRequest(num=tc.sample_num, steps=self.config.data.length, seed=SAMPLE_SEED))
        if self.sinks is not None:
            self.sinks.samples(step, out.texts, out.sampler, out.steps)


def _postfix(record: dict) -> Dict[str, str]:
    """What the progress bar shows of a record."""
    loss = record["loss_nats_per_token"]
    shown = {"loss": f"{loss:.3f}", "bits": f"{loss / math.log(2):.3f}", "tok_s": f"{record['tokens_per_s']:,.0f}"}
    if "mfu" in record:
        shown["mfu"] = f"{record['mfu']:.1%}"
    if "val_nelbo_bits_per_token" in record:
        shown["val"] = f"{record['val_nelbo_bits_per_token']:.3f} ({record['val_low']:.3f}-{record['val_high']:.3f})"
    return shown
