"""MD4's transformer, parameter for parameter: the network of MD4's text8 and OpenWebText configurations
(Shi et al. 2024; google-deepmind/md4, ``networks/transformer.py`` inside ``models/backward.py``'s
``DiscreteClassifier``), so that weights trained by MD4's code compute here what they computed there.

What fixes it apart from maskdiff's own :class:`~maskdiff.networks.transformer.DiT`:

* the token embedding sits "outside" the transformer: a (V + 1, F) table, F = width / heads (MD4's
  ``feature_dim``), then a dense layer with bias from F to the width;
* time features: c = Dense(SiLU(Dense(sinusoid(1000 t)))), F sinusoids (sines then cosines, periods up to
  10,000), 4F hidden units, c of size F; with no time conditioning there is no c (below);
* adaLN-zero in every block and before the output: the modulation of a block is Dense(act(c)) into
  (shift, scale, gate) for attention then for the MLP, the output's into (shift, scale), all initialised
  at zero; act is the MLP's gate activation (sigmoid for 'glu', MD4's text8 choice). The norms are
  LayerNorms without scale or bias (eps 1e-5);
* gated MLP without biases: w2(act(w1 x) * w3 x), hidden size 2/3 of 4 W rounded up to a multiple of 32
  (704 at W = 256); with depth-scaled init its three matrices start at variance 2 / (depth fan_in);
* attention without biases, rotary embedding on interleaved pairs (dims 2i and 2i + 1, base 10,000),
  no positional embedding otherwise;
* an output layer over the V real tokens only (no mask column), without bias, initialised at zero: at
  initialisation every logit is 0 whatever the input.

Without time conditioning (MD4's ``time_features='none'``) the blocks and the output use RMSNorms with
a learned scale and no modulation, as MD4 does when its transformer gets no conditioning vector.

Parameter names follow MD4's flax tree (``maskdiff.convert_md4`` maps one onto the other); weights are
(out, in) as PyTorch's. Architecture only.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import attending_keys, rotary_angles

ACTIVATIONS = {"glu": torch.sigmoid, "swiglu": F.silu, "geglu": lambda x: F.gelu(x, approximate="tanh")}  # MD4's activation_map
NORM_EPS = 1e-5
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a standard normal truncated to [-2, 2] (flax's variance_scaling)


def mlp_hidden(width: int, multiple_of: int = 32) -> int:
    """MD4's FeedForward size: int(2/3 of 4 W), rounded up to a multiple of 32."""
    hidden = int(2 * (4 * width) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def variance_scaling_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """Flax's variance_scaling(scale, 'fan_in', 'truncated_normal') on a PyTorch (out, in) weight."""
    std = math.sqrt(scale / weight.shape[1]) / TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def dense(fan_in: int, fan_out: int, *, bias: bool = True, scale: Optional[float] = 1.0) -> nn.Linear:
    """A linear layer initialised as flax's Dense (lecun normal kernel, zero bias); scale None: all zeros."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    with torch.no_grad():
        if scale is None:
            layer.weight.zero_()
        else:
            variance_scaling_(layer.weight, scale)
        if bias:
            layer.bias.zero_()
    return layer


def time_features(t: Tensor, dim: int) -> Tensor:
    """MD4's sinusoidal embedding of t (B,) -> (B, dim): sines then cosines of t at dim / 2 frequencies."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * -(math.log(10_000) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.sin(), args.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))


def rotate_pairs(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding on interleaved pairs (dims 2i, 2i + 1). x: (B, H, L, D); cos, sin: (L, D / 2)."""
    real, imag = x[..., 0::2], x[..., 1::2]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


class TimeEmbedding(nn.Module):
    """c = Dense_0(SiLU(dense0(sinusoid(1000 t)))): (B,) -> (B, F)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.dense0 = dense(dim, 4 * dim)
        self.dense1 = dense(4 * dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        return self.dense1(F.silu(self.dense0(time_features(1000.0 * t, self.dim))))


class RMSNorm(nn.Module):
    """x / rms(x) times a learned scale (the unconditioned network's norm)."""

    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.scale


def plain_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), eps=NORM_EPS)


class MD4Block(nn.Module):
    def __init__(self, width: int, heads: int, cond_dim: int, depth: int, mlp_type: str, depth_scaled_init: bool,
                 conditioned: bool):
        super().__init__()
        self.heads, self.act = heads, ACTIVATIONS[mlp_type]
        self.wq, self.wk, self.wv, self.wo = (dense(width, width, bias=False) for _ in range(4))
        hidden, scale = mlp_hidden(width), (2.0 / depth if depth_scaled_init else 1.0)
        self.w1, self.w3 = dense(width, hidden, bias=False, scale=scale), dense(width, hidden, bias=False, scale=scale)
        self.w2 = dense(hidden, width, bias=False, scale=scale)
        if conditioned:
            self.modulation = dense(cond_dim, 6 * width, scale=None)  # adaLN-zero
        else:
            self.attention_norm, self.ffn_norm = RMSNorm(width), RMSNorm(width)

    def attention(self, h: Tensor, cos: Tensor, sin: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
        B, L, W = h.shape
        q, k, v = (w(h).view(B, L, self.heads, W // self.heads).transpose(1, 2) for w in (self.wq, self.wk, self.wv))  # (B, H, L, D)
        q, k = rotate_pairs(q, cos, sin), rotate_pairs(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.wo(a.transpose(1, 2).reshape(B, L, W))

    def feed_forward(self, h: Tensor) -> Tensor:
        return self.w2(self.act(self.w1(h)) * self.w3(h))

    def forward(self, x: Tensor, c: Optional[Tensor], cos: Tensor, sin: Tensor, attn_mask: Optional[Tensor]) -> Tensor:
        if c is None:
            h = x + self.attention(self.attention_norm(x), cos, sin, attn_mask)
            return h + self.feed_forward(self.ffn_norm(h))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(self.act(c))[:, None].chunk(6, dim=-1)  # (B, 1, W) each
        h = x + gate1 * self.attention(plain_norm(x) * (scale1 + 1.0) + shift1, cos, sin, attn_mask)
        return h + gate2 * self.feed_forward(plain_norm(h) * (scale2 + 1.0) + shift2)


class MD4Transformer(nn.Module):
    """MD4's network: tokens (B, L) in [0, V] (V = mask) and t (B,) -> logits (B, L, V), no mask column.

    width: MD4's feature_dim x num_heads (its text8 setting: 64 x 12). time_conditioned: t enters through
    adaLN-zero (MD4's time_features 't'); otherwise no conditioning and RMSNorms ('none'). mlp_type:
    'glu' (sigmoid gate, MD4's text8), 'swiglu' or 'geglu'. depth_scaled_init: the MLP's matrices start
    at variance 2 / (depth fan_in) (MD4's text8) instead of 1 / fan_in.
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 768, depth: int = 12, heads: int = 12,
                 time_conditioned: bool = True, mlp_type: str = "glu", depth_scaled_init: bool = True):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        if mlp_type not in ACTIVATIONS:
            raise ValueError(f"unknown mlp_type {mlp_type!r}; choose one of: {', '.join(ACTIVATIONS)}")
        self.vocab_size, self.max_length, self.width = vocab_size, max_length, width
        self.time_conditioned, self.act = time_conditioned, ACTIVATIONS[mlp_type]
        feature_dim = width // heads
        self.embed = nn.Embedding(vocab_size + 1, feature_dim)
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(feature_dim))
        self.input_proj = dense(feature_dim, width)
        self.time_embed = TimeEmbedding(feature_dim) if time_conditioned else None
        self.blocks = nn.ModuleList(MD4Block(width, heads, feature_dim, depth, mlp_type, depth_scaled_init, time_conditioned)
                                    for _ in range(depth))
        if time_conditioned:
            self.final_modulation = dense(feature_dim, 2 * width, scale=None)  # adaLN-zero
        else:
            self.final_norm = RMSNorm(width)
        self.head = dense(width, vocab_size, bias=False, scale=None)
        head_dim = width // heads
        self.register_buffer("inv_freq", 1.0 / 10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim),
                             persistent=False)

    def num_parameters(self, exclude_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 N (N: non-embedding parameters) + 12 depth width L (attention scores)."""
        return 6.0 * self.num_parameters() + 12.0 * len(self.blocks) * self.width * seq_len

    def forward(self, tokens: Tensor, t: Optional[Tensor] = None, *, valid: Optional[Tensor] = None,
                positions: Optional[Tensor] = None) -> Tensor:
        """valid: (B, L) bool, attention never looks where it is False; positions: (B, L) bool, the output
        layer runs there only and the result is (N, V) in row-major order."""
        B, L = tokens.shape
        c = None
        if self.time_conditioned:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            c = self.time_embed(t.float().expand(B) if t.dim() == 0 else t.float())  # (B, F)
        x = self.input_proj(self.embed(tokens))  # (B, L, W)
        cos, sin = rotary_angles(torch.arange(L, device=tokens.device), self.inv_freq)  # (L, D/2)
        attn_mask = None
        if valid is not None:
            attn_mask = attending_keys(valid)[:, None, None, :]
        for block in self.blocks:
            x = block(x, c, cos, sin, attn_mask)
        if c is None:
            h = self.final_norm(x)
        else:
            shift, scale = self.final_modulation(self.act(c))[:, None].chunk(2, dim=-1)
            h = plain_norm(x) * (scale + 1.0) + shift
        return self.head(h if positions is None else h[positions])
