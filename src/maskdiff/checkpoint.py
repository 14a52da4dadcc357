"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a directory ``checkpoints/step_XXXXXXXX/`` in one of two formats. Whole (one process,
DDP), written by one process:

* ``model.safetensors``: ``model.*`` weights and ``ema.*`` averaged weights,
* ``optimizer.safetensors``: AdamW state tensors ``state.<param index>.<name>`` and RNG states,
* ``state.json``: step, optimizer hyper-parameters, data position, and the SHA-256 of both files.

Sharded (FSDP2 on several processes), written by every process (:mod:`maskdiff.sharded`):

* ``shard-0000R-model-0000I-of-0000N.safetensors``: the same names, process R's pieces of them,
* ``state.json``: as above, with ``"format": "sharded"``, the name, shape and dtype of every tensor
  (``"tensors"``) and the SHA-256 of every shard.

Either is written into a temporary directory, every file fsync'ed, then renamed into place, so a crash
leaves either the whole checkpoint or none. Loading checks the checksums first (and for a sharded one,
that the shards are those state.json lists and hold the tensors it names): a truncated or corrupted
checkpoint is reported, never half-loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.distributed import Context, broadcast_object, spread
from maskdiff.errors import MaskdiffError
from maskdiff.sharded import check_shards, manifest, read_whole, shard_files, write_shards

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.json"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
SHARDED = "sharded"  # state.json's "format" of a sharded checkpoint (a whole one has no "format")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temporary file, fsync and rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _save_tensors(tensors: Dict[str, Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def optimizer_tensors(optimizer: torch.optim.Optimizer, convert=None) -> Tuple[Dict[str, Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters.

    convert: applied to every state tensor (the trainer gathers sharded state into whole tensors)."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            value = value if isinstance(value, Tensor) else torch.tensor(value)
            tensors[f"state.{idx}.{name}"] = convert(value) if convert is not None else value
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: Dict[str, Tensor], meta: dict) -> None:
    state: Dict[int, Dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_tensors: Dict[str, Tensor],
    optim_tensors: Dict[str, Tensor],
    state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically (whole: one process writes) and keep only the newest ``keep``."""
    tmp = _begin_checkpoint(run_dir, step)
    _save_tensors(model_tensors, tmp / MODEL_FILE)
    _save_tensors(optim_tensors, tmp / OPTIM_FILE)
    digests = {MODEL_FILE: sha256(tmp / MODEL_FILE), OPTIM_FILE: sha256(tmp / OPTIM_FILE)}
    return _commit_checkpoint(run_dir, step, tmp, state, digests, keep)


def save_sharded_checkpoint(run_dir: Path, step: int, tensors: Dict[str, Tensor], state: dict, ctx: Context,
                            keep: int = 2) -> Optional[Path]:
    """Write checkpoint ``step`` sharded, atomically, from every process (a collective): each writes its pieces of
    ``tensors`` (DTensors: its shard) into the folder rank 0 opened, the processes share the hashing of the
    shards, and rank 0 writes state.json (``state`` with the format, the tensors' manifest and the shards'
    SHA-256), renames the folder into place and keeps the newest ``keep``. Returns the folder on rank 0."""
    tmp = broadcast_object(_begin_checkpoint(run_dir, step) if ctx.main else None, ctx)
    write_shards(tmp, tensors)
    files = broadcast_object(shard_files(tmp) if ctx.main else None, ctx)
    digests = spread(files, lambda name: sha256(tmp / name), ctx)
    if not ctx.main:
        return None
    state = dict(state, format=SHARDED, tensors=manifest(tensors))
    return _commit_checkpoint(run_dir, step, tmp, state, dict(sorted(digests.items())), keep)


def _begin_checkpoint(run_dir: Path, step: int) -> Path:
    """A fresh temporary folder to write checkpoint ``step`` into; the ones a writer killed mid-write left are
    removed (one writer per run: call it on one process)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp_step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp_step_{step:08d}_{os.getpid()}"
    tmp.mkdir()
    return tmp


def _commit_checkpoint(run_dir: Path, step: int, tmp: Path, state: dict, digests: Dict[str, str], keep: int) -> Path:
    """Finish the checkpoint written into ``tmp`` (its files fsync'ed, their SHA-256 in ``digests``): write its
    state.json, rename it into place as ``step_XXXXXXXX`` and keep only the newest ``keep``."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / f"step_{step:08d}"
    state = dict(state, step=step, sha256=digests)
    atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> List[Path]:
    """Checkpoint directories of a run, oldest first (by step)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step_*") if p.is_dir())


def verify_checkpoint(path: Path) -> dict:
    """Return the checkpoint's state.json after checking that its tensor files match their SHA-256 (and for a
    sharded checkpoint, that its shards are the ones listed and hold the tensors state.json names)."""
    path = Path(path)
    if not path.is_dir():
        raise MaskdiffError(f"checkpoint {path} does not exist (a checkpoint is a directory with {STATE_FILE})")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MaskdiffError(f"checkpoint {path} is incomplete: {STATE_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MaskdiffError(f"checkpoint {path} is corrupt: {STATE_FILE} is not valid JSON") from None
    for name, digest in state.get("sha256", {}).items():
        f = path / name
        if not f.exists():
            raise MaskdiffError(f"checkpoint {path} is incomplete: {name} is missing")
        if sha256(f) != digest:
            raise MaskdiffError(f"checkpoint {path} is truncated or corrupted: {name} does not match its SHA-256")
    if is_sharded(state):
        unlisted = sorted(set(shard_files(path)) - set(state.get("sha256", {})))
        if unlisted or "tensors" not in state:
            what = f"shards its {STATE_FILE} does not list ({', '.join(unlisted[:3])})" if unlisted else f"no tensor list in {STATE_FILE}"
            raise MaskdiffError(f"checkpoint {path} does not match its {STATE_FILE}: {what}")
        check_shards(path, state["tensors"])
    return state


def is_sharded(state: dict) -> bool:
    """Whether a checkpoint's state.json is that of a sharded checkpoint (written by every process)."""
    return state.get("format") == SHARDED


def read_weights(path: Path, state: dict) -> Dict[str, Tensor]:
    """The ``model.*`` and ``ema.*`` tensors of a verified checkpoint, whole, in this process alone: a whole
    checkpoint's model file, or a sharded checkpoint's pieces put together."""
    if is_sharded(state):
        return read_whole(path, ("model", "ema"))
    return read_tensors(Path(path) / MODEL_FILE)


def read_tensors(path: Path) -> Dict[str, Tensor]:
    """Read a safetensors file; anything else (a pickle, a truncated file) is refused with a clear error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MaskdiffError(f"{path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. Check that first: the
    # length's low bytes may happen to read as a pickle or zip magic number.
    looks_safetensors = len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
    if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise MaskdiffError(f"{path} is a pickle/zip file; maskdiff only loads safetensors and never unpickles")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise MaskdiffError(f"{path} is not a readable safetensors file ({err})") from None


def network_weights(path: Path, state: dict, ema: bool = True) -> Tuple[str, Dict[str, Tensor]]:
    """(which, weights): a verified checkpoint's EMA weights where it has them and ``ema`` asks for them
    ("ema"), else its raw ones ("model"), whole or sharded, with the prefix taken off."""
    tensors = read_weights(path, state)
    which = "ema" if ema and any(k.startswith("ema.") for k in tensors) else "model"
    return which, prefixed_weights(tensors, which, path)


def prefixed_weights(tensors: Dict[str, Tensor], prefix: str, source) -> Dict[str, Tensor]:
    """The ``prefix.*`` tensors of a model file (``model`` or ``ema``) with the prefix taken off; ``source``
    names the file in the error when there are none."""
    weights = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not weights:
        raise MaskdiffError(f"{source} has no '{prefix}' weights")
    return weights


def latest_valid_checkpoint(run_dir: Path, warn=print) -> Optional[Tuple[Path, dict]]:
    """The newest checkpoint that passes :func:`verify_checkpoint`; broken newer ones are reported."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, verify_checkpoint(path)
        except MaskdiffError as err:
            warn(f"warning: {err}; trying the previous checkpoint")
    return None
