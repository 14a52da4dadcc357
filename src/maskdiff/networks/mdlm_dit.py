"""MDLM's DiT, parameter for parameter: the architecture of the checkpoints MDLM released
(``kuleshov-group/mdlm-owt``: 12 blocks x 768, 12 heads, GPT-2's 50,257 tokens plus the mask, id 50,257).

It differs from maskdiff's own :class:`~maskdiff.networks.transformer.DiT` in the details a checkpoint
fixes, so that converted weights compute what they computed in MDLM (Sahoo et al. 2024, Sec. 4 and its
released model):

* LayerNorm with a weight and no bias (eps 1e-5), computed in float32;
* rotary embedding on the two halves of each head (dims i and i + D/2 rotate together), not on
  interleaved pairs;
* adaLN in every block, always: the conditioning vector is c = SiLU(MLP(sinusoid(sigma))); a model
  trained without time conditioning (MDLM's default, and mdlm-owt) sees sigma = 0, so c is a learned
  constant. The modulation splits into (shift, scale, gate) for attention then for the MLP; the final
  layer into (shift, scale);
* packed q, k, v projection and output projection without bias; MLP with bias and tanh-GELU;
* dropout (training only) on the attention output and the MLP output before each gated residual, none on
  the attention probabilities;
* an output layer over V + 1 columns (the mask last), raw logits: SUBS is applied outside.

The parameter names are MDLM's (``vocab_embed.embedding``, ``blocks.{i}.attn_qkv.weight``, ...), so a
converted state dict loads as it is (minus the ``backbone.`` prefix and the ``rotary_emb.inv_freq``
buffer, which is recomputed). Attention is PyTorch's ``scaled_dot_product_attention``: no flash-attn.

BD3-LM (Arriola et al. 2025, ``kuleshov-group/bd3lms``) trains this DiT, under the same names, for block
diffusion: one pass over [x_t, x_0] under its block mask, each stream's q and k rotated at the positions
0..L-1, sigma = 0. With ``block_size`` set the network runs that pass (:meth:`MDLMDiT.two_stream`) and the
sampler's cache of finished blocks, as maskdiff's DiT does in its block mode. Architecture only.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import KV, attending_keys, block_diffusion_mask, rotary_angles

LOGLINEAR_EPS = 1e-3  # MDLM's log-linear noise: sigma(t) = -log(1 - (1 - eps) t)


class WeightOnlyLayerNorm(nn.Module):
    """LayerNorm with a learned scale and no bias, normalised in float32."""

    def __init__(self, width: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps) * self.weight


class EmbeddingTable(nn.Module):
    """A (V + 1, W) table read by index; the one parameter is called ``embedding``."""

    def __init__(self, rows: int, width: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(rows, width))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embedding[tokens]


class SigmaEmbedding(nn.Module):
    """Sinusoidal features of the noise level sigma (256 of them, periods up to 10,000) and a two-layer
    SiLU MLP: ``mlp.0`` and ``mlp.2``."""

    def __init__(self, cond_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, sigma: Tensor) -> Tensor:  # (B,) -> (B, cond_dim)
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
        args = sigma.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


def rotate_halves(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding (Su et al. 2021) pairing dim i with dim i + D/2. x: (B, H, L, D); cos, sin: (L, D/2)."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class MDLMBlock(nn.Module):
    def __init__(self, width: int, heads: int, cond_dim: int, mlp_ratio: int, dropout: float, causal: bool):
        super().__init__()
        self.heads, self.dropout, self.causal = heads, dropout, causal
        self.norm1 = WeightOnlyLayerNorm(width)
        self.attn_qkv = nn.Linear(width, 3 * width, bias=False)
        self.attn_out = nn.Linear(width, width, bias=False)
        self.norm2 = WeightOnlyLayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * width, width))
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * width)

    def forward(self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor, attn_mask: Optional[Tensor],
                past: Optional[KV] = None, kv_out: Optional[List[KV]] = None) -> Tensor:
        """Block diffusion's cache: past, cached rotated (keys, values) (B, H, P, D) that x's rows attend to
        before their own; kv_out receives the rotated (keys, values) it attended to, past's then its own: the
        cache extended by x (B, H, P + L, D)."""
        B, L, W = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)  # (B, 1, W) each
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.attn_qkv(h.to(x.dtype)).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, D)
        q, k = rotate_halves(q, cos, sin), rotate_halves(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, P + L, D)
        if kv_out is not None:
            kv_out.append((k, v))
        # dropout as MDLM's bias_dropout_add: on the attention and MLP outputs before the gated residual,
        # never on the attention probabilities
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=self.causal and attn_mask is None)
        a = F.dropout(self.attn_out(a.transpose(1, 2).reshape(B, L, W)), self.dropout, self.training)
        x = x + gate1 * a
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * F.dropout(self.mlp(h.to(x.dtype)), self.dropout, self.training)


class MDLMOutput(nn.Module):
    def __init__(self, width: int, out: int, cond_dim: int):
        super().__init__()
        self.norm_final = WeightOnlyLayerNorm(width)
        self.linear = nn.Linear(width, out)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * width)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=-1)
        return self.norm_final(x) * (1 + scale) + shift


class MDLMDiT(nn.Module):
    """MDLM's DiT: tokens (B, L) in [0, V] (V = mask) and optional t (B,) -> logits (B, L, V + 1), mask last.

    vocab_size: V real tokens (mdlm-owt: 50,257). time_conditioned: c depends on sigma(t) of MDLM's
    log-linear noise; otherwise sigma = 0 (MDLM's default). causal: causal attention (the autoregressive
    baseline on this network). block_size: > 0 for block diffusion, BD3-LM's DiT (Arriola et al. 2025,
    ``kuleshov-group/bd3lms``): the same parameters, run by :meth:`two_stream`, :meth:`extend_cache` and
    :meth:`cached_logits` on blocks of ``block_size`` tokens (docs/math.md#block); not time-conditioned
    (sigma = 0, BD3-LM's ``time_conditioning: False``), not causal.
    """

    def __init__(self, vocab_size: int, max_length: int, width: int = 768, depth: int = 12, heads: int = 12,
                 cond_dim: int = 128, mlp_ratio: int = 4, dropout: float = 0.0, time_conditioned: bool = False,
                 causal: bool = False, rotary_base: float = 10000.0, block_size: int = 0):
        super().__init__()
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        if block_size and (time_conditioned or causal):
            raise ValueError("a block-diffusion network (block_size > 0) is neither time-conditioned nor causal")
        self.block_size = block_size
        self.vocab_size, self.max_length = vocab_size, max_length
        self.time_conditioned = time_conditioned
        self.vocab_embed = EmbeddingTable(vocab_size + 1, width)
        self.sigma_map = SigmaEmbedding(cond_dim)
        self.blocks = nn.ModuleList(MDLMBlock(width, heads, cond_dim, int(mlp_ratio), dropout, causal) for _ in range(depth))
        self.output_layer = MDLMOutput(width, vocab_size + 1, cond_dim)
        head_dim = width // heads
        self.register_buffer("inv_freq", 1.0 / rotary_base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim),
                             persistent=False)
        for m in [b.adaLN_modulation for b in self.blocks] + [self.output_layer.adaLN_modulation, self.output_layer.linear]:
            nn.init.zeros_(m.weight)  # adaLN-zero and a zero output layer, as MDLM initialises them
            nn.init.zeros_(m.bias)

    def output_bias(self) -> nn.Parameter:
        return self.output_layer.linear.bias

    def num_parameters(self, exclude_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.vocab_embed.embedding.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, the estimate of DiT.flops_per_token: 6 N (N: non-embedding parameters)
        + 12 * depth * width * seq_len for attention scores."""
        return 6.0 * self.num_parameters() + 12.0 * len(self.blocks) * self.vocab_embed.embedding.shape[1] * seq_len

    def forward(self, tokens: Tensor, t: Optional[Tensor] = None, *, valid: Optional[Tensor] = None,
                positions: Optional[Tensor] = None) -> Tensor:
        """valid: (B, L) bool, attention never looks where it is False; positions: (B, L) bool, the output
        layer runs there only and the result is (N, V + 1) in row-major order."""
        B, L = tokens.shape
        x = self.vocab_embed(tokens)  # (B, L, W)
        if self.time_conditioned:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            sigma = -torch.log1p(-(1 - LOGLINEAR_EPS) * t.float())
        else:
            sigma = torch.zeros(B, dtype=torch.float32, device=tokens.device)
        c = F.silu(self.sigma_map(sigma))  # (B, cond_dim)
        cos, sin = rotary_angles(torch.arange(L, device=tokens.device), self.inv_freq)  # (L, D/2)
        attn_mask = None
        if valid is not None:
            attn_mask = attending_keys(valid)[:, None, None, :]
            if self.blocks and self.blocks[0].causal:
                attn_mask = attn_mask & torch.ones(L, L, dtype=torch.bool, device=tokens.device).tril()
        for block in self.blocks:
            x = block(x, c, cos, sin, attn_mask)
        h = self.output_layer(x, c)
        return self.output_layer.linear(h if positions is None else h[positions])

    # --- block diffusion (BD3-LM): two streams in training, a key-value cache in sampling ----------------
    def _check_block_mode(self) -> None:
        if not self.block_size:
            raise ValueError("this network was built without block_size; it has no block-diffusion mode")

    def _constant_condition(self, batch: int, device) -> Tensor:
        """c at sigma = 0 (B, cond_dim): a network without time conditioning, as BD3-LM trains it."""
        return F.silu(self.sigma_map(torch.zeros(batch, dtype=torch.float32, device=device)))

    def two_stream(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """Logits (B, L, V + 1) at the x_t positions, from one pass over [x_t, x_0] (B, 2L) under
        :func:`~maskdiff.networks.layers.block_diffusion_mask` (BD3-LM's ``block_diff_mask``): position n of
        block b sees x_t of block b and x_0 of blocks < b. Both streams carry the rotary positions 0..L-1."""
        self._check_block_mode()
        B, L = x_t.shape
        cos, sin = rotary_angles(torch.arange(L, device=x_t.device).repeat(2), self.inv_freq)
        mask = block_diffusion_mask(L, self.block_size, x_t.device)
        c = self._constant_condition(B, x_t.device)
        x = self.vocab_embed(torch.cat([x_t, x0], dim=1))  # (B, 2L, W)
        for block in self.blocks:
            x = block(x, c, cos, sin, mask)
        return self.output_layer.linear(self.output_layer(x[:, :L], c))

    def extend_cache(self, cache: Optional[List[KV]], tokens: Tensor, start: int) -> List[KV]:
        """The cache with the clean tokens (B, n) at positions start..start+n-1 appended: each layer's keys
        and values of the x_0 stream, the tokens attending to the cache and to each other block-causally
        (start a multiple of block_size)."""
        self._check_block_mode()
        B, n = tokens.shape
        positions = torch.arange(start, start + n, device=tokens.device)
        mask = None
        if n > self.block_size:  # several blocks at once: block-causal among them, every cached key seen
            blocks = positions // self.block_size
            own = blocks[None, :] <= blocks[:, None]
            mask = own if cache is None else torch.cat([own.new_ones((n, cache[0][0].shape[2])), own], 1)
        cos, sin = rotary_angles(positions, self.inv_freq)
        c = self._constant_condition(B, tokens.device)
        x = self.vocab_embed(tokens)
        out: List[KV] = []
        for i, block in enumerate(self.blocks):
            x = block(x, c, cos, sin, mask, past=None if cache is None else cache[i], kv_out=out)
        return out

    def cached_logits(self, cache: Optional[List[KV]], x_t: Tensor, start: int) -> Tensor:
        """Logits (B, n, V + 1) of one noisy block x_t (B, n) at positions start..start+n-1: it attends to
        itself and to the cached clean tokens before it, the x_t rows of :meth:`two_stream`."""
        self._check_block_mode()
        B, n = x_t.shape
        cos, sin = rotary_angles(torch.arange(start, start + n, device=x_t.device), self.inv_freq)
        c = self._constant_condition(B, x_t.device)
        x = self.vocab_embed(x_t)
        for i, block in enumerate(self.blocks):
            x = block(x, c, cos, sin, None, past=None if cache is None else cache[i])
        return self.output_layer.linear(self.output_layer(x, c))
