"""Sharded checkpoints: every process writes the pieces of the weights, the EMA and the optimizer state that
it holds, through ``torch.distributed.checkpoint`` (DCP), with no full gather on any process.

The files are DCP's Hugging Face layout, ``shard-0000R-model-0000I-of-0000N.safetensors``: process R
(counted from 1) writes its pieces of the I-th of N groups of tensors (about ``FILE_BYTES`` per process
and file), each piece with its offset in the whole tensor in the file's header. No pickle anywhere (DCP's
default layout pickles its metadata). The tensor names are those of a whole checkpoint
(:mod:`maskdiff.checkpoint`): ``model.*``, ``ema.*``, ``state.<i>.<name>`` and ``rng.torch``. What a step
folder holds besides the shards, and how it is made atomic and verified, is :mod:`maskdiff.checkpoint`'s;
this module reads and writes the shards and checks that they agree with the :func:`manifest` kept in
``state.json``.

Reading reshards: the targets of :func:`read_into` may be split over any number of processes (FSDP2's
DTensors) or whole (DDP, one process), and :func:`read_whole` returns whole tensors in one process
without a process group (evaluation, sampling, export).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import torch
from torch import Tensor

from maskdiff.errors import MaskdiffError

SHARD_SUFFIX = ".safetensors"
FILE_BYTES = 128 << 20
"""About how much each process writes per file: a file is serialized in memory before it is written (twice its
size at the peak), so a process's checkpoint costs it about this much memory beyond its state, whatever the
model's size."""


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def shard_files(folder: Path) -> List[str]:
    """The names of the shard files in ``folder``, sorted."""
    return sorted(p.name for p in Path(folder).glob(f"*{SHARD_SUFFIX}"))


def manifest(tensors: Dict[str, Tensor]) -> Dict[str, dict]:
    """Name -> the whole tensor's shape and dtype (a DTensor's global shape), for ``state.json``."""
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")} for k, v in sorted(tensors.items())}


def require_support() -> None:
    """A clear error where this PyTorch cannot write sharded checkpoints (training calls it before the first step)."""
    import inspect

    try:
        from torch.distributed.checkpoint import HuggingFaceStorageWriter

        ok = "save_distributed" in inspect.signature(HuggingFaceStorageWriter).parameters
    except ImportError:
        ok = False
    if not ok:
        raise MaskdiffError(f"sharded checkpoints (FSDP2 on several processes) need torch.distributed.checkpoint's "
                            f"HuggingFaceStorageWriter(save_distributed=True), which PyTorch {torch.__version__} lacks; "
                            "install a newer PyTorch (tested with 2.13) or train with --parallel ddp")


def write_shards(folder: Path, tensors: Dict[str, Tensor]) -> None:
    """Write this process's pieces of ``tensors`` (DTensors: the local shard; plain tensors: one process
    writes each, DCP picks which) into ``folder``. A collective when a process group is up: every
    process calls it with the same names."""
    require_support()
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter

    world = dist.get_world_size() if _distributed() else 1
    writer = HuggingFaceStorageWriter(str(folder), fqn_to_index_mapping=_files(tensors, world), save_distributed=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(dict(tensors), storage_writer=writer, no_dist=not _distributed())


def _files(tensors: Dict[str, Tensor], world: int) -> Dict[str, int]:
    """Name -> the file (from 1) its pieces go to: consecutive names, about ``FILE_BYTES`` per process and file
    (a DTensor's numel is the whole tensor's, spread over ``world`` processes)."""
    out: Dict[str, int] = {}
    index, used = 1, 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        if used and used + size > FILE_BYTES * world:
            index, used = index + 1, 0
        out[name] = index
        used += size
    return out


def _metadata(folder: Path):
    """DCP's view of the shards: for every tensor, its whole size and the pieces the files hold."""
    from safetensors import SafetensorError
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    try:
        return HuggingFaceStorageReader(str(folder)).read_metadata()
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise MaskdiffError(f"checkpoint {folder} has a shard that cannot be read ({err})") from None


def check_shards(folder: Path, expected: Dict[str, dict]) -> None:
    """Check that the shards in ``folder`` hold exactly the tensors of ``expected`` (a :func:`manifest`), each
    whole: the same names, shapes and dtypes, and pieces that cover every element once."""
    folder = Path(folder)
    held = _metadata(folder).state_dict_metadata
    if set(held) != set(expected):
        extra, missing = sorted(set(held) - set(expected)), sorted(set(expected) - set(held))
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise MaskdiffError(f"checkpoint {folder} does not match its state.json: its shards hold other tensors ({detail})")
    for name, want in expected.items():
        md = held[name]
        dtype = str(md.properties.dtype).replace("torch.", "")
        covered = sum(math.prod(c.sizes) for c in md.chunks)
        if list(md.size) != want["shape"] or dtype != want["dtype"] or covered != math.prod(want["shape"]):
            raise MaskdiffError(f"checkpoint {folder} does not match its state.json: {name} is {dtype} {list(md.size)} in "
                                f"{covered} of {math.prod(want['shape'])} elements, not {want['dtype']} {want['shape']}")


def check_fits(folder: Path, expected: Dict[str, dict], targets: Dict[str, Tensor], prefixes: Iterable[str]) -> None:
    """A clear error when the tensors to read (``targets``) are not those the checkpoint holds under
    ``prefixes`` (another model, or a checkpoint without an EMA), by name and shape."""
    for prefix in prefixes:
        saved = {k for k in expected if k.startswith(prefix + ".")}
        wanted = {k for k in targets if k.startswith(prefix + ".")}
        wrong = sorted(k for k in saved & wanted if list(targets[k].shape) != expected[k]["shape"])
        if saved != wanted or wrong:
            missing, extra = sorted(wanted - saved), sorted(saved - wanted)
            detail = (missing and f"missing {missing[:3]}") or (extra and f"unexpected {extra[:3]}") or f"shape of {wrong[:3]}"
            raise MaskdiffError(f"checkpoint {folder} does not fit this run ({detail})")


def read_into(folder: Path, targets: Dict[str, Tensor]) -> None:
    """Fill ``targets`` in place from the shards: a DTensor receives its own piece, a plain tensor the whole
    tensor, whatever the number of processes that wrote them. A collective when a process group is up."""
    _load(folder, targets, alone=not _distributed())


def _load(folder: Path, targets: Dict[str, Tensor], alone: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(targets, storage_reader=HuggingFaceStorageReader(str(folder)), no_dist=alone)


def read_whole(folder: Path, prefixes: Optional[Iterable[str]] = None) -> Dict[str, Tensor]:
    """Whole tensors, in this process alone (no process group needed), of every name under ``prefixes``
    (``("model", "ema")``), or of every name when None."""
    held = _metadata(Path(folder)).state_dict_metadata
    names = [k for k in held if prefixes is None or any(k.startswith(p + ".") for p in prefixes)]
    targets = {k: torch.empty(held[k].size, dtype=held[k].properties.dtype) for k in sorted(names)}
    _load(Path(folder), targets, alone=True)
    return targets
