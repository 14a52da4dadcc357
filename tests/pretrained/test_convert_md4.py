"""maskdiff convert md4: an .npz with exactly the flax paths and shapes of MD4's text network (google-deepmind/md4:
``classifier/Embed_0``, ``CondEmbedding_0``, ``Transformer_0/TransformerBlock_i/...``), built here at a small
size with random values, is converted; the converted model's logits must equal a forward pass written here
from MD4's published architecture in float64 (outside embedding, time features of 1000 t, adaLN-zero with a
sigmoid in front, LayerNorm without parameters, interleaved rotary as complex multiplication, sigmoid-gated MLP,
output over V without bias)."""
import math

import numpy as np
import pytest
import torch

import maskdiff
from helpers import assert_clean_error, run_main
from maskdiff.convert_md4 import convert_md4
from maskdiff.errors import MaskdiffError

V, FEATURE, HEADS, DEPTH, L = 27, 8, 2, 2, 10  # text8: 27 tokens, the mask is id 27
W = FEATURE * HEADS


def md4_params(seed: int = 0):
    """MD4's flax paths (kernels (in, out)) with random values; the adaLN and output layers non-zero so that
    every part of the forward pass matters."""
    hidden = 32 * ((int(2 * 4 * W / 3) + 31) // 32)
    rng = np.random.default_rng(seed)
    shapes = {"classifier/Embed_0/embedding": (V + 1, FEATURE),
              "classifier/CondEmbedding_0/dense0/kernel": (FEATURE, 4 * FEATURE), "classifier/CondEmbedding_0/dense0/bias": (4 * FEATURE,),
              "classifier/CondEmbedding_0/Dense_0/kernel": (4 * FEATURE, FEATURE), "classifier/CondEmbedding_0/Dense_0/bias": (FEATURE,),
              "classifier/Transformer_0/Dense_0/kernel": (FEATURE, W), "classifier/Transformer_0/Dense_0/bias": (W,),
              "classifier/Transformer_0/Dense_1/kernel": (FEATURE, 2 * W), "classifier/Transformer_0/Dense_1/bias": (2 * W,),
              "classifier/Transformer_0/Dense_2/kernel": (W, V)}
    for i in range(DEPTH):
        b = f"classifier/Transformer_0/TransformerBlock_{i}/"
        shapes.update({b + "Dense_0/kernel": (FEATURE, 6 * W), b + "Dense_0/bias": (6 * W,),
                       **{b + f"attention/{n}/kernel": (W, W) for n in ("wq", "wk", "wv", "wo")},
                       b + "feed_forward/w1/kernel": (W, hidden), b + "feed_forward/w3/kernel": (W, hidden),
                       b + "feed_forward/w2/kernel": (hidden, W)})
    return {"params/" + k: (rng.standard_normal(s) / math.sqrt(s[0] if len(s) == 2 else 4)).astype(np.float32)
            for k, s in shapes.items()}


def md4_forward(params, tokens, t):
    """MD4's text network written from its description, float64: logits (B, L, V)."""
    p = {k[len("params/classifier/"):]: torch.from_numpy(v).double() for k, v in params.items()}
    dense = lambda x, name: x @ p[name + "/kernel"] + (p[name + "/bias"] if name + "/bias" in p else 0.0)
    norm = lambda x: (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)
    half = FEATURE // 2
    freqs = torch.exp(-math.log(10000) / (half - 1) * torch.arange(half, dtype=torch.float64))
    args = 1000.0 * t.double()[:, None] * freqs
    c = torch.cat([args.sin(), args.cos()], -1)
    c = dense(torch.nn.functional.silu(dense(c, "CondEmbedding_0/dense0")), "CondEmbedding_0/Dense_0")  # (B, F)
    x = dense(p["Embed_0/embedding"][tokens], "Transformer_0/Dense_0")  # (B, L, W)
    B, n, D = tokens.shape[0], tokens.shape[1], W // HEADS
    rot = torch.polar(torch.ones(n, D // 2, dtype=torch.float64),
                      torch.arange(n, dtype=torch.float64)[:, None] / 10000 ** (torch.arange(0, D, 2, dtype=torch.float64) / D))

    def rope(z):  # (B, L, H, D): pairs (2i, 2i + 1) as complex numbers times e^{i pos theta_i}
        zc = torch.view_as_complex(z.reshape(B, n, HEADS, D // 2, 2).contiguous()) * rot[None, :, None]
        return torch.view_as_real(zc).reshape(B, n, HEADS, D)

    for i in range(DEPTH):
        b = f"Transformer_0/TransformerBlock_{i}/"
        mod = dense(torch.sigmoid(c), b + "Dense_0")[:, None]
        s1, sc1, g1, s2, sc2, g2 = mod.split(W, -1)
        h = norm(x) * (1 + sc1) + s1
        q, k, v = (dense(h, b + f"attention/{w}").view(B, n, HEADS, D) for w in ("wq", "wk", "wv"))
        q, k = rope(q), rope(k)
        att = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D), -1)
        a = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, n, W)
        x = x + g1 * dense(a, b + "attention/wo")
        h = norm(x) * (1 + sc2) + s2
        ff = dense(torch.sigmoid(dense(h, b + "feed_forward/w1")) * dense(h, b + "feed_forward/w3"), b + "feed_forward/w2")
        x = x + g2 * ff
    shift, scale = dense(torch.sigmoid(c), "Transformer_0/Dense_1")[:, None].split(W, -1)
    return dense(norm(x) * (1 + scale) + shift, "Transformer_0/Dense_2")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("md4")
    params = md4_params()
    np.savez(folder / "params.npz", **params)
    return params, convert_md4(folder / "params.npz", folder / "out", length=L)


def test_converted_logits_equal_md4_forward(converted):
    params, out = converted
    pipe = maskdiff.from_pretrained(out)
    assert pipe.config.model.backbone == "md4-transformer" and (pipe.config.model.width, pipe.config.model.heads) == (W, HEADS)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V + 1, (4, L), generator=g)
    t = torch.tensor([0.0, 0.2, 0.7, 1.0])
    with torch.no_grad():
        ours = pipe.objective.network(tokens, t)
    expected = md4_forward(params, tokens, t)
    assert expected.abs().max() > 1.0  # a forward pass in which every part matters
    torch.testing.assert_close(ours.double(), expected, atol=2e-5, rtol=1e-5)


