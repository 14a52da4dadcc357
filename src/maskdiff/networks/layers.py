"""The layers of maskdiff's transformer (networks/transformer.py) that are not the block itself: rotary
position embedding, the embedding of t, adaLN modulation, block diffusion's attention mask and local
mixing. Architecture only.

Imported relatively by the network files (transformer.py, mdlm_dit.py, md4_transformer.py), because an
exported model folder carries them all as Hugging Face remote code (maskdiff.pretrained.REMOTE_CODE).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

def attending_keys(valid: Tensor) -> Tensor:
    """(B, L) bool: the positions each row's queries may attend to, its valid ones; a row with no valid
    position attends everywhere (so that no softmax is over nothing)."""
    return valid | ~valid.any(-1, keepdim=True)


def rotary_angles(positions: Tensor, inv_freq: Tensor) -> Tuple[Tensor, Tensor]:
    """(cos, sin), each (N, D/2): the rotary angles at ``positions`` (N,) for the frequencies ``inv_freq`` (D/2,)."""
    angles = torch.outer(positions.to(torch.float32), inv_freq)
    return angles.cos(), angles.sin()


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) on the first ``dim`` channels of each head."""

    def __init__(self, dim: int, max_length: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        cos, sin = rotary_angles(torch.arange(max_length), inv_freq)  # (L, dim/2)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, x: Tensor, start: int = 0, positions: Optional[Tensor] = None) -> Tensor:  # (..., L, D)
        """Rotate x (..., L, D), positions on the second-to-last axis, in float32 (the tables are float32),
        returned in the dtype of x (bfloat16 under autocast). ``start``: the position of x's first row (a
        window of a longer sequence); ``positions``: optional (L,) position of each row instead.

        Each channel pair (x_{2i}, x_{2i+1}) turns by the angle of its position and frequency: as a complex
        number x_{2i} + j x_{2i+1} times cos + j sin, one elementwise product (and one in the backward pass)
        instead of slicing the pairs apart and stacking them back, whose strided copies cost as much as
        the rotation itself on a CPU.
        """
        L = x.shape[-2]
        if positions is None:
            turn = torch.complex(self.cos[start : start + L], self.sin[start : start + L])  # (L, D/2)
        else:
            turn = torch.complex(self.cos[positions], self.sin[positions])
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # (..., L, D/2)
        return torch.view_as_real(pairs * turn).flatten(-2).to(x.dtype)


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
    """x (B, L, W) with shift and scale (B, W) per row; or x (N, W) with shift and scale (N, W) per position."""
    if x.dim() == shift.dim():
        return x * (1.0 + scale) + shift
    return x * (1.0 + scale[:, None]) + shift[:, None]


KV = Tuple[Tensor, Tensor]  # one layer's rotated keys and values, (B, H, P, D) each


def block_diffusion_mask(length: int, block_size: int, device=None) -> Tensor:
    """BD3-LM's attention mask over the two streams [x_t (L), x_0 (L)] (Arriola et al. 2025), (2L, 2L) bool,
    True = query row may attend to key column. With b(n) = n // block_size the block of position n:

    * x_t -> x_t: block-diagonal, b(key) = b(query) (the noisy tokens of the query's own block);
    * x_t -> x_0: offset block-causal, b(key) < b(query) (the clean tokens of the finished blocks);
    * x_0 -> x_0: block-causal, b(key) <= b(query) (so the clean stream is what a cache of the
      finished blocks holds at sampling time);
    * x_0 -> x_t: never.
    """
    blocks = torch.arange(length, device=device) // block_size
    q, k = blocks[:, None], blocks[None, :]
    top = torch.cat([q == k, k < q], dim=1)  # x_t queries
    bottom = torch.cat([torch.zeros_like(q == k), k <= q], dim=1)  # x_0 queries
    return torch.cat([top, bottom], dim=0)


class LocalMixing(nn.Module):
    """A depthwise convolution over positions, added to the residual stream: each channel of position n
    receives a learned mix of the same channel at its ``kernel`` nearest positions (centred; for a causal
    network, n and the kernel - 1 positions before it). A masked position's only route to its neighbours'
    tokens is otherwise attention, which a small network takes long to learn to aim (docs/results.md,
    "Learning speed"); the same idea as the "Canon layers" of Allen-Zhu (2025), here bidirectional.

    keep: optional (B, L) bool; positions where it is False (padding) contribute nothing, so a padded row
    gives the same outputs at its real positions as the unpadded row.
    """

    def __init__(self, width: int, kernel: int, causal: bool):
        super().__init__()
        if kernel < 1 or (not causal and kernel % 2 == 0):
            raise ValueError(f"local mixing kernel must be a positive odd number, got {kernel}")
        self.kernel, self.causal = kernel, causal
        self.conv = nn.Conv1d(width, width, kernel, groups=width, bias=False)

    def forward(self, x: Tensor, keep: Optional[Tensor] = None) -> Tensor:  # (B, L, W)
        h = x if keep is None else x * keep[..., None].to(x.dtype)
        pad = (self.kernel - 1, 0) if self.causal else (self.kernel // 2, self.kernel // 2)
        h = F.pad(h.transpose(1, 2), pad)  # (B, W, L + kernel - 1)
        return x + self.conv(h).transpose(1, 2)
