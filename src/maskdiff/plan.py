"""What a run costs before it is launched: tokens, FLOPs, memory per GPU and the wall-clock at a stated MFU.

The network is built on PyTorch's meta device (shapes only, no memory), so a 12 x 768 model costs nothing
to plan. FLOPs are the network's own ``flops_per_token(L)`` (6 N + 12 depth width L, forward + backward),
times the tokens: the formula of benchmarks/gpu.py and benchmarks/train_throughput.py. Memory counts the
training state exactly from the parameters (weights, gradients, AdamW's two moments, the EMA, DDP's
gradient buckets; FSDP2 shards all of them) and estimates the activations at the micro-batch per block
(:func:`activation_bytes` states what it counts; a test checks the blocks' part against the tensors autograd
saves). docs/scale.md, "Planning a run", explains the output.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from torch import nn

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError


@dataclass(frozen=True)
class GPU:
    """A GPU as its datasheet states it."""

    name: str
    """What it is called in the datasheet."""
    peak_bf16: float
    """Dense bf16 tensor-core peak, FLOP/s (the datasheet's figure without structured sparsity)."""
    memory_gib: float
    """Memory in GiB as sold (GB on the datasheet, taken as GiB: the difference is within the estimate)."""


# NVIDIA's datasheets state bf16 tensor-core peaks "with sparsity"; these are half of those figures.
GPU_SOURCE = "NVIDIA product datasheets (H100, H200, A100, L40S, A10, L4), dense bf16 = the 'with sparsity' figure / 2"
GPUS: Dict[str, GPU] = {
    "h100": GPU("H100 SXM5 80GB", 989.5e12, 80),
    "h100-pcie": GPU("H100 PCIe 80GB", 756.5e12, 80),
    "h200": GPU("H200 SXM 141GB", 989.5e12, 141),
    "a100": GPU("A100 SXM4 80GB", 312e12, 80),
    "a100-40gb": GPU("A100 SXM4 40GB", 312e12, 40),
    "l40s": GPU("L40S 48GB", 362e12, 48),
    "a10": GPU("A10 24GB", 125e12, 24),
    "l4": GPU("L4 24GB", 121e12, 24),
}

# vocabulary sizes of the named tokenizers (maskdiff.data: text8, bytes, GPT-2 BPE, BERT WordPiece)
VOCAB_SIZES = {"text8": 27, "bytes": 256, "gpt2": 50257, "bert": 30522}


@dataclass
class Plan:
    """A run's cost: what :func:`make_plan` computes; ``to_dict`` is the ``--json`` output."""

    preset: str
    """The preset the configuration started from."""
    gpus: int
    """Number of GPUs (processes) the run is planned on."""
    gpu: str
    """The GPU's key in GPUS."""
    gpu_name: str
    """Its datasheet name."""
    peak_flops: float
    """Its dense bf16 peak, FLOP/s."""
    mfu: float
    """Model FLOPs utilisation assumed for the wall-clock."""
    parallel: str
    """'ddp' or 'fsdp' (train.parallel)."""
    precision: str
    """'fp32' or 'bf16' (train.precision): the bytes of an activation."""
    parameters: int
    """All trainable parameters (what the optimizer holds)."""
    non_embedding_parameters: int
    """The network's parameters without the input embedding (the N of 6 N)."""
    vocab_size: int
    """Tokens of the vocabulary (without the mask)."""
    length: int
    """Sequence length L."""
    batch_size: int
    """Global batch in sequences."""
    micro_batch_size: int
    """Sequences per forward pass on one GPU."""
    accumulation: int
    """Forward-backward passes per step on one GPU."""
    steps: int
    """Optimizer steps."""
    tokens_per_step: int
    """batch_size x L."""
    tokens: int
    """tokens_per_step x steps."""
    flops_per_token: float
    """The network's flops_per_token(L): training FLOPs per token."""
    flops_per_step: float
    """flops_per_token x tokens_per_step."""
    flops: float
    """flops_per_step x steps."""
    seconds_per_step: float
    """flops_per_step / (gpus x peak x mfu)."""
    seconds: float
    """The whole run at that speed."""
    memory: Dict[str, int] = field(default_factory=dict)
    """Bytes per GPU by item; 'total' is their sum."""
    activation_bytes_per_layer: int = 0
    """The estimate of one block's saved activations at the micro-batch."""
    gpu_memory_bytes: int = 0
    """The GPU's memory, bytes."""
    source: str = GPU_SOURCE
    """Where the peak figures come from."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def vocab_size_of(config: RunConfig) -> int:
    """The vocabulary of a text run from its tokenizer's name (no files read)."""
    d = config.data
    name = d.tokenizer or d.form
    if d.modality != "text" or name not in VOCAB_SIZES:
        raise MaskdiffError(f"cannot tell the vocabulary of tokenizer {name!r} without reading it; give --vocab-size "
                            f"(known without files: {', '.join(VOCAB_SIZES)})")
    return VOCAB_SIZES[name]


def meta_objective(config: RunConfig, vocab_size: int) -> nn.Module:
    """The run's objective (its network and any learned schedule) with every tensor on the meta device."""
    from maskdiff.objectives import build_objective

    if config.model.backbone == "hf":
        raise MaskdiffError("maskdiff plan covers the dit and mdlm-dit backbones; a Hugging Face backbone has no flops_per_token")
    with torch.device("meta"):
        return build_objective(config, vocab_size)


def state_bytes(objective: nn.Module, gpus: int, parallel: str, ema: bool, precision: str) -> Dict[str, int]:
    """Bytes per GPU of the training state, from the parameters themselves: fp32 weights, their gradients,
    AdamW's exp_avg and exp_avg_sq, the EMA copy; DDP adds its gradient buckets (a second copy of the
    gradients), bf16 autocast its cached bf16 copies of the weights. FSDP2 shards all of these over the
    GPUs and gathers one block's full fp32 weights at a time (two: the next is prefetched)."""
    params = [p for p in objective.parameters() if p.requires_grad]
    n = sum(p.numel() for p in params)
    size = 4  # float32 master weights, gradients and optimizer state
    shard = n if parallel == "ddp" else math.ceil(n / gpus)
    out = {"weights": size * shard, "gradients": size * shard, "adamw": 2 * size * shard, "ema": size * shard if ema else 0}
    if parallel == "ddp" and gpus > 1:
        out["ddp_buckets"] = size * n
    if parallel == "fsdp":
        blocks = getattr(objective.network, "blocks", [])
        biggest = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
        out["fsdp_gathered_blocks"] = 2 * size * biggest
    if precision == "bf16":
        out["bf16_weight_copies"] = 2 * shard
    return out


# Bytes per token and unit of width that one block keeps for its backward pass: a + b p, with p the bytes of
# an element of the matrix products (2 for bf16, 4 for fp32). Counted by listing the tensors autograd saves
# for one block (torch.autograd.graph.saved_tensors_hooks, weights and their casts left out; a test does it
# again): float32 LayerNorm inputs and residual terms make a, the products' inputs and outputs (q, k, v, the
# attention output, the MLP's 4 W hidden twice) b. Attention scores are not among them: the kernels of
# scaled_dot_product_attention recompute them. MDLM's DiT also keeps its rotary halves in float32 and the
# masks of its residual dropout.
BLOCK_BYTES = {"dit": (9.0, 16.0), "dit-adaln": (16.5, 18.0), "mdlm-dit": (24.5, 21.0)}


def activation_bytes(width: int, depth: int, vocab_out: int, tokens: int, precision: str, block: str) -> Dict[str, int]:
    """An estimate of the activations autograd keeps for the backward pass of ``tokens`` = micro-batch x L:
    ``block`` (a key of BLOCK_BYTES) per block; the embedding's float32 output (4 W); the output layer at
    every position: its logits (V p bytes), their float32 log-softmax (4 V, and under bf16 the float32 cast
    before it, another 4 V) and, during the backward pass, their gradient (4 V)."""
    p = 2 if precision == "bf16" else 4
    a, b = BLOCK_BYTES[block]
    per_block = int((a + b * p) * width * tokens)
    per_token_head = vocab_out * (p + 4 + 4 + (4 if p == 2 else 0))
    return {"per_block": per_block, "blocks": depth * per_block, "output_layer": per_token_head * tokens, "embedding": 4 * width * tokens}


def block_kind(config: RunConfig) -> str:
    """The key of BLOCK_BYTES for a run's network."""
    if config.model.backbone == "mdlm-dit":
        return "mdlm-dit"
    return "dit-adaln" if config.model.time_conditioned else "dit"


def make_plan(config: RunConfig, gpus: int, gpu: str = "h100", mfu: float = 0.4, vocab_size: Optional[int] = None,
              peak_flops: Optional[float] = None) -> Plan:
    """The cost of training ``config`` on ``gpus`` GPUs of kind ``gpu`` at model FLOPs utilisation ``mfu``
    (``peak_flops`` replaces the GPU's datasheet peak)."""
    if gpu not in GPUS:
        raise MaskdiffError(f"unknown gpu {gpu!r}; choose one of: {', '.join(GPUS)}")
    if gpus < 1:
        raise MaskdiffError(f"--gpus must be at least 1, got {gpus}")
    if not 0.0 < mfu <= 1.0:
        raise MaskdiffError(f"mfu must be in (0, 1], got {mfu}")
    config.validate()
    t, L = config.train, config.data.length
    if t.batch_size % gpus:
        raise MaskdiffError(f"batch size {t.batch_size} does not split over {gpus} GPUs; choose a batch size divisible by {gpus}")
    per_gpu = t.batch_size // gpus
    micro = t.micro_batch_size or per_gpu
    if per_gpu % micro:
        raise MaskdiffError(f"{per_gpu} sequences per GPU are not a multiple of the micro batch size {micro}")
    V = vocab_size or vocab_size_of(config)
    objective = meta_objective(config, V)
    net = objective.network
    kind = GPUS[gpu]
    peak = peak_flops or kind.peak_bf16
    flops_per_token = float(net.flops_per_token(L))
    tokens_per_step = t.batch_size * L
    flops_per_step = flops_per_token * tokens_per_step
    seconds_per_step = flops_per_step / (gpus * peak * mfu)
    memory = state_bytes(objective, gpus, t.parallel, t.ema_decay > 0, t.precision)
    width = config.model.width
    head = net.output_bias().numel()  # the output layer's columns (V, or V + 1 with the mask logit)
    acts = activation_bytes(width, config.model.depth, head, micro * L, t.precision, block_kind(config))
    memory.update({"activations_blocks": acts["blocks"], "activations_output_layer": acts["output_layer"], "activations_embedding": acts["embedding"]})
    memory["total"] = sum(memory.values())
    n_all = sum(p.numel() for p in objective.parameters() if p.requires_grad)
    return Plan(preset=config.preset, gpus=gpus, gpu=gpu, gpu_name=kind.name, peak_flops=peak, mfu=mfu, parallel=t.parallel,
                precision=t.precision, parameters=n_all, non_embedding_parameters=int(net.num_parameters()), vocab_size=V, length=L,
                batch_size=t.batch_size, micro_batch_size=micro, accumulation=per_gpu // micro, steps=t.steps,
                tokens_per_step=tokens_per_step, tokens=tokens_per_step * t.steps, flops_per_token=flops_per_token,
                flops_per_step=flops_per_step, flops=flops_per_step * t.steps, seconds_per_step=seconds_per_step,
                seconds=seconds_per_step * t.steps, memory=memory, activation_bytes_per_layer=acts["per_block"],
                gpu_memory_bytes=int(kind.memory_gib * 2**30))


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _duration(s: float) -> str:
    days, rest = divmod(s, 86400)
    return f"{s / 3600:,.1f} h ({int(days)} d {rest / 3600:.1f} h)"


def format_plan(plan: Plan) -> str:
    """The plan as a readable table."""
    rows = [
        ("preset", plan.preset),
        ("parameters", f"{plan.parameters:,} ({plan.non_embedding_parameters:,} without the input embedding)"),
        ("vocabulary, length", f"{plan.vocab_size:,} tokens, L = {plan.length}"),
        ("batch", f"{plan.batch_size} sequences = {plan.gpus} GPU(s) x {plan.micro_batch_size} micro-batch x {plan.accumulation} accumulation"),
        ("steps", f"{plan.steps:,}"),
        ("tokens", f"{_si(plan.tokens_per_step)} per step, {_si(plan.tokens)} in all"),
        ("FLOPs", f"{_si(plan.flops_per_token)} per token (flops_per_token(L)), {_si(plan.flops_per_step)} per step, {_si(plan.flops)} in all"),
        ("GPU", f"{plan.gpus} x {plan.gpu_name}, {_si(plan.peak_flops, 'FLOP/s')} bf16 peak (dense)"),
        ("wall-clock", f"{plan.seconds_per_step:.3g} s per step at {plan.mfu:.0%} MFU; {_duration(plan.seconds)}"),
        ("GPU-hours", f"{plan.seconds * plan.gpus / 3600:,.0f}"),
        (f"memory per GPU ({plan.parallel}, {plan.precision})", ""),
    ]
    rows += [(f"  {name}", _gib(n)) for name, n in plan.memory.items() if name != "total"]
    total = plan.memory["total"]
    verdict = "fits" if total <= plan.gpu_memory_bytes else "does NOT fit: lower --micro-batch-size or use --parallel fsdp"
    rows.append(("  total", f"{_gib(total)} of {_gib(plan.gpu_memory_bytes)}: {verdict}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append(f"(activations: an estimate, {_gib(plan.activation_bytes_per_layer)} per block; peaks: {plan.source})")
    if plan.precision == "fp32":
        lines.append("(an fp32 run multiplies matrices in TF32 on a GPU, whose peak is half the bf16 figure: the wall-clock assumes "
                     "bf16; give --precision bf16 or halve --mfu)")
    return "\n".join(lines)
