"""The denoiser interface and the SUBS parameterization (MDLM Sec. 3.2).

A denoiser is any callable ``denoise(x_t, t) -> log mu`` with

* x_t: LongTensor (B, L), ids in [0, V] where V is the mask id,
* t:   Tensor (B,), the diffusion time (ignored by a time-independent denoiser),
* log mu: Tensor (B, L, V), log-probabilities over the V real tokens,

and two attributes: ``vocab_size`` (V) and ``time_independent`` (bool). Row b of the output depends
only on row b of the input, so samplers may pass sub-batches. :class:`SUBSDenoiser` turns a network
that maps (tokens, optional time) to logits into such a callable:

* zero masking probability: the mask logit is dropped (set to -inf) before the softmax;
* carry-over unmasking: an unmasked input position outputs its own token with probability 1.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from maskdiff.errors import MaskdiffError


@runtime_checkable
class Denoiser(Protocol):
    """The one interface of a denoiser (the module docstring): what every loss and sampler takes as
    ``denoise``, and what :class:`SUBSDenoiser`, :class:`BlockDenoiser`, :class:`FunctionDenoiser` and the
    exact toys' denoisers implement. The optional capabilities below are declared here too; code asks for
    one with :func:`supports` and falls back (or fails with a clear error) without it."""

    vocab_size: int
    time_independent: bool

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:  # (B, L), (B,) -> (B, L, V)
        ...


@runtime_checkable
class MaskedLogProbs(Protocol):
    """Optional: log mu at the masked positions only, (N, V) for the N True entries of ``masked`` (B, L):
    the same values as the full call, without the output layer at unmasked positions (loss/masked.py)."""

    def masked_log_probs(self, x_t: Tensor, t: Tensor, masked: Tensor, **kwargs) -> Tensor:
        ...


@runtime_checkable
class FullLogProbs(Protocol):
    """Optional: (B, L, V + 1) log-probabilities including the mask column and without carry-over, for
    MDLM's SUBS ablation (loss/ablation.py)."""

    def full_log_probs(self, x_t: Tensor, t: Tensor) -> Tensor:
        ...


@runtime_checkable
class WindowLogProbs(Protocol):
    """Optional: Fast-dLLM's approximate key/value cache (sampling/threshold.py). ``prefill_log_probs(x_t, t)``
    returns (log mu (B, L, V), a :class:`KVCache`); ``window_log_probs(x_window, t, start, cache)`` returns
    log mu (B, W, V) of the window x_window (B, W) at positions start .. start + W - 1, computed against the
    cached keys and values of every other position."""

    def window_log_probs(self, x_window: Tensor, t: Tensor, start: int, cache) -> Tensor:
        ...


class KVCache:
    """The keys and values of every layer for a batch of sequences, as a network's ``cached_forward``
    returns them; ``rows(index)`` keeps the sequences of a sub-batch (samplers pass sub-batches)."""

    def __init__(self, layers: list):
        self.layers = layers

    def rows(self, index: Tensor) -> "KVCache":
        return KVCache([(k[index], v[index]) for k, v in self.layers])


CAPABILITIES = {
    "masked_log_probs": "a method: log mu at masked positions only (MaskedLogProbs)",
    "full_log_probs": "a method: log-probabilities with the mask column, no carry-over (FullLogProbs)",
    "window_log_probs": "methods: prefill_log_probs and window_log_probs, an approximate key/value cache (WindowLogProbs)",
    "accepts_valid": "a flag: the call and masked_log_probs take valid= (B, L), and the network does not attend to padding",
}


def supports(denoise, capability: str) -> bool:
    """Whether ``denoise`` has one of the optional :data:`CAPABILITIES`."""
    if capability not in CAPABILITIES:
        raise MaskdiffError(f"unknown denoiser capability {capability!r}; choose one of: {', '.join(CAPABILITIES)}")
    value = getattr(denoise, capability, None)
    return callable(value) if capability.endswith("log_probs") else bool(value)


def check_tokens(x: Tensor, vocab_size: int, *, allow_mask: bool = True, max_length: Optional[int] = None) -> None:
    """Raise a clear error for ids outside [0, V] (or [0, V) without the mask) or a too long sequence."""
    if x.dtype not in (torch.int64, torch.int32):
        raise MaskdiffError(f"token ids must be an integer tensor, got dtype {x.dtype}")
    if x.dim() != 2:
        raise MaskdiffError(f"token ids must have shape (batch, length), got {tuple(x.shape)}")
    if max_length is not None and x.shape[1] > max_length:
        raise MaskdiffError(f"sequence length {x.shape[1]} exceeds the model's maximum length {max_length}")
    if x.numel():
        hi = vocab_size if allow_mask else vocab_size - 1
        lo_v, hi_v = int(x.min()), int(x.max())
        if lo_v < 0 or hi_v > hi:
            bad = lo_v if lo_v < 0 else hi_v
            raise MaskdiffError(
                f"token id {bad} is out of range: valid ids are 0..{vocab_size - 1}"
                + (f" and the mask id {vocab_size}" if allow_mask else "")
            )


