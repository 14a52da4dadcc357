"""A DiT-style transformer over token sequences (the MDLM backbone, written for CPU and CUDA).

Pre-norm blocks with rotary position embeddings, bidirectional attention through
``torch.nn.functional.scaled_dot_product_attention`` (causal for the autoregressive baseline), and
optional adaLN time conditioning (shift, scale, gate per sub-layer from an embedding of t). Without
time conditioning the blocks are plain pre-LayerNorm blocks and ``forward`` ignores t.

With ``block_size`` set the same network also reads block diffusion's two-stream layout (BD3-LM,
Arriola et al. 2025): :meth:`DiT.two_stream` runs on the concatenation of x_t and x_0 under the mask of
:func:`block_diffusion_mask`, and :meth:`DiT.extend_cache` / :meth:`DiT.cached_logits` compute the same
outputs block by block from a key-value cache of the finished blocks.
Architecture only: no loss, no data, no config parsing.
"""
from __future__ import annotations

import math
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import KV, LocalMixing, RotaryEmbedding, TimestepEmbedding, attending_keys, block_diffusion_mask, modulate  # noqa: F401 (re-exported)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, cond_dim: Optional[int], rotary: RotaryEmbedding, causal: bool, dropout: float,
                 local_mixing: int = 0):
        super().__init__()
        self.mix = LocalMixing(width, local_mixing, causal) if local_mixing else None
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

    def attention(self, x: Tensor, attn_mask: Optional[Tensor] = None, kv: Optional[list] = None, start: int = 0, *,
                  positions: Optional[Tensor] = None, past: Optional[KV] = None, kv_out: Optional[List[KV]] = None,
                  rows: Optional[Tensor] = None) -> Tensor:
        """kv: None (the plain call), an empty list (the call appends this layer's keys and values for the
        whole sequence: a cache), or [(k, v)] of the whole sequence (x is the window at positions
        start .. start + W - 1; its fresh keys and values replace the cached ones there).
        Block diffusion: positions: (L,) rotary positions of x's rows; past: cached (keys, values)
        (B, H, P, D), already rotated, that the rows of x attend to before their own; kv_out: receives the
        rotated (keys, values) this call attended to, past's then its own: the cache extended by x (B, H, P + L, D).
        rows: optional (B, L) bool; the output projection runs at those positions only, (N, W) row-major."""
        B, L, W = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, L, D)
        qk, v = qkv.split([2, 1])  # a split, not two slices: its backward is one concatenation, not two zero-filled copies
        q, k = self.rotary(qk, start, positions)  # q and k rotated in one product, each contiguous (B, H, L, D)
        v = v.squeeze(0)
        if kv is not None and kv:
            k_all, v_all = kv[0]
            k = torch.cat([k_all[:, :, :start], k, k_all[:, :, start + L :]], dim=2)
            v = torch.cat([v_all[:, :, :start], v, v_all[:, :, start + L :]], dim=2)
        elif kv is not None:
            kv.append((k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, P + L, D)
        if kv_out is not None:
            kv_out.append((k, v))
        drop = self.dropout if self.training else 0.0
        if attn_mask is not None and self.causal:
            attn_mask = attn_mask & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop, is_causal=self.causal and attn_mask is None)
        out = out.transpose(1, 2)  # (B, L, H, D)
        return self.proj(out.reshape(B, L, W) if rows is None else out[rows].reshape(-1, W))

    def forward(self, x: Tensor, cond: Optional[Tensor], attn_mask: Optional[Tensor] = None, kv: Optional[list] = None,
                start: int = 0, keep: Optional[Tensor] = None, rows: Optional[Tensor] = None, **block_kv) -> Tensor:
        """block_kv: ``positions``, ``past`` and ``kv_out`` of :meth:`attention` (block diffusion's two streams and cache).

        rows: optional (B, L) bool; every position still serves as a key and value, but the block's output
        (after attention: the projection, the residual and the MLP) is computed at those positions only and
        returned as (N, W) in row-major order: the last block of a network whose loss reads some positions."""
        if self.mix is not None:
            x = self.mix(x, keep)
        if self.adaln is None:
            h = self.attention(self.norm1(x), attn_mask, kv, start, rows=rows, **block_kv)
            x = (x if rows is None else x[rows]) + h
            return x + self.mlp(self.norm2(x))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(cond).chunk(6, dim=-1)
        h = self.attention(modulate(self.norm1(x), shift1, scale1), attn_mask, kv, start, rows=rows, **block_kv)
        if rows is None:
            x = x + gate1[:, None] * h
            return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))
        row = rows.nonzero(as_tuple=True)[0]  # the sequence of each kept position
        x = x[rows] + gate1[row] * h
        return x + gate2[row] * self.mlp(modulate(self.norm2(x), shift2[row], scale2[row]))


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
    local_mixing: kernel size (odd) of a depthwise convolution over positions at the start of every
        block (``LocalMixing``); 0 = none.
    block_size: > 0 for block diffusion (BD3-LM): the block length L' that :meth:`two_stream`,
        :meth:`extend_cache` and :meth:`cached_logits` use (neither time nor class conditioning, nor local
        mixing, which would mix the two streams and the blocks).
    absolute_positions: add a learned embedding of each position (0 .. max_length - 1) to the token
        embeddings, besides the rotary (relative) positions; off by default (no extra parameters).
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
        local_mixing: int = 0,
        block_size: int = 0,
        absolute_positions: bool = False,
    ):
        super().__init__()
        if block_size and (time_conditioned or num_classes or causal):
            raise ValueError("a block-diffusion network (block_size > 0) takes neither time, classes nor causal attention")
        if block_size and local_mixing:
            raise ValueError("a block-diffusion network (block_size > 0) has no local mixing: it would mix the two streams")
        self.block_size = block_size
        if absolute_positions and (block_size or num_classes):
            raise ValueError("absolute positions are for networks without block diffusion or class conditioning")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of: {', '.join(INITS)}")
        self.init = init
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width {width} must split into {heads} heads of even size")
        self.vocab_size, self.max_length = vocab_size, max_length
        self.time_conditioned = time_conditioned
        self.embed = nn.Embedding(vocab_size + 1, width)
        self.position_embed = nn.Embedding(max_length, width) if absolute_positions else None
        self.num_classes = num_classes
        self.class_embed = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.rotary = RotaryEmbedding(width // heads, max_length + int(num_classes > 0))
        cond = cond_dim if time_conditioned else None
        self.time_embed = TimestepEmbedding(cond_dim) if time_conditioned else None
        self.local_mixing = local_mixing
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, cond, self.rotary, causal, dropout, local_mixing) for _ in range(depth))
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
        positions: optional (B, L) bool; the result is the logits of those positions only, in row-major
            order, (N, V) with N = positions.sum(). The output layer and the last block after its attention
            then run at those N positions (the other positions are keys and values there, nothing more): with
            a large vocabulary the output layer dominates, and a loss needs the masked positions only.
        """
        return self.head(self.features(tokens, t, labels, valid=valid, positions=positions))

    def features(self, tokens: Tensor, t: Optional[Tensor] = None, labels: Optional[Tensor] = None, *,
                 valid: Optional[Tensor] = None, positions: Optional[Tensor] = None) -> Tensor:
        """The final hidden states (B, L, W), before the output layer; with ``positions`` (B, L) bool, those
        positions' only, (N, W) in row-major order (the last block computes no others)."""
        x = self.embed(tokens)  # (B, L, W)
        if self.position_embed is not None:
            x = x + self.position_embed.weight[: tokens.shape[1]]
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
        attn_mask = keys = None
        if valid is not None and tokens.is_cuda and bool(valid.all()):
            valid = None  # no padding in this batch: no mask, so SDPA may take the flash kernel
        if valid is not None:
            keys = attending_keys(valid)
            if self.class_embed is not None:
                keys = torch.cat([torch.ones_like(keys[:, :1]), keys], dim=1)  # the class token is always seen
            attn_mask = keys[:, None, None, :]  # (B, 1, 1, L): True = may attend
        rows = positions
        if rows is not None and self.class_embed is not None:
            rows = torch.cat([torch.zeros_like(rows[:, :1]), rows], dim=1)  # never the class token's output
        *body, last = self.blocks
        for block in body:
            x = block(x, cond, attn_mask, keep=keys)
        x = self.norm_out(last(x, cond, attn_mask, keep=keys, rows=rows))
        if self.adaln_out is not None:
            shift, scale = self.adaln_out(cond).chunk(2, dim=-1)  # (B, W) each
            if rows is not None:
                row = rows.nonzero(as_tuple=True)[0]
                shift, scale = shift[row], scale[row]
            x = modulate(x, shift, scale)
        return x if self.class_embed is None or rows is not None else x[:, 1:]

    def cached_forward(self, tokens: Tensor, t: Optional[Tensor] = None, *, start: int = 0,
                       cache: Optional[list] = None):
        """Logits with a key/value cache (Fast-dLLM's prefix and dual caches, Wu et al. 2025): (logits, cache).

        cache None: ``tokens`` (B, L) is the whole sequence; returns its logits (B, L, V) and every layer's
        keys and values, [(k, v)] with k, v (B, H, L, D). cache given: ``tokens`` (B, W) is the window at
        positions start .. start + W - 1; only its positions are computed, attending to their fresh keys and
        values and to the cached ones elsewhere (stale where the sequence changed since: the approximation),
        and the cache is returned unchanged. Bidirectional, unconditional networks only.
        """
        if self.class_embed is not None or any(b.causal for b in self.blocks):
            raise ValueError("the key/value cache is for bidirectional networks without class conditioning")
        if self.local_mixing:
            raise ValueError("the key/value cache needs a network without local mixing (a window's edge positions would "
                             "lose the neighbours it mixes in); sample without the cache")
        if cache is None and start != 0:
            raise ValueError("a call without a cache computes the whole sequence: start must be 0")
        x = self.embed(tokens)
        if self.position_embed is not None:
            x = x + self.position_embed.weight[start: start + tokens.shape[1]]
        cond = None
        if self.time_embed is not None:
            if t is None:
                raise ValueError("this network is time-conditioned: pass t")
            cond = F.silu(self.time_embed(t))
        fresh = []
        for i, block in enumerate(self.blocks):
            kv = [] if cache is None else [cache[i]]
            x = block(x, cond, None, kv, start)
            if cache is None:
                fresh.append(kv[0])
        x = self.norm_out(x)
        if self.adaln_out is not None:
            shift, scale = self.adaln_out(cond).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return self.head(x), (fresh if cache is None else cache)

    # --- block diffusion (BD3-LM): two streams in training, a key-value cache in sampling ----------------
    def _check_block_mode(self) -> None:
        if not self.block_size:
            raise ValueError("this network was built without block_size; it has no block-diffusion mode")

    def two_stream(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """Logits (B, L, V) at the x_t positions, from one pass over [x_t, x_0] (B, 2L) under
        :func:`block_diffusion_mask`: position n of block b sees x_t of block b and x_0 of blocks < b.
        Both streams carry the positions 0..L-1."""
        self._check_block_mode()
        L = x_t.shape[1]
        positions = torch.arange(L, device=x_t.device).repeat(2)
        mask = block_diffusion_mask(L, self.block_size, x_t.device)
        x = self.embed(torch.cat([x_t, x0], dim=1))  # (B, 2L, W)
        for block in self.blocks:
            x = block(x, None, mask, positions=positions)
        return self.head(self.norm_out(x[:, :L]))

    def extend_cache(self, cache: Optional[List[KV]], tokens: Tensor, start: int) -> List[KV]:
        """The cache with the clean tokens (B, n) at positions start..start+n-1 appended: each layer's keys
        and values of the x_0 stream, the tokens attending to the cache and to each other block-causally
        (start a multiple of block_size)."""
        self._check_block_mode()
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        mask = None
        if tokens.shape[1] > self.block_size:  # several blocks at once: block-causal among them, every cached key seen
            blocks = positions // self.block_size
            own_keys = blocks[None, :] <= blocks[:, None]
            mask = own_keys if cache is None else torch.cat([own_keys.new_ones((len(blocks), cache[0][0].shape[2])), own_keys], 1)
        x = self.embed(tokens)
        out: List[KV] = []
        for i, block in enumerate(self.blocks):
            x = block(x, None, mask, positions=positions, past=None if cache is None else cache[i], kv_out=out)
        return out

    def cached_logits(self, cache: Optional[List[KV]], x_t: Tensor, start: int) -> Tensor:
        """Logits (B, n, V) of one noisy block x_t (B, n) at positions start..start+n-1: it attends to
        itself and to the cached clean tokens before it, the x_t rows of :meth:`two_stream`."""
        self._check_block_mode()
        positions = torch.arange(start, start + x_t.shape[1], device=x_t.device)
        x = self.embed(x_t)
        for i, block in enumerate(self.blocks):
            x = block(x, None, None, positions=positions, past=None if cache is None else cache[i])
        return self.head(self.norm_out(x))
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
