"""How a loaded model's network runs: its arithmetic and whether it is compiled (``--precision`` and
``--compile`` of ``maskdiff sample`` and ``maskdiff serve``; :meth:`maskdiff.pipeline.Pipeline.set_runtime`).

* precision ``fp32`` (the default; the names are training's --precision): the network runs as it was built; nothing is wrapped.
* ``bf16``: every call of the network runs under ``torch.autocast(dtype=torch.bfloat16)``: its matrix
  products in bfloat16, its normalisations and softmaxes in float32. Only the network: the denoiser turns
  its logits to float32 before the log-softmax (denoiser.py), so the sampler's probabilities and its
  draws stay float32. Fast on a GPU with bfloat16 units; on the CPU it runs, usually slower than float32.
* compile: torch.compile of the network's forward, as training compiles it (train.compile): each
  transformer block in place, parameter names unchanged, so checkpoints and exports read the same; a
  network without blocks (a Hugging Face backbone) has its forward compiled whole. Compilation happens
  at the first call of each new shape; on the CPU it needs a working C++ compiler, and a failure is a
  MaskdiffError that names --compile.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from maskdiff.errors import MaskdiffError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
"""The arithmetic of the network call: name -> the autocast dtype (None: no autocast)."""

NETWORK_CALLS = ("forward", "cached_forward", "two_stream", "extend_cache", "cached_logits")
"""The network methods the denoisers call (denoiser.py); each one the network has runs under the runtime."""

_APPLIED = "_maskdiff_runtime"  # the runtime a network was given, on the network instance


@dataclass(frozen=True)
class NetworkRuntime:
    """The arithmetic of the network call and whether it is compiled."""

    precision: str = "fp32"
    """'fp32' or 'bf16' (autocast of the network call only; probabilities and draws stay float32)."""
    compile: bool = False
    """torch.compile the network's forward (its transformer blocks in place)."""

    @property
    def is_default(self) -> bool:
        return self.precision == "fp32" and not self.compile

    def check(self, device: torch.device) -> None:
        """Refuse an unknown precision, or bfloat16 on a GPU without it."""
        if self.precision not in PRECISIONS:
            raise MaskdiffError(f"unknown precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}")
        if self.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise MaskdiffError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16 arithmetic; use --precision fp32")


def apply_runtime(network: nn.Module, runtime: NetworkRuntime, device: torch.device) -> None:
    """Give ``network`` (on ``device``) this runtime, in place and once: its calls (:data:`NETWORK_CALLS`)
    are replaced on the instance by ones that run under the precision and, with compile, turn a failed
    compilation into a MaskdiffError. The default runtime changes nothing."""
    runtime.check(device)
    given: Optional[NetworkRuntime] = getattr(network, _APPLIED, None)
    if given is not None and given != runtime:
        raise MaskdiffError(f"this model already runs with precision {given.precision} and compile {given.compile}; "
                            "load it again to run it otherwise")
    if given is not None or runtime.is_default:
        return
    blocks = list(getattr(network, "blocks", None) or [])
    if runtime.compile:
        for block in blocks:
            block.compile()
    for name in NETWORK_CALLS:
        method = getattr(network, name, None)
        if method is None:
            continue
        if runtime.compile and not blocks and name == "forward":
            method = torch.compile(method)
        setattr(network, name, _run_as(method, PRECISIONS[runtime.precision], device.type, runtime.compile))
    setattr(network, _APPLIED, runtime)


def _run_as(method: Callable, dtype: Optional[torch.dtype], device_type: str, compiled: bool) -> Callable:
    """``method`` under autocast to ``dtype`` (None: as it is); a compilation error becomes a MaskdiffError."""

    def call(*args, **kwargs):
        try:
            with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
                return method(*args, **kwargs)
        except Exception as err:
            if compiled and _is_compile_error(err):
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise MaskdiffError(f"--compile: torch.compile could not compile the network ({first}); on the CPU it needs a "
                                    "working C++ compiler (g++ or clang); leave out --compile to run it uncompiled") from None
            raise

    return call


def _is_compile_error(err: Exception) -> bool:
    from torch._dynamo.exc import TorchDynamoException  # imported once compile is on: dynamo is loaded then

    return isinstance(err, TorchDynamoException)
