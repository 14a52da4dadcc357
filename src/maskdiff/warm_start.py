"""The weights a new run starts from, before its first step: a trained run's (model.init_from: the EMA
weights of its newest valid checkpoint, for fine-tuning), else those model.pretrained names, else the
fresh initialisation. A resumed run takes its own checkpoint instead (train_state.py ``load_start``), so
its parent is neither checked nor read then: it may have moved since."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from maskdiff.checkpoint import latest_valid_checkpoint, list_checkpoints, network_weights
from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.runs import read_run_config

# what must agree between a run and the run it is initialised from for the weights to fit and mean the same
SAME = ("model.width", "model.depth", "model.heads", "model.mlp_ratio", "model.cond_dim", "model.time_conditioned",
        "model.num_classes", "model.local_mixing", "model.absolute_positions", "model.backbone", "model.hf_config", "data.length", "data.tokenizer",
        "data.form", "data.modality", "diffusion.objective", "diffusion.block_size", "diffusion.zero_mask")


def check_init_from(config: RunConfig, run_dir: Optional[Path] = None) -> None:
    """Refuse, before anything is written, a model.init_from that is not a trained run whose network and
    tokenizer are this run's, naming the first fields that differ. run_dir: the run being started; one that
    already has checkpoints resumes from its own weights, and its parent is not looked at."""
    source = config.model.init_from
    if not source or (run_dir is not None and list_checkpoints(Path(run_dir))):
        return
    if config.model.pretrained and config.model.backbone != "hf":
        raise MaskdiffError("model.init_from and model.pretrained both name starting weights; keep one")
    if not Path(source).is_dir():
        raise MaskdiffError(f"--init-from {source}: there is no run directory there (moved or deleted?); name the trained run to start from")
    theirs = read_run_config(source)
    mine_d, theirs_d = config.to_dict(), theirs.to_dict()
    differ = [f"{name}: {_field(theirs_d, name)!r} there, {_field(mine_d, name)!r} here" for name in SAME
              if _field(theirs_d, name) != _field(mine_d, name)]
    if differ:
        raise MaskdiffError(f"--init-from {source}: that run's network or tokenizer differs ({'; '.join(differ[:3])}); "
                            "start from its config (maskdiff train --init-from RUN without --preset or --config)")
    if latest_valid_checkpoint(Path(source), warn=lambda *_: None) is None:
        raise MaskdiffError(f"--init-from {source}: that run has no valid checkpoint; train it first")


def _field(d: dict, dotted: str):
    section, name = dotted.split(".")
    return d[section][name]


def initialise(objective, config: RunConfig, log=None) -> None:
    """Load the starting weights of a fresh run into ``objective``: model.init_from's EMA (raw weights for a
    run without EMA), else model.pretrained's (:meth:`Objective.init_from_pretrained`), else nothing."""
    source = config.model.init_from
    if source:
        found = latest_valid_checkpoint(Path(source), warn=log or (lambda *_: None))
        if found is None:  # a run whose own checkpoints all failed to verify starts afresh, and its parent has gone
            raise MaskdiffError(f"--init-from {source}: that run has no valid checkpoint to start from (moved or deleted?)")
        path, state = found
        prefix, weights = network_weights(path, state)  # whole, or a sharded (FSDP2) checkpoint's pieces put together
        objective.load_weights(weights, path)
        if log is not None:
            log(f"network initialised from the {prefix} weights of {path}")
    elif config.model.pretrained:
        objective.init_from_pretrained(log=log)
