"""``maskdiff plan``: its FLOPs are the benchmarks' formula and a hand count, its training-state bytes are the
bytes of the real tensors, and the command prints a table, JSON, and clean errors."""
import json
import math

import pytest
import torch

from helpers import assert_clean_error, run_main
from maskdiff.objectives import build_objective
from maskdiff.plan import activation_bytes, block_kind, make_plan, state_bytes
from maskdiff.presets import get_preset
from maskdiff.step import make_optimizer


def _small(name, **model):
    """A recipe at a size whose network is cheap to build for real on the CPU."""
    cfg = get_preset(name)
    cfg.model.width, cfg.model.depth, cfg.model.heads, cfg.model.cond_dim = 64, 2, 2, 16
    cfg.data.length, cfg.train.batch_size, cfg.train.micro_batch_size, cfg.train.steps = 32, 8, 0, 10
    for k, v in model.items():
        setattr(cfg.model, k, v)
    return cfg


def test_flops_are_the_benchmark_formula():
    """plan's FLOPs per step = net.flops_per_token(L) * B * L of the real network (benchmarks/gpu.py,
    train_throughput.py), for both backbones the recipes use; the total is that times the steps."""
    for name, vocab in [("mdlm-owt", 50257), ("md4-text8", 27)]:
        cfg = _small(name)
        plan = make_plan(cfg, gpus=2)
        net = build_objective(cfg, vocab).network
        B, L = cfg.train.batch_size, cfg.data.length
        assert plan.flops_per_step == net.flops_per_token(L) * B * L, name
        assert plan.flops == plan.flops_per_step * cfg.train.steps and plan.tokens == B * L * cfg.train.steps
        assert plan.non_embedding_parameters == net.num_parameters()


def test_flops_by_hand():
    """maskdiff's DiT, width 64, 2 blocks, MLP 4x, no time conditioning, text8 (V = 27), L = 32, counted by hand:
    a block has qkv 3 W^2, proj W^2, MLP W 4W + 4W + 4W W + W, two LayerNorms 2 x 2W; the output LayerNorm 2W,
    the head W V + V. 6 N + 12 depth W L per token; one H100 at 40% MFU gives the seconds."""
    cfg = _small("md4-text8", time_conditioned=False)
    W, depth, V, L, B = 64, 2, 27, 32, 8
    block = 3 * W * W + W * W + (W * 4 * W + 4 * W) + (4 * W * W + W) + 2 * 2 * W
    n = depth * block + 2 * W + (W * V + V)
    per_token = 6 * n + 12 * depth * W * L
    plan = make_plan(cfg, gpus=1, gpu="h100", mfu=0.4)
    assert plan.non_embedding_parameters == n and plan.flops_per_token == per_token
    assert abs(plan.seconds_per_step - per_token * B * L / (989.5e12 * 0.4)) < 1e-18


def test_state_bytes_are_the_real_tensors():
    """Weights, gradients, AdamW's moments and the EMA as planned = the bytes of those tensors after a real
    step of the trainer's optimizer; FSDP2 shards them over the GPUs."""
    cfg = _small("md4-text8")
    objective = build_objective(cfg, 27)
    optimizer = make_optimizer(objective, cfg.train)
    for p in objective.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    ema = [p.detach().clone() for p in objective.parameters()]
    nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    params = list(objective.parameters())
    moments = [s[k] for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
    planned = state_bytes(objective, gpus=1, parallel="ddp", ema=True, precision="fp32")
    assert planned == {"weights": nbytes(params), "gradients": nbytes(p.grad for p in params), "adamw": nbytes(moments), "ema": nbytes(ema)}
    shard = math.ceil(sum(p.numel() for p in params) / 4)
    sharded = state_bytes(objective, gpus=4, parallel="fsdp", ema=True, precision="bf16")
    assert (sharded["weights"], sharded["adamw"], sharded["bf16_weight_copies"]) == (4 * shard, 8 * shard, 2 * shard)


def test_plan_command_table_json_and_errors():
    out = run_main("plan", "mdlm-owt", "--gpus", "8", "--gpu", "a100")
    assert out.returncode == 0, out.stderr
    assert "wall-clock" in out.stdout and "A100" in out.stdout and "512 sequences = 8 GPU(s) x 16 micro-batch x 4 accumulation" in out.stdout
    out = run_main("plan", "mdlm-lm1b", "--gpus", "4", "--micro-batch-size", "32", "--parallel", "fsdp", "--json")
    plan = json.loads(out.stdout)
    assert plan["accumulation"] == 4 and plan["parallel"] == "fsdp" and plan["vocab_size"] == 30522 and plan["length"] == 128
    assert plan["flops"] == plan["flops_per_token"] * 512 * 128 * 1_000_000
    assert plan["memory"]["total"] == sum(v for k, v in plan["memory"].items() if k != "total")
    assert_clean_error(run_main("plan", "mdlm-owt", "--gpu", "b200"), "unknown gpu 'b200'", "h100")
    assert_clean_error(run_main("plan", "mdlm-owt", "--gpus", "3"), "does not split over 3 GPUs")
    assert_clean_error(run_main("plan", "nope"), "unknown preset 'nope'")


@pytest.mark.parametrize("name,time_conditioned", [("md4-text8", False), ("md4-text8", True), ("mdlm-owt", False)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_block_activations_match_what_autograd_saves(name, time_conditioned, precision):
    """The per-block activation estimate is within 10% of the bytes of the tensors autograd saves for one
    block's backward pass (weights and their bf16 casts left out), at 1,024 tokens of width 64."""
    cfg = _small(name, time_conditioned=time_conditioned)
    cfg.train.precision = precision
    W, B, L = 64, 4, 256
    cfg.data.length = L
    net = build_objective(cfg, 5).network
    weight_shapes = {tuple(p.shape) for p in net.parameters()} | {tuple(p.shape)[::-1] for p in net.parameters()}
    saved = {}

    def pack(t):
        if tuple(t.shape) not in weight_shapes:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    x, c = torch.randn(B, L, W, requires_grad=True), torch.randn(B, 16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        if name == "mdlm-owt":
            angles = torch.randn(L, W // cfg.model.heads // 2)
            net.blocks[0](x, c, angles.cos(), angles.sin(), None)
        else:
            net.blocks[0](x, c if time_conditioned else None)
    estimate = activation_bytes(W, 1, 5, B * L, precision, block_kind(cfg))["per_block"]
    assert abs(sum(saved.values()) / estimate - 1) < 0.1, (sum(saved.values()), estimate)
