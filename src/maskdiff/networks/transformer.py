"""A DiT-style transformer over token sequences (the MDLM backbone, written for CPU and CUDA).

Pre-norm blocks with rotary position embeddings, bidirectional attention through
``torch.nn.functional.scaled_dot_product_attention`` (causal for the autoregressive baseline), and
optional adaLN time conditioning (shift, scale, gate per sub-layer from an embedding of t). Without
time conditioning the blocks are plain pre-LayerNorm blocks and ``forward`` ignores t.
Architecture only: no loss, no data, no config parsing.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) on the first ``dim`` channels of each head."""

    def __init__(self, dim: int, max_length: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        angles = torch.outer(torch.arange(max_length, dtype=torch.float32), inv_freq)  # (L, dim/2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, H, L, D)
        """Rotated in float32 (the tables are float32) and returned in the dtype of x (bfloat16 under autocast)."""
        L = x.shape[-2]
        cos, sin = self.cos[:L], self.sin[:L]
        x1, x2 = x[..., 0::2].float(), x[..., 1::2].float()
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.flatten(-2).to(x.dtype)


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] followed by a two-layer MLP (DiT)."""

    def __init__(self, cond_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t: Tensor) -> Tensor:  # (B,) -> (B, cond_dim)
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = 1000.0 * t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1.0 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_dim: Optional[int], rotary: RotaryEmbedding, causal: bool, dropout: float):
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.dropout = dropout
        self.rotary = rotary
        adaln = cond_dim is not None
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not adaln)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not adaln)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        hidden = int(mlp_ratio * width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.adaln = nn.Linear(cond_dim, 6 * width) if adaln else None

    def attention(self, x: Tensor, attn_mask: Optional[Tensor] = None) -> Tensor:
        B, L, W = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, D) each
        q, k = self.rotary(q), self.rotary(k)
        drop = self.dropout if self.training else 0.0
        if attn_mask is not None and self.causal:
            attn_mask = attn_mask & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=self.causal and attn_mask is None)
        return self.proj(out.transpose(1, 2).reshape(B, L, W))

    def forward(self, x: Tensor, cond: Optional[Tensor], attn_mask: Optional[Tensor] = None) -> Tensor:
        if self.adaln is None:
            x = x + self.attention(self.norm1(x), attn_mask)
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(cond).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attention(modulate(self.norm1(x), shift1, scale1), attn_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


INITS = ("default", "gpt2")


class DiT(nn.Module):
    """Transformer mapping token ids (B, L) in [0, V] (V = mask) and optional t (B,) to logits (B, L, V).

    vocab_size: V real tokens; the embedding has V + 1 rows (the mask), the output V columns (SUBS
        drops the mask logit anyway). ``output_mask_logit`` adds the mask column for ablations.
    time_conditioned: adaLN conditioning on t; otherwise t is ignored.
    causal: causal attention (the autoregressive baseline uses the same network).
    init: 'default' (PyTorch's linear-layer init, as MDLM's reference) or 'gpt2' (normal, std 0.02).
    num_classes: class conditioning (> 0): the label is embedded as one extra token in front of the
        sequence (its output is dropped); label ``num_classes`` is the null class, the default when
        ``forward`` gets no labels.
    """

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        width: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        cond_dim: int = 128,
        time_conditioned: bool = False,
        causal: bool = False,
        dropout: float = 0.0,
        output_mask_logit: bool = False,
        num_classes: int = 0,
        init: str = "default",
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        self.init = init
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        self.vocab_size, self.max_length = vocab_size, max_length
        self.time_conditioned = time_conditioned
        self.embed = nn.Embedding(vocab_size + 1, width)
        self.num_classes = num_classes
        self.class_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.rotary = RotaryEmbedding(width // heads, max_length + int(num_classes > 0))
        cond = cond_dim if time_conditioned else None
        self.time_embed = TimestepEmbedding(cond_dim) if time_conditioned else None
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, cond, self.rotary, causal, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=not time_conditioned)
        self.adaln_out = nn.Linear(cond_dim, 2 * width) if time_conditioned else None
        self.head = nn.Linear(width, vocab_size + int(output_mask_logit))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # PyTorch's default for linear layers (uniform, std 1/sqrt(3 fan_in)) and the same bound,
        # 1/sqrt(width), for the embeddings, as MDLM's reference DiT. GPT-2's fixed std of 0.02 suits
        # width 768 (1/sqrt(3 * 768) = 0.021) but is 2.5x too small at width 128, where it kept small
        # models longer on the plateau before they learn to attend to their neighbours (docs/results.md).
        width = self.embed.weight.shape[1]
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)) and self.init == "gpt2":
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
            elif isinstance(m, nn.Embedding):
                nn.init.uniform_(m.weight, -1.0 / math.sqrt(width), 1.0 / math.sqrt(width))
        # adaLN-zero (DiT) and a zero output layer: at initialisation every block is the identity in
        # its residual branch gates and mu is uniform.
        for m in [b.adaln for b in self.blocks] + [self.adaln_out, self.head]:
            if m is not None:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, tokens: Tensor, t: Optional[Tensor] = None, labels: Optional[Tensor] = None, *,
                valid: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        """Logits (B, L, V) of ``tokens`` (B, L) at time ``t`` (B,), for class ``labels`` (B,) if conditional.

        valid: optional (B, L) bool; attention never looks at positions where it is False (padding), so
            a padded row gives the same outputs at its real positions as the unpadded row.
        positions: optional (B, L) bool; the output layer runs only there and the result is the logits
            of those positions in row-major order, (N, V) with N = positions.sum(). With a large
            vocabulary the output layer dominates, and a loss needs the masked positions only.
        """
        h = self.features(tokens, t, labels, valid=valid)  # (B, L, W)
        return self.head(h if positions is None else h[positions])

    def features(self, tokens: Tensor, t: Optional[Tensor] = None, labels: Optional[Tensor] = None, *,
                 valid: Optional[Tensor] = None) -> Tensor:
        """The final hidden states (B, L, W), before the output layer."""
        x = self.embed(tokens)  # (B, L, W)
        if self.class_embed is not None:
            if labels is None:
                labels = torch.full((tokens.shape[0],), self.num_classes, dtype=torch.long, device=tokens.device)
            x = torch.cat([self.class_embed(labels)[:, None], x], dim=1)  # (B, 1 + L, W)
        elif labels is not None:
            raise ValueError("this network is not class-conditional: it takes no labels")
        cond = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            cond = F.silu(self.time_embed(t))
        attn_mask = None
        if valid is not None and tokens.is_cuda and bool(valid.all()):
            valid = None  # no padding in this batch: no mask, so SDPA may take the flash kernel
        if valid is not None:
            keys = valid | ~valid.any(-1, keepdim=True)  # a row with no valid position attends everywhere
            if self.class_embed is not None:
                keys = torch.cat([torch.ones_like(keys[:, :1]), keys], dim=1)  # the class token is always seen
            attn_mask = keys[:, None, None, :]  # (B, 1, 1, L): True = may attend
        for block in self.blocks:
            x = block(x, cond, attn_mask)
        x = self.norm_out(x)
        if self.adaln_out is not None:
            shift, scale = self.adaln_out(cond).chunk(2, dim=-1)  # (B, W) each
            x = modulate(x, shift, scale)
        return x if self.class_embed is None else x[:, 1:]

    def output_bias(self) -> nn.Parameter:
        return self.head.bias

    def num_parameters(self, exclude_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if exclude_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward = 3x forward), the PaLM / nanoGPT estimate:
        6 N (N: non-embedding parameters) + 12 * depth * width * seq_len for attention scores."""
        depth = len(self.blocks)
        width = self.embed.weight.shape[1]
        return 6.0 * self.num_parameters() + 12.0 * depth * width * seq_len
