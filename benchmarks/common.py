"""Helpers shared by the benchmarks: what machine and commit a figure came from, and where it is written.

Every benchmark writes one JSON file per invocation under ``benchmarks/results/``, named
``<benchmark>_<device kind>_<UTC timestamp>.json``, holding the machine, the commit and its figures.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    from maskdiff.cli.demo import cpu_name

    return cpu_name() or "unknown"


def machine_info(device: str = "cpu") -> Dict[str, Any]:
    """CPU model, core count, torch version, torch thread count, load average and, on CUDA, the GPU's name.

    The load average says whether other work shared the CPU while the figures were taken.
    """
    info: Dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_1_5_15min": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        index = torch.device(device).index if device.startswith("cuda") else None
        index = torch.cuda.current_device() if index is None else index
        info["cuda_device"] = torch.cuda.get_device_name(index)
        info["cuda_version"] = torch.version.cuda
        info["cuda_capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
    return info


def git_commit() -> Dict[str, Any]:
    """``git rev-parse HEAD`` of the repository and whether the working tree differs from it.

    Read-only (``git rev-parse``, ``git status --porcelain``); ``None`` fields when git is unavailable.
    """
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
    }


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