def carry_over(log_mu: Tensor, x_t: Tensor, mask_id: int) -> Tensor:
    """Replace the rows of unmasked positions by the log one-hot of the input token (SUBS carry-over)."""
    unmasked = (x_t != mask_id)[..., None]
    one_hot = torch.full_like(log_mu, -torch.inf).scatter_(-1, x_t.clamp(max=log_mu.shape[-1] - 1)[..., None], 0.0)
    return torch.where(unmasked, one_hot, log_mu)


class SUBSDenoiser(nn.Module):
    """Wrap ``network(tokens, t_or_None) -> logits`` into the denoiser interface.

    network: returns logits of shape (B, L, V) over the real tokens, or (B, L, V + 1) with a mask
        column that SUBS drops (zero masking probability).
    vocab_size: V, the number of real tokens; the mask id is V.
    time_conditioned: pass t to the network; otherwise it receives None and the denoiser declares
        itself time-independent, which the caching sampler needs (MDLM Sec. 3.2; maskdiff's default).
    max_length: the longest sequence the network accepts.
    check_inputs: raise a clear error for ids outside [0, V] or sequences longer than max_length
        (a min/max over the batch; the trainer, whose data is checked once, turns it off).
    carry_over, zero_mask: the two SUBS choices, each switchable for MDLM's ablation. With zero_mask
        off the network must output the mask column and :meth:`full_log_probs` keeps its mass; the
        denoiser call itself always returns a distribution over the V real tokens (renormalised), which
        is what samplers use.
    """

    def __init__(
        self,
        network: nn.Module,
        vocab_size: int,
        *,
        time_conditioned: bool = False,
        max_length: Optional[int] = None,
        check_inputs: bool = True,
        carry_over: bool = True,
        zero_mask: bool = True,
    ):
        super().__init__()
        self.carry_over = carry_over
        self.zero_mask = zero_mask
        self.check_inputs = check_inputs
        self.network = network
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.time_conditioned = time_conditioned
        self.max_length = max_length

    @property
    def time_independent(self) -> bool:
        return not self.time_conditioned

    accepts_valid = True
    """forward and masked_log_probs take ``valid`` (B, L): the network does not attend to padding."""

    def _logits(self, x_t: Tensor, t: Tensor, cond: Optional[Tensor] = None, *, valid: Optional[Tensor] = None,
                positions: Optional[Tensor] = None) -> Tensor:
        if self.check_inputs:
            check_tokens(x_t, self.vocab_size, allow_mask=True, max_length=self.max_length)
        extra = {}
        if valid is not None:
            extra["valid"] = valid
        if positions is not None:
            extra["positions"] = positions
        if cond is not None:
            extra["labels"] = cond
        return self.network(x_t, t if self.time_conditioned else None, **extra).float()

    def forward(self, x_t: Tensor, t: Tensor, cond: Optional[Tensor] = None, *, valid: Optional[Tensor] = None) -> Tensor:
        """cond: optional (B,) class labels for a class-conditional network (guidance.py); valid: (B, L)
        real positions (the network does not attend to padding)."""
        logits = self._logits(x_t, t, cond, valid=valid)[..., : self.vocab_size]  # zero masking probability: drop the mask logit
        log_mu = torch.log_softmax(logits, dim=-1)  # (B, L, V)
        return carry_over(log_mu, x_t, self.mask_id) if self.carry_over else log_mu

    def masked_log_probs(self, x_t: Tensor, t: Tensor, masked: Tensor, *, valid: Optional[Tensor] = None,
                         cond: Optional[Tensor] = None) -> Tensor:
        """log mu at the masked positions only: (N, V) for N = masked.sum(), in row-major order.

        The same values as ``forward(x_t, t)[masked]`` (carry-over concerns unmasked positions only),
        but the network's output layer runs at the N positions instead of all B * L, which is most of
        the cost with GPT-2's 50,257 tokens. ``masked`` must be True only where x_t is the mask: all of
        those positions (``x_t == mask_id``, the losses) or some of them (the first-hitting sampler asks
        for the one position per row that it unmasks next).
        """
        return torch.log_softmax(self.masked_logits(x_t, t, masked, valid=valid, cond=cond), dim=-1)

    def masked_logits(self, x_t: Tensor, t: Tensor, masked: Tensor, *, valid: Optional[Tensor] = None,
                      cond: Optional[Tensor] = None) -> Tensor:
        """The network's raw logits over the V real tokens at the masked positions, (N, V), unnormalised:
        the log scores of the score-entropy objective (loss/score_entropy.py)."""
        return self._logits(x_t, t, cond, valid=valid, positions=masked)[..., : self.vocab_size]  # (N, V)

    def prefill_log_probs(self, x_t: Tensor, t: Tensor):
        """(log mu (B, L, V), :class:`KVCache`): the plain call, keeping every layer's keys and values."""
        logits, layers = self._cached(x_t, t, 0, None)
        log_mu = torch.log_softmax(logits, dim=-1)
        return (carry_over(log_mu, x_t, self.mask_id) if self.carry_over else log_mu), KVCache(layers)

    def window_log_probs(self, x_window: Tensor, t: Tensor, start: int, cache: "KVCache") -> Tensor:
        """log mu (B, W, V) of the window x_window (B, W) at positions start .. start + W - 1, attending to
        the cached keys and values elsewhere (Fast-dLLM's approximation: they are stale where the rest of
        the sequence changed since the cache was filled)."""
        logits, _ = self._cached(x_window, t, start, cache.layers)
        log_mu = torch.log_softmax(logits, dim=-1)
        return carry_over(log_mu, x_window, self.mask_id) if self.carry_over else log_mu

    def _cached(self, x: Tensor, t: Tensor, start: int, layers):
        if not hasattr(self.network, "cached_forward"):
            raise MaskdiffError(f"the network {type(self.network).__name__} has no key/value cache (cached_forward)")
        if getattr(self.network, "local_mixing", 0):
            raise MaskdiffError("the key/value cache needs a network without local mixing (a window's edge positions would "
                                "lose the neighbours it mixes in): sample without the cache (--kv-cache none)")
        if self.check_inputs:
            check_tokens(x, self.vocab_size, allow_mask=True)
            if self.max_length is not None and start + x.shape[1] > self.max_length:
                raise MaskdiffError(f"positions up to {start + x.shape[1]} exceed the model's maximum length {self.max_length}")
        if not self.zero_mask:
            raise MaskdiffError("the key/value cache serves the SUBS denoiser with zero masking probability only")
        logits, layers = self.network.cached_forward(x, t if self.time_conditioned else None, start=start, cache=layers)
        return logits.float()[..., : self.vocab_size], layers

    def full_log_probs(self, x_t: Tensor, t: Tensor, *, valid: Optional[Tensor] = None) -> Tensor:
        """log x_theta over the V + 1 values, mask last: (B, L, V + 1). The mask column is -inf with
        zero_mask on; unmasked positions are one-hot with carry_over on (MDLM's ablation loss).
        valid: (B, L) real positions (the network does not attend to padding)."""
        logits = self._logits(x_t, t, valid=valid)
        if self.zero_mask or logits.shape[-1] == self.vocab_size:
            if not self.zero_mask:
                raise MaskdiffError("zero_mask off needs a network that outputs the mask logit (V + 1 columns)")
            logits = torch.cat([logits[..., : self.vocab_size], torch.full_like(logits[..., :1], -torch.inf)], -1)
        log_x = torch.log_softmax(logits, dim=-1)
        if self.carry_over:
            one_hot = torch.full_like(log_x, -torch.inf).scatter_(-1, x_t[..., None], 0.0)
            log_x = torch.where((x_t != self.mask_id)[..., None], one_hot, log_x)
        return log_x


