"""Several processes with torchrun and the Gloo backend on CPU: DDP and FSDP2 compute the same steps as
one process with the same global batch (FSDP2 saving sharded checkpoints, the others whole ones); a run
resumes with another number of processes and another mode; two torchrun "nodes" on loopback train."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import run_cli, run_main
from maskdiff.checkpoint import list_checkpoints, read_weights, verify_checkpoint

pytestmark = pytest.mark.slow  # torchrun and several training processes

FLAGS = ["--width", "32", "--depth", "2", "--heads", "2", "--length", "32", "--batch-size", "8", "--warmup-steps", "2",
         "--no-progress", "--checkpoint-every", "1000", "--ema-decay", "0.9", "--log-every", "1"]


def torchrun(nproc, *args):
    exe = Path(sys.executable).with_name("torchrun")  # torch installs it: a missing one fails
    assert exe.exists(), f"torchrun is not installed next to {sys.executable}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run([str(exe), "--standalone", f"--nproc_per_node={nproc}", "-m", "maskdiff.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _log(run):
    return [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]


def _weights(run):
    newest = list_checkpoints(run)[-1]
    return read_weights(newest, verify_checkpoint(newest))


def _close(a, b, atol=2e-5):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def single(tmp_path_factory, plays):
    run = tmp_path_factory.mktemp("dist") / "single"
    proc = run_cli("train", "--run-dir", run, "--steps", "4", "--threads", "1", "--corpus", plays, *FLAGS)
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, single, plays, mode):
    run = tmp_path / mode
    proc = torchrun(2, "train", "--run-dir", run, "--steps", "4", "--parallel", mode, "--corpus", plays, *FLAGS)
    assert proc.stdout.count("trained") == 1  # rank 0 reports, rank 1 stays quiet
    one, two = _log(single), _log(run)
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert b["loss_nats_per_token"] == pytest.approx(a["loss_nats_per_token"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # the global gradient
    _close(_weights(single), _weights(run))
    state = json.loads((list_checkpoints(run)[-1] / "state.json").read_text())
    assert state["processes"] == 2
    shards = sorted(p.name for p in list_checkpoints(run)[-1].glob("shard-*.safetensors"))
    assert len(shards) == (2 if mode == "fsdp" else 0)  # FSDP2: every rank wrote its pieces, none the whole
    assert (list_checkpoints(run)[-1] / "model.safetensors").exists() == (mode == "ddp")


def test_resume_with_another_process_count_and_mode(tmp_path, single, plays):
    """2 steps on 1 process (a whole checkpoint), 1 on 2 processes with FSDP2 (sharded: each process reads its
    pieces of the whole one), 1 on 2 with DDP (each reads the whole tensors from the shards)."""
    run = tmp_path / "mixed"
    assert run_main("train", "--run-dir", run, "--steps", "2", "--threads", "1", "--corpus", plays, *FLAGS).returncode == 0
    torchrun(2, "train", "--run-dir", run, "--steps", "3", "--parallel", "fsdp", "--corpus", plays, *FLAGS)
    assert verify_checkpoint(list_checkpoints(run)[-1])["format"] == "sharded"
    proc = torchrun(2, "train", "--run-dir", run, "--steps", "4", "--parallel", "ddp", "--corpus", plays, *FLAGS)
    assert "resumed from step 3" in proc.stdout
    _close(_weights(single), _weights(run))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_loopback_then_one_process(tmp_path, single, plays):
    """Two torchrun "nodes" (c10d rendezvous on 127.0.0.1, one process each) train 2 steps with FSDP2 and
    write a sharded checkpoint; sample and eval read it in one process without a process group; one process
    resumes it to step 4 and ends where the uninterrupted one-process run ends."""
    run, port = tmp_path / "nodes", _free_port()
    exe = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    nodes = [subprocess.Popen([str(exe), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank), "--rdzv_backend", "c10d",
                               "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "nodes", "-m", "maskdiff.cli", "train",
                               "--run-dir", str(run), "--steps", "2", "--parallel", "fsdp", "--corpus", str(plays), *FLAGS],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(err[-3000:] for _, err in outputs)
    newest = list_checkpoints(run)[-1]
    state = verify_checkpoint(newest)
    assert state["format"] == "sharded" and state["processes"] == 2 and len(list(newest.glob("shard-*"))) == 2
    assert run_main("sample", run, "--num", "2", "--steps", "4", "--no-progress", "--out", tmp_path / "s.txt").returncode == 0
    proc = run_main("eval", run, "--limit", "4", "--batch-size", "4", "--no-progress")
    assert proc.returncode == 0 and "BPC" in proc.stdout, proc.stderr
    proc = run_main("train", "--run-dir", run, "--steps", "4", "--threads", "1", "--corpus", plays, *FLAGS)
    assert proc.returncode == 0 and "resumed from step 2" in proc.stdout, proc.stderr
    _close(_weights(single), _weights(run))


def test_batch_that_does_not_split(tmp_path):
    exe = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([str(exe), "--standalone", "--nproc_per_node=2", "-m", "maskdiff.cli", "train", "--run-dir",
                           str(tmp_path / "r"), *FLAGS[:-6], "--batch-size", "3", "--steps", "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0
    assert "does not split over 2 processes" in proc.stderr
