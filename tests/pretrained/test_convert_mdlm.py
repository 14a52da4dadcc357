"""maskdiff convert mdlm: a state dict with exactly the names and shapes of MDLM's released DiT
(kuleshov-group/mdlm-owt, ``backbone.``-prefixed), built here at a small size with random values, is
converted; the converted model's logits must equal a forward pass written here from MDLM's published
architecture (Sahoo et al. 2024; its DiT: weight-only LayerNorm, packed qkv, rotary on the halves of each
head, adaLN chunks shift/scale/gate, tanh-GELU MLP, raw logits over V + 1 with SUBS outside)."""
import collections
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import maskdiff
from helpers import assert_clean_error, run_cli
from maskdiff.convert import convert_mdlm
from maskdiff.errors import MaskdiffError

V, W, DEPTH, HEADS, COND = 256, 32, 2, 4, 16  # bytes: 256 tokens, the mask is id 256
L = 12


def mdlm_state_dict(seed: int = 0):
    """MDLM's DiT names and shapes (hidden W, cond COND, DEPTH blocks, vocab V + 1), random values; the
    adaLN and output layers are non-zero so that every part of the forward pass matters."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"vocab_embed.embedding": (V + 1, W),
              "sigma_map.mlp.0.weight": (COND, 256), "sigma_map.mlp.0.bias": (COND,),
              "sigma_map.mlp.2.weight": (COND, COND), "sigma_map.mlp.2.bias": (COND,)}
    for i in range(DEPTH):
        b = f"blocks.{i}."
        shapes.update({b + "norm1.weight": (W,), b + "attn_qkv.weight": (3 * W, W), b + "attn_out.weight": (W, W),
                       b + "norm2.weight": (W,), b + "mlp.0.weight": (4 * W, W), b + "mlp.0.bias": (4 * W,),
                       b + "mlp.2.weight": (W, 4 * W), b + "mlp.2.bias": (W,),
                       b + "adaLN_modulation.weight": (6 * W, COND), b + "adaLN_modulation.bias": (6 * W,)})
    shapes.update({"output_layer.norm_final.weight": (W,), "output_layer.linear.weight": (V + 1, W), "output_layer.linear.bias": (V + 1,),
                   "output_layer.adaLN_modulation.weight": (2 * W, COND), "output_layer.adaLN_modulation.bias": (2 * W,)})
    sd = {}
    for name, shape in shapes.items():
        fan_in = shape[-1] if len(shape) == 2 else 1
        value = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("norm_final.weight"):
            value = 1.0 + 0.2 * torch.randn(shape, generator=g)
        sd["backbone." + name] = value
    head = W // HEADS
    sd["backbone.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, head, 2).float() / head)
    return sd


def reference_forward(sd, tokens, sigma, drop=lambda z: z, allowed=None):
    """MDLM's DiT forward written from its description, in float32: logits (B, L, V + 1). ``drop``: the
    dropout of MDLM's bias_dropout_add, applied to the attention output then the MLP output of each block
    before the gated residual (the attention probabilities are not dropped). ``allowed``: optional (L, L)
    bool, query row i attends to key column j only where it is True (all keys by default)."""
    p = {k[len("backbone."):]: v for k, v in sd.items()}
    B, n = tokens.shape
    x = p["vocab_embed.embedding"][tokens]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = sigma[:, None].float() * freqs[None]
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    embedded = F.linear(F.silu(F.linear(temb, p["sigma_map.mlp.0.weight"], p["sigma_map.mlp.0.bias"])),
                        p["sigma_map.mlp.2.weight"], p["sigma_map.mlp.2.bias"])
    c = F.silu(embedded)  # the blocks see SiLU of the embedding
    D = W // HEADS
    angles = torch.arange(n, dtype=torch.float32)[:, None] * p["rotary_emb.inv_freq"][None]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)  # (L, D)

    def rope(z):  # GPT-NeoX form: z cos + rotate_half(z) sin, rotate_half(z) = (-z2, z1)
        z1, z2 = z[..., : D // 2], z[..., D // 2:]
        return z * cos + torch.cat([-z2, z1], -1) * sin

    def norm(z, w):
        mu, var = z.mean(-1, keepdim=True), z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + 1e-5) * w

    for i in range(DEPTH):
        b = f"blocks.{i}."
        mods = (c @ p[b + "adaLN_modulation.weight"].T + p[b + "adaLN_modulation.bias"])[:, None]
        shift1, scale1, gate1, shift2, scale2, gate2 = [mods[..., j * W:(j + 1) * W] for j in range(6)]
        h = norm(x, p[b + "norm1.weight"]) * (1 + scale1) + shift1
        qkv = (h @ p[b + "attn_qkv.weight"].T).reshape(B, n, 3, HEADS, D)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # (B, H, L, D)
        scores = rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(D)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, -math.inf)
        att = torch.softmax(scores, dim=-1) @ v
        x = x + gate1 * drop(att.transpose(1, 2).reshape(B, n, W) @ p[b + "attn_out.weight"].T)
        h = norm(x, p[b + "norm2.weight"]) * (1 + scale2) + shift2
        u = h @ p[b + "mlp.0.weight"].T + p[b + "mlp.0.bias"]
        u = 0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
        x = x + gate2 * drop(u @ p[b + "mlp.2.weight"].T + p[b + "mlp.2.bias"])
    mods = (c @ p["output_layer.adaLN_modulation.weight"].T + p["output_layer.adaLN_modulation.bias"])[:, None]
    h = norm(x, p["output_layer.norm_final.weight"]) * (1 + mods[..., W:]) + mods[..., :W]
    return h @ p["output_layer.linear.weight"].T + p["output_layer.linear.bias"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("mdlm")
    sd = mdlm_state_dict()
    save_file(sd, str(root / "model.safetensors"))
    out = convert_mdlm(root, root / "out", heads=HEADS, length=L, tokenizer="bytes")
    return sd, out


@torch.no_grad()
def test_converted_logits_equal_mdlm_forward(converted):
    """float32 logits of the converted network match the reference forward to 2e-5 (measured: about 1e-6)."""
    sd, out = converted
    pipe = maskdiff.from_pretrained(out)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V + 1, (3, L), generator=g)
    x[0, :4] = V  # some masks
    ours = pipe.objective.network(x, None)
    ref = reference_forward(sd, x, torch.zeros(3))
    assert ours.shape == (3, L, V + 1)
    diff = float((ours - ref).abs().max())
    assert diff < 2e-5, diff
    assert float(ref.std()) > 0.5  # the check has teeth: the logits are far from constant
    # SUBS on top: the mask column is dropped, unmasked positions carry their token
    log_mu = pipe.denoiser(x, torch.full((3,), 0.5))
    masked = x == V
    expect = torch.log_softmax(ref[..., :V], -1)
    assert torch.allclose(log_mu[masked], expect[masked], atol=1e-4)
    assert torch.all(log_mu[~masked].argmax(-1) == x[~masked]) and torch.all(log_mu[~masked].max(-1).values == 0)


@torch.no_grad()
def test_training_dropout_is_on_the_residual_branches_only(converted):
    """In train mode with dropout p, the network equals the reference forward with the same dropout masks (the
    same seed, the same draws in the same order): MDLM drops the attention and MLP outputs, never the
    attention probabilities (an extra dropout there would change the output and the draws)."""
    sd, out = converted
    net = maskdiff.from_pretrained(out).objective.network.train()
    for block in net.blocks:
        block.dropout = 0.3
    x = torch.randint(0, V + 1, (3, L), generator=torch.Generator().manual_seed(4))
    torch.manual_seed(9)
    ours = net(x, None)
    torch.manual_seed(9)
    ref = reference_forward(sd, x, torch.zeros(3), drop=lambda z: F.dropout(z, 0.3, training=True))
    assert float((ours - ref).abs().max()) < 2e-5
    assert float((ref - reference_forward(sd, x, torch.zeros(3))).abs().max()) > 1e-2  # dropout is on


@torch.no_grad()
def test_time_conditioned_conversion_feeds_sigma(tmp_path):
    """--time-conditioned: the network sees sigma(t) = -log(1 - (1 - 1e-3) t) of MDLM's log-linear noise."""
    sd = mdlm_state_dict(seed=3)
    save_file(sd, str(tmp_path / "m.safetensors"))
    pipe = maskdiff.from_pretrained(convert_mdlm(tmp_path / "m.safetensors", tmp_path / "out", heads=HEADS, length=L,
                                                 tokenizer="bytes", time_conditioned=True))
    x = torch.randint(0, V + 1, (2, L), generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0.3, 0.9])
    ref = reference_forward(sd, x, -torch.log1p(-(1 - 1e-3) * t))
    assert float((pipe.objective.network(x, t) - ref).abs().max()) < 2e-5
    assert float((reference_forward(sd, x, torch.zeros(2)) - ref).abs().max()) > 1e-2  # sigma matters


