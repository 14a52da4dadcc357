"""GPU benchmark: training throughput and MFU of the trainer's step in fp32-eager, bf16-eager and
bf16-compiled, and sampling time of the cached and first-hitting samplers in fp32, bf16 and
bf16-compiled (the network runtime of ``maskdiff sample --precision bf16 --compile``).

Configurations: ``baseline`` (vocab 257, L 256, 4 x 256, 4 heads, batch 16) and ``gpt2`` (GPT-2's
vocabulary 50,258, L 1024, 12 x 768, 12 heads, batch 32, logits at masked positions only). A step is
the trainer's: the masked-diffusion loss (``MaskedDiffusion.train_loss``) under ``train.autocast``,
backward, clipping, fused AdamW; compiled runs go through ``train.compile_blocks``; TF32 is on
(``train.set_fast_matmul``). MFU = achieved FLOP/s / the bf16 dense matmul peak MEASURED in the same
run (an 8192^3 matmul), reported beside the nominal 989 TFLOP/s of an H100/H200 SXM. Two FLOP counts:
``model`` is the usual 6 N + 12 depth width L per token (every position through the output layer);
``executed`` counts the output layer at the masked positions only, which is what runs with masked
logits. Sampling: the sampler's wall-clock and network calls for one batch after an untimed warm-up
call of the same shape (which compiles, in bf16-compiled; its seconds are recorded apart), with the
network run as ``maskdiff.network_runtime`` runs it (bf16: autocast of the network call only; the
sampler's probabilities stay float32), and the share of tokens equal to the fp32 draw of the same seed.
Writes ``benchmarks/results/gpu_<device>_<time>.json``.

    .venv/bin/python benchmarks/gpu.py                      # everything (about 3 minutes on an H100/H200)
    .venv/bin/python benchmarks/gpu.py --configs baseline --modes bf16-compiled --no-sampling
    .venv/bin/python benchmarks/gpu.py --configs baseline --modes fp32-eager --sample-configs baseline --device cpu --smoke
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import git_commit, machine_info, write_result  # noqa: E402
from train_throughput import measure_matmul_peak  # noqa: E402

from maskdiff.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from maskdiff.loss import low_discrepancy_times  # noqa: E402
from maskdiff.network_runtime import NetworkRuntime, apply_runtime  # noqa: E402
from maskdiff.objectives import build_objective  # noqa: E402
from maskdiff.sampling import SAMPLERS  # noqa: E402
from maskdiff.step import autocast, compile_blocks, make_optimizer, set_fast_matmul  # noqa: E402

NOMINAL_BF16_PEAK = 989e12  # H100 / H200 SXM dense bf16, FLOP/s (datasheet)
MODES = {"fp32-eager": ("fp32", False), "bf16-eager": ("bf16", False), "bf16-compiled": ("bf16", True)}
SAMPLE_MODES = {"fp32": NetworkRuntime("fp32"), "bf16": NetworkRuntime("bf16"), "bf16-compiled": NetworkRuntime("bf16", True)}


def configs() -> Dict[str, tuple]:
    base = RunConfig(model=ModelConfig(width=256, depth=4, heads=4), data=DataConfig(form="chars", length=256),
                     train=TrainConfig(batch_size=16))
    gpt2 = RunConfig(model=ModelConfig(width=768, depth=12, heads=12, masked_logits=True), data=DataConfig(length=1024),
                     train=TrainConfig(batch_size=32))
    return {"baseline": (base, 257), "gpt2": (gpt2, 50258)}


DEVICE = torch.device("cuda")  # --device cpu: a smoke run of this script on a machine without a GPU


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def train_figures(name: str, cfg: RunConfig, vocab: int, mode: str, steps: int, warmup: int, peak: float) -> Dict[str, Any]:
    precision, compiled = MODES[mode]
    device = DEVICE
    torch.manual_seed(0)
    obj = build_objective(cfg, vocab).to(device)
    obj.set_check_inputs(False)
    if compiled:
        compile_blocks(obj.network)
    obj.train()
    opt = make_optimizer(obj, cfg.train)
    B, L = cfg.train.batch_size, cfg.data.length
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        x0 = torch.randint(0, vocab, (B, L), generator=gen)
        t = low_discrepancy_times(B, float(torch.rand((), generator=gen, dtype=torch.float64)))
        noise = torch.rand((1, B, L), generator=gen, dtype=torch.float64)
        masked = int((noise[0] >= obj.schedule.alpha(t.double())[:, None]).sum())  # masked iff u >= alpha_t
        batches.append((x0.to(device), t.to(device), noise.to(device), masked))
    params = obj.parameters()

    def step(i):
        x0, t, noise, _ = batches[i % len(batches)]
        opt.zero_grad(set_to_none=True)
        with autocast(precision, device):
            loss = obj.train_loss(x0, t, noise)[0].float().sum() / (B * L)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync()
    warm_s = time.perf_counter() - t0
    seconds, losses = [], []
    for i in range(steps):
        _sync()
        start = time.perf_counter()
        losses.append(step(warmup + i).detach())
        _sync()
        seconds.append(time.perf_counter() - start)
    losses = [float(x) for x in losses]
    net = obj.network
    head = net.head.weight.numel()
    attn = 12.0 * len(net.blocks) * net.embed.weight.shape[1] * L
    model_flops = net.flops_per_token(L) * B * L
    mean_masked = statistics.fmean(b[3] for b in batches)
    executed = model_flops - 6.0 * head * (B * L - mean_masked) if cfg.model.masked_logits else model_flops
    med = statistics.median(seconds)
    return {
        "config": name, "mode": mode, "precision": precision, "compiled": compiled, "vocab_size": vocab, "length": L,
        "batch_size": B, "width": cfg.model.width, "depth": cfg.model.depth, "heads": cfg.model.heads,
        "masked_logits": cfg.model.masked_logits, "steps": steps, "warmup": warmup, "warmup_seconds_total": warm_s,
        "seconds_per_step": seconds, "s_per_step_median": med, "tokens_per_s": B * L / med,
        "model_flops_per_step": model_flops, "executed_flops_per_step": executed, "attention_flops_per_token": attn,
        "mfu_model_vs_measured_peak": model_flops / med / peak,
        "mfu_executed_vs_measured_peak": executed / med / peak,
        "mfu_model_vs_nominal_989T": model_flops / med / NOMINAL_BF16_PEAK,
        "mfu_executed_vs_nominal_989T": executed / med / NOMINAL_BF16_PEAK,
        "loss_first": losses[0], "loss_last": losses[-1], "finite": all(math.isfinite(x) for x in losses),
        "cuda_max_memory_allocated_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
    }


def sample_figures(name: str, cfg: RunConfig, vocab: int, sampler: str, batch: int, steps: int, mode: str = "fp32",
                   reference=None) -> Dict[str, Any]:
    """One sampling point: ``mode`` names the network runtime (:data:`SAMPLE_MODES`); ``reference``: the fp32
    draw of the same point, for the share of equal tokens."""
    device, runtime = DEVICE, SAMPLE_MODES[mode]
    torch.manual_seed(0)
    obj = build_objective(cfg, vocab).to(device).eval()
    with torch.no_grad():  # away from the zero-initialised output layer (a uniform mu makes every step unmask alike)
        torch.nn.init.normal_(obj.network.head.weight, std=0.02)
    if runtime.compile:
        torch._dynamo.reset()  # compile this network afresh (no earlier point's cache entries, no recompile limit reached)
    apply_runtime(obj.network, runtime, device)
    fn = SAMPLERS[sampler]
    shape = (batch, cfg.data.length)
    _sync()
    start = time.perf_counter()
    fn(obj.denoiser, obj.schedule, shape, steps=8, generator=torch.Generator(device=device).manual_seed(1), device=device)  # warm-up
    _sync()
    warm = time.perf_counter() - start
    gen = torch.Generator(device=device).manual_seed(0)
    start = time.perf_counter()
    out = fn(obj.denoiser, obj.schedule, shape, steps=steps, generator=gen, device=device)
    _sync()
    seconds = time.perf_counter() - start
    precision = "float32 (TF32 matmuls)" if runtime.precision == "fp32" and device.type == "cuda" else runtime.precision
    same = None if reference is None else float((out.tokens == reference).float().mean())
    return {"config": name, "sampler": sampler, "mode": mode, "precision": precision, "compiled": runtime.compile, "batch": batch,
            "length": cfg.data.length, "vocab_size": vocab, "steps": steps if sampler != "first-hitting" else None,
            "seconds": seconds, "seconds_per_sample": seconds / batch, "warmup_seconds": warm, "nfe_mean": float(out.nfe.float().mean()),
            "masks_left": int((out.tokens == vocab).sum()), "tokens_equal_to_fp32": same, "tokens": out.tokens.cpu()}


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="baseline,gpt2", help="comma-separated: baseline, gpt2 (default: both)")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {', '.join(MODES)} (default: all)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (default: 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first, compilation included (default: 5)")
    p.add_argument("--sample-steps", type=int, default=1024, help="grid steps of the cached sampler (default: 1024)")
    p.add_argument("--sample-batch", type=int, default=16, help="samples per sampler call (default: 16)")
    p.add_argument("--sample-configs", default="baseline,gpt2", help="configs whose sampling is timed (default: both)")
    p.add_argument("--sample-modes", default=",".join(SAMPLE_MODES), help=f"comma-separated network runtimes of the sampling "
                   f"points: {', '.join(SAMPLE_MODES)} (default: all)")
    p.add_argument("--no-sampling", action="store_true", help="training figures only")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/gpu_<device>_<time>.json)")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only to smoke-test this script, with --smoke")
    p.add_argument("--smoke", action="store_true", help="shrink every configuration to seconds (checks the script, not the GPU)")
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device (--device cpu --smoke only checks the script)")
    set_fast_matmul(DEVICE)
    all_configs = configs()
    if args.smoke:
        for cfg, _ in all_configs.values():
            cfg.model.width, cfg.model.depth, cfg.model.heads, cfg.data.length, cfg.train.batch_size = 32, 1, 2, 32, 2
    names = [c for c in args.configs.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    sample_modes = [m for m in args.sample_modes.split(",") if m]
    bad = [c for c in names if c not in all_configs] + [m for m in modes if m not in MODES] + [m for m in sample_modes if m not in SAMPLE_MODES]
    if bad:
        raise SystemExit(f"unknown config or mode {bad}; configs: {', '.join(all_configs)}; modes: {', '.join(MODES)}; "
                         f"sample modes: {', '.join(SAMPLE_MODES)}")
    machine = machine_info(args.device)
    n = 256 if args.smoke else 8192
    peaks = {d: measure_matmul_peak(DEVICE, dt, n, 5) for d, dt in (("bf16", torch.bfloat16), ("float32_tf32", torch.float32))}
    peak = peaks["bf16"]["flops_per_s_best"]
    print(f"{machine.get('cuda_device')}: measured bf16 matmul peak {peak / 1e12:.0f} TFLOP/s (nominal H100/H200 SXM: 989)")
    payload = {"benchmark": "gpu", "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine, "git": git_commit(),
               "matmul_peak": peaks, "nominal_bf16_peak_flops_per_s": NOMINAL_BF16_PEAK, "train": [], "sampling": [],
               "target": "gpt2 bf16: at least 45% MFU"}

    def save() -> Path:
        return write_result("gpu", args.device, payload, args.out)

    path = save()
    for name in names:
        cfg, vocab = all_configs[name]
        for mode in modes:
            try:
                r = train_figures(name, cfg, vocab, mode, args.steps, args.warmup, peak)
            except Exception as err:  # noqa: BLE001 - e.g. out of memory: record it and go on
                r = {"config": name, "mode": mode, "error": f"{type(err).__name__}: {err}"[:500]}
            payload["train"].append(r)
            if "error" in r:
                print(f"train {name:8s} {mode:14s} ERROR {r['error']}")
            else:
                print(f"train {name:8s} {mode:14s} {r['s_per_step_median'] * 1e3:8.1f} ms/step {r['tokens_per_s']:>12,.0f} tok/s "
                      f"MFU {100 * r['mfu_model_vs_measured_peak']:5.1f}% (executed {100 * r['mfu_executed_vs_measured_peak']:5.1f}%; "
                      f"vs 989T {100 * r['mfu_model_vs_nominal_989T']:5.1f}%)")
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
            path = save()
    if not args.no_sampling:
        for name in [c for c in args.sample_configs.split(",") if c]:
            cfg, vocab = all_configs[name]
            for sampler in ("cached", "first-hitting"):
                reference = None  # the fp32 draw's tokens, once measured
                for mode in sample_modes:
                    try:
                        r = sample_figures(name, cfg, vocab, sampler, args.sample_batch, args.sample_steps, mode, reference)
                        tokens = r.pop("tokens")
                        reference = tokens if mode == "fp32" else reference
                        equal = "" if r["tokens_equal_to_fp32"] is None else f", {100 * r['tokens_equal_to_fp32']:.1f}% tokens as fp32"
                        print(f"sample {name:8s} {sampler:14s} {mode:14s} {r['seconds']:7.2f} s for {r['batch']} x {r['length']}, "
                              f"mean NFE {r['nfe_mean']:.0f} (warm-up {r['warmup_seconds']:.1f} s){equal}")
                    except Exception as err:  # noqa: BLE001
                        r = {"config": name, "sampler": sampler, "mode": mode, "error": f"{type(err).__name__}: {err}"[:500]}
                        print(f"sample {name:8s} {sampler:14s} {mode:14s} ERROR {r['error']}")
                    payload["sampling"].append(r)
                    path = save()
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
