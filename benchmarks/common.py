"""Helpers shared by the benchmarks: what machine and commit a figure came from (recorded as every maskdiff
result records it, ``maskdiff.experiments.provenance``), and where it is written.

Every benchmark writes one JSON file per invocation under ``benchmarks/results/``, named
``<benchmark>_<device kind>_<UTC timestamp>.json``, holding the machine, the commit and its figures.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from maskdiff.experiments.provenance import git_commit as _git_commit
from maskdiff.experiments.provenance import machine_info  # noqa: F401 (for the benchmarks)

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def git_commit() -> Dict[str, Any]:
    """The commit of this repository and whether the working tree differs from it
    (``maskdiff.experiments.provenance.git_commit``)."""
    return _git_commit(REPO_ROOT)


def device_kind(device: str) -> str:
    """A file-name-safe name of the device: ``cpu`` or e.g. ``cuda-nvidia-h100-80gb-hbm3``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device).index or 0)
        return "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")


def write_result(benchmark: str, device: str, payload: Dict[str, Any], out: Optional[str] = None) -> Path:
    """Write ``payload`` as JSON to ``out`` or to results/<benchmark>_<device kind>_<UTC time>.json."""
    if out is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = RESULTS_DIR / f"{benchmark}_{device_kind(device)}_{stamp}.json"
    else:
        path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return path


def write_run_result(benchmark: str, pipe, args, rows) -> Path:
    """Save the figures of a benchmark of one trained run (``pipe``, from ``maskdiff.load``): the machine,
    the commit, the run (folder, step, config), the script's arguments and the result rows. ``args``
    must have ``run_dir`` and ``out``. Prints and returns the path."""
    payload = {
        "benchmark": benchmark,
        "machine": machine_info("cpu"),
        "commit": git_commit(),
        "run": {"dir": str(args.run_dir), "step": pipe.step, "config": pipe.config.to_dict()},
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "run_dir")},
        "results": rows,
    }
    path = write_result(benchmark, "cpu", payload, args.out)
    print(f"\nsaved {path}")
    return path