def test_the_command_line_converts_an_npz(converted, tmp_path):
    params, _ = converted
    np.savez(tmp_path / "p.npz", **params)
    proc = run_main("convert", "md4", tmp_path / "p.npz", tmp_path / "cli", "--length", str(L))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert "md4" in run_main("convert", "--help").stdout
    for flag in (["--heads", "4"], ["--raw-weights"], ["--block-size", "4"]):  # what the shapes tell, or other formats' options
        proc = run_main("convert", "md4", tmp_path / "p.npz", tmp_path / "cli2", "--length", str(L), *flag)
        assert_clean_error(proc, flag[0])
        assert not (tmp_path / "cli2").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p.pop("params/classifier/Transformer_0/TransformerBlock_1/attention/wk/kernel"), "attention/wk/kernel"),
    (lambda p: p.update({"params/classifier/Transformer_0/Extra_0/kernel": np.zeros((2, 2), np.float32)}), "Extra_0"),
    (lambda p: p.pop("params/classifier/Embed_0/embedding"), "Embed_0/embedding"),
])
def test_a_missing_or_unknown_entry_is_named(tmp_path, edit, needle):
    params = md4_params()
    edit(params)
    np.savez(tmp_path / "p.npz", **params)
    with pytest.raises(MaskdiffError, match=needle):
        convert_md4(tmp_path / "p.npz", tmp_path / "out", length=L)
    assert_clean_error(run_main("convert", "md4", tmp_path / "p.npz", tmp_path / "cli", "--length", str(L)), needle)