class CausalLM(nn.Module):
    """Wrap a causal ``network(tokens, None) -> logits`` into next-token log-probabilities over the V real
    tokens, for the autoregressive baseline. The mask id V serves as the beginning-of-sequence token."""

    time_independent = True
    """No diffusion time: the next-token model never reads t (the protocol's attribute)."""

    def __init__(self, network: nn.Module, vocab_size: int, *, max_length: Optional[int] = None, check_inputs: bool = True):
        super().__init__()
        self.network = network
        self.vocab_size = vocab_size
        self.bos_id = vocab_size
        self.max_length = max_length
        self.check_inputs = check_inputs

    def forward(self, tokens: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        if self.check_inputs:
            check_tokens(tokens, self.vocab_size, allow_mask=True, max_length=self.max_length)
        logits = self.network(tokens, None)[..., : self.vocab_size].float()
        return torch.log_softmax(logits, dim=-1)


class BlockDenoiser(nn.Module):
    """Block diffusion's denoiser (BD3-LM, Arriola et al. 2025; docs/math.md#block): SUBS over a network
    with a two-stream mode (``two_stream``, ``extend_cache``, ``cached_logits``, as
    :class:`~maskdiff.networks.transformer.DiT` with ``block_size``).

    The sequence is cut into blocks of ``block_size`` L' tokens; position n of block b is denoised from
    the noisy tokens of block b and the clean tokens of the blocks before it, so

    * ``denoise(x_t, x0) -> log mu`` (B, L, V): every block at once (training, evaluation), the output at
      block b depending only on x_t of block b and x0 of blocks < b;
    * ``extend(cache, clean, start)``, ``block_log_probs(x_block, cache, start)`` and ``cache_rows(cache,
      rows)``: the same outputs one block at a time from a cache of the finished blocks (sampling).
      ``start`` is the position of the block's first token, the number of tokens the cache holds.

    Zero masking probability and carry-over as :class:`SUBSDenoiser`. Not time-conditioned: t is not an
    argument (each block has its own t in training, and the network ignores it).
    """

    time_independent = True

    def __init__(self, network: nn.Module, vocab_size: int, block_size: int, *, max_length: Optional[int] = None,
                 check_inputs: bool = True):
        super().__init__()
        if block_size < 1:
            raise MaskdiffError(f"block_size must be at least 1, got {block_size}")
        self.network = network
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.block_size = block_size
        self.max_length = max_length
        self.check_inputs = check_inputs

    def _log_mu(self, logits: Tensor, x_t: Tensor) -> Tensor:
        log_mu = torch.log_softmax(logits[..., : self.vocab_size].float(), dim=-1)
        return carry_over(log_mu, x_t, self.mask_id)

    def forward(self, x_t: Tensor, x0: Tensor) -> Tensor:
        if self.check_inputs:
            check_tokens(x_t, self.vocab_size, allow_mask=True, max_length=self.max_length)
            check_tokens(x0, self.vocab_size, allow_mask=False, max_length=self.max_length)
            if x0.shape != x_t.shape:
                raise MaskdiffError(f"x_t and x0 must have the same shape, got {tuple(x_t.shape)} and {tuple(x0.shape)}")
        return self._log_mu(self.network.two_stream(x_t, x0), x_t)

    def extend(self, cache, clean: Tensor, start: int):
        """The cache with the clean tokens (B, n) at positions start.. appended (one network call)."""
        return self.network.extend_cache(cache, clean, start)

    def block_log_probs(self, x_block: Tensor, cache, start: int) -> Tensor:
        """log mu (B, n, V) of a noisy block at positions start..start+n-1 given the cached blocks before it."""
        if self.max_length is not None and start + x_block.shape[1] > self.max_length:
            raise MaskdiffError(f"positions up to {start + x_block.shape[1]} exceed the model's maximum length {self.max_length}")
        return self._log_mu(self.network.cached_logits(cache, x_block, start), x_block)

    @staticmethod
    def cache_rows(cache, rows: Tensor):
        """The cache of the given batch rows."""
        return None if cache is None else [(k[rows], v[rows]) for k, v in cache]


class FunctionDenoiser:
    """A plain function ``fn(x_t, t) -> log mu`` with the two attributes the samplers read."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor], vocab_size: int, time_independent: bool):
        self.fn = fn
        self.vocab_size = vocab_size
        self.mask_id = vocab_size
        self.time_independent = time_independent

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.fn(x_t, t)


class BoundCondition:
    """A conditional denoiser with its conditioning fixed: ``denoise(x_t, t, cond=cond)`` as a plain
    ``(x_t, t)`` denoiser, for the losses. ``cond`` (B,) goes with a batch of B rows."""

    def __init__(self, denoise, cond: Tensor):
        self.denoise = denoise
        self.cond = cond
        self.vocab_size = denoise.vocab_size
        self.mask_id = denoise.vocab_size
        self.time_independent = denoise.time_independent
        self.accepts_valid = supports(denoise, "accepts_valid")

    def __call__(self, x_t: Tensor, t: Tensor, **kwargs) -> Tensor:
        return self.denoise(x_t, t, cond=self.cond, **kwargs)

    def masked_log_probs(self, x_t: Tensor, t: Tensor, masked: Tensor, **kwargs) -> Tensor:
        return self.denoise.masked_log_probs(x_t, t, masked, cond=self.cond, **kwargs)


def require_time_independent(denoise, who: str) -> None:
    if not denoise.time_independent:
        raise MaskdiffError(
            f"{who} reuses the network output across time steps and needs a time-independent denoiser; "
            "this one is time-conditioned (train with time conditioning off, or use the ancestral sampler)"
        )