@pytest.mark.slow
def test_converted_model_evaluates_and_samples_from_the_command_line(converted):
    _, out = converted
    proc = run_cli("eval", out, "--corpus", "shakespeare", "--limit", "4", "--no-progress", "--unit", "BPT")
    assert proc.returncode == 0, proc.stderr
    assert "BPT <=" in proc.stdout
    proc = run_cli("sample", out, "--num", "2", "--steps", "8", "--no-progress", "--out", out.parent / "s.txt")
    assert proc.returncode == 0, proc.stderr
    assert "2 samples" in proc.stdout


@pytest.mark.parametrize("edit,needle", [
    (lambda sd: sd.pop("backbone.blocks.1.attn_out.weight"), "backbone.blocks.1.attn_out.weight"),
    (lambda sd: sd.__setitem__("backbone.blocks.0.mlp.2.bias", torch.zeros(W + 1)), "backbone.blocks.0.mlp.2.bias"),
    (lambda sd: sd.__setitem__("backbone.blocks.0.extra.weight", torch.zeros(3)), "backbone.blocks.0.extra.weight"),
    (lambda sd: sd.pop("backbone.vocab_embed.embedding"), "backbone.vocab_embed.embedding"),
    (lambda sd: sd.__setitem__("backbone.rotary_emb.inv_freq", torch.ones(W // HEADS // 2)), "rotary_emb.inv_freq"),
])
def test_a_missing_or_misshaped_key_is_named(tmp_path, edit, needle):
    sd = mdlm_state_dict()
    edit(sd)
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(MaskdiffError, match=needle.replace(".", r"\.")):
        convert_mdlm(tmp_path, tmp_path / "out", heads=HEADS, length=L, tokenizer="bytes")


def test_wrong_heads_or_vocabulary_are_clear_errors(tmp_path):
    save_file(mdlm_state_dict(), str(tmp_path / "model.safetensors"))
    with pytest.raises(MaskdiffError, match="heads"):
        convert_mdlm(tmp_path, tmp_path / "a", heads=3, length=L, tokenizer="bytes")
    with pytest.raises(MaskdiffError, match="27"):
        convert_mdlm(tmp_path, tmp_path / "b", heads=HEADS, length=L, tokenizer="text8")


class NotATensor:
    pass


@pytest.mark.slow
def test_pickle_is_refused_without_opt_in_and_only_tensors_are_taken(tmp_path, converted):
    sd, out = converted
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": dict(sd, **{"noise.sigma_max": 20.0}), "epoch": 3, "hyper_parameters": {"lr": 3e-4}}, ckpt)
    proc = run_cli("convert", "mdlm", ckpt, tmp_path / "refused", "--heads", str(HEADS), "--length", str(L), "--tokenizer", "bytes")
    assert_clean_error(proc, "pickle", "--allow-pickle")
    assert not (tmp_path / "refused").exists()
    pipe = maskdiff.from_pretrained(convert_mdlm(ckpt, tmp_path / "opted", heads=HEADS, length=L, tokenizer="bytes", allow_pickle=True))
    same = maskdiff.from_pretrained(out)
    for k, v in same.objective.state_dict().items():
        assert torch.equal(v, pipe.objective.state_dict()[k]), k
    # an object that is not a tensor or a plain container is never unpickled: its class becomes a placeholder
    torch.save({"state_dict": sd, "callback": NotATensor()}, tmp_path / "evil.ckpt")
    pipe = maskdiff.from_pretrained(convert_mdlm(tmp_path / "evil.ckpt", tmp_path / "evil", heads=HEADS, length=L,
                                                 tokenizer="bytes", allow_pickle=True))
    for k, v in same.objective.state_dict().items():
        assert torch.equal(v, pipe.objective.state_dict()[k]), k
    # a file that is not a pickle at all is still a clean error
    (tmp_path / "junk.ckpt").write_bytes(b"not a pickle")
    with pytest.raises(MaskdiffError, match="tensors only"):
        convert_mdlm(tmp_path / "junk.ckpt", tmp_path / "junk", heads=HEADS, length=L, tokenizer="bytes", allow_pickle=True)


TRIPPED = []


def trip(*args):
    TRIPPED.append(args)
    return {}


class Tripwire:
    """Stands for what MDLM's .ckpt pickles beside its tensors (its hydra config, its tokenizer): unpickling it
    for real would call ``trip`` (``__reduce__``) and its state setter."""

    def __reduce__(self):
        return (trip, ("reduce",))


class Configured:
    def __init__(self):
        self.table = collections.defaultdict(list, {"a": [1]})  # SETITEMS on a foreign container

    def __setstate__(self, state):
        TRIPPED.append("setstate")


def lightning_checkpoint(sd, ema_offset: float):
    """What PyTorch Lightning saves for MDLM's Diffusion module: the raw weights under state_dict, the EMA
    (models/ema.py: decay, num_updates, shadow_params in the order of backbone.parameters(), the rotary
    buffer left out) under 'ema', and pickled objects beside them."""
    shadow = [v + ema_offset for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")]
    return {"state_dict": sd, "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow},
            "hyper_parameters": {"config": Configured(), "tokenizer": Tripwire()}, "global_step": 7}


def test_lightning_checkpoint_gives_its_ema_weights_and_runs_none_of_its_code(tmp_path):
    """MDLM evaluates and samples with the EMA (on_load_checkpoint, on_validation_epoch_start): a .ckpt
    converts to its EMA by default, to its raw weights with ema=False (--raw-weights); the pickled objects
    beside the tensors are read as inert placeholders, so neither __reduce__ nor __setstate__ runs."""
    sd = mdlm_state_dict(seed=5)
    torch.save(lightning_checkpoint(sd, 0.01), tmp_path / "last.ckpt")
    TRIPPED.clear()
    ema = maskdiff.from_pretrained(convert_mdlm(tmp_path / "last.ckpt", tmp_path / "ema", heads=HEADS, length=L,
                                               tokenizer="bytes", allow_pickle=True))
    raw = maskdiff.from_pretrained(convert_mdlm(tmp_path / "last.ckpt", tmp_path / "raw", heads=HEADS, length=L,
                                               tokenizer="bytes", allow_pickle=True, ema=False))
    assert TRIPPED == []
    net_ema, net_raw = ema.objective.network.state_dict(), raw.objective.network.state_dict()
    for name, value in net_raw.items():
        assert torch.equal(value, sd["backbone." + name]), name
        assert torch.allclose(net_ema[name], sd["backbone." + name] + 0.01), name
    proc = run_cli("convert", "mdlm", tmp_path / "last.ckpt", tmp_path / "cli", "--heads", str(HEADS), "--length", str(L),
                   "--tokenizer", "bytes", "--allow-pickle", "--raw-weights")
    assert proc.returncode == 0, proc.stderr
    cli = maskdiff.from_pretrained(tmp_path / "cli").objective.network.state_dict()
    assert all(torch.equal(cli[k], v) for k, v in net_raw.items())


def test_ema_that_does_not_match_the_parameters_is_a_clear_error(tmp_path):
    sd = mdlm_state_dict(seed=6)
    ckpt = lightning_checkpoint(sd, 0.0)
    ckpt["ema"]["shadow_params"] = ckpt["ema"]["shadow_params"][1:]
    torch.save(ckpt, tmp_path / "short.ckpt")
    with pytest.raises(MaskdiffError, match="raw-weights"):
        convert_mdlm(tmp_path / "short.ckpt", tmp_path / "out", heads=HEADS, length=L, tokenizer="bytes", allow_pickle=True)
