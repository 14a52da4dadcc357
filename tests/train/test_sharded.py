"""Sharded checkpoints (what FSDP2 on several processes writes, maskdiff.sharded): one process resumes from
one exactly, the loader reads one without a process group, and a truncated or missing shard or a
state.json that does not match its shards is refused with the folder named, the previous valid
checkpoint taken instead. (FSDP2 on several processes writing and resuming them: test_distributed.py.)"""
import json
import shutil

import pytest
import torch

from helpers import assert_clean_error, micro_config, run_main
from maskdiff import MaskdiffError
from maskdiff.checkpoint import (
    MODEL_FILE,
    OPTIM_FILE,
    latest_valid_checkpoint,
    list_checkpoints,
    read_tensors,
    save_sharded_checkpoint,
    verify_checkpoint,
)
from maskdiff.distributed import Context
from maskdiff.pipeline import load
from maskdiff.runs import checkpoint_to_load
from maskdiff.train import train


def _quiet(*args):
    pass


def _tensors(checkpoint):
    """Every tensor of a checkpoint, whole, in either format."""
    state = verify_checkpoint(checkpoint)
    if state.get("format") == "sharded":
        from maskdiff.sharded import read_whole

        return read_whole(checkpoint)
    return {**read_tensors(checkpoint / MODEL_FILE), **read_tensors(checkpoint / OPTIM_FILE)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, plays):
    """A micro run to step 6 with whole checkpoints at steps 3 and 6, and a second run folder holding the same
    two checkpoints written sharded (by one process: one shard each)."""
    root = tmp_path_factory.mktemp("sharded")
    whole, sharded = root / "whole", root / "sharded"
    train(micro_config(6, plays, checkpoint_every=3, keep_checkpoints=5, ema_decay=0.9), whole, progress=False, log=_quiet)
    sharded.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(whole / name, sharded / name)
    for checkpoint in list_checkpoints(whole):
        state = verify_checkpoint(checkpoint)
        rest = {k: v for k, v in state.items() if k not in ("step", "sha256")}
        save_sharded_checkpoint(sharded, state["step"], _tensors(checkpoint), rest, Context(), keep=5)
    return whole, sharded


def test_one_process_resumes_a_sharded_checkpoint_exactly_and_loads_it(runs, tmp_path, plays):
    whole, sharded = runs
    state = verify_checkpoint(list_checkpoints(sharded)[-1])
    assert state["format"] == "sharded" and not (list_checkpoints(sharded)[-1] / MODEL_FILE).exists()
    a, b = load(whole), load(sharded)  # the loader puts the pieces together, no process group
    assert a.weights == b.weights == "ema" and a.step == b.step == 6
    for k, v in a.objective.state_dict().items():
        assert torch.equal(v, b.objective.state_dict()[k]), k
    assert run_main("export", sharded, tmp_path / "model", "--no-eval").returncode == 0  # one file from the shards
    exported = read_tensors(tmp_path / "model" / MODEL_FILE)
    assert exported.keys() and all(torch.equal(v, b.objective.network.state_dict()[k]) for k, v in exported.items())
    run = tmp_path / "resumed"
    shutil.copytree(sharded, run)
    shutil.rmtree(list_checkpoints(run)[-1])  # resume from the sharded step 3
    result = train(micro_config(6, plays, checkpoint_every=3, keep_checkpoints=5, ema_decay=0.9), run, progress=False, log=_quiet)
    assert result.resumed_from == 3
    ref, got = _tensors(list_checkpoints(whole)[-1]), _tensors(list_checkpoints(run)[-1])
    assert ref.keys() == got.keys()
    for k in ref:  # weights, EMA, optimizer moments and the RNG state: bit-identical
        assert torch.equal(ref[k], got[k]), k


def _truncate(folder):
    shard = sorted(folder.glob("shard-*"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])


def _remove(folder):
    sorted(folder.glob("shard-*"))[0].unlink()


def _other_shape(folder):
    state = json.loads((folder / "state.json").read_text())
    state["tensors"]["model.blocks.0.mlp.0.bias"]["shape"] = [7]
    (folder / "state.json").write_text(json.dumps(state))


def _half_written(folder):  # the shards of a writer killed before state.json, the last file written
    (folder / "state.json").unlink()


def _unlisted(folder):
    shard = sorted(folder.glob("shard-*"))[0]
    shutil.copy(shard, folder / "shard-00009-model-00001-of-00001.safetensors")


@pytest.mark.parametrize("breakage, message", [
    (_truncate, "is truncated or corrupted: shard-00001-model-00001-of-00001.safetensors does not match its SHA-256"),
    (_remove, "is incomplete: shard-00001-model-00001-of-00001.safetensors is missing"),
    (_other_shape, "does not match its state.json: model.blocks.0.mlp.0.bias is float32 [128]"),
    (_unlisted, "does not match its state.json: shards its state.json does not list (shard-00009"),
    (_half_written, "is incomplete: state.json is missing"),
])
def test_a_broken_sharded_checkpoint_is_refused_and_the_previous_one_taken(runs, tmp_path, breakage, message):
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    broken = list_checkpoints(run)[-1]
    breakage(broken)
    with pytest.raises(MaskdiffError, match="checkpoint .*step_00000006") as err:
        verify_checkpoint(broken)
    assert message in str(err.value)
    warnings = []
    path, state = latest_valid_checkpoint(run, warn=warnings.append)
    assert path.name == "step_00000003" and state["step"] == 3 and message in warnings[0]
    assert checkpoint_to_load(run)[0] == path
    if breakage is _truncate:  # named on the command line: one line, no traceback
        assert_clean_error(run_main("sample", run, "--checkpoint", broken, "--num", "1", "--steps", "2", "--no-progress"),
                           str(broken), "does not match its SHA-256")
