"""Where a figure came from: the machine, the software and the commit, written the same way by the
experiments, the benchmarks and the demo.

Everything here is read-only: ``/proc/cpuinfo``, ``platform``, ``torch`` and ``git rev-parse`` /
``git status --porcelain``. A field that cannot be read is ``None`` (or ``"unknown"`` for the CPU name).
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

_HERE = Path(__file__).resolve().parent  # inside the repository when maskdiff is installed from a checkout


def cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "cpu") -> Dict[str, Any]:
    """CPU model, core count, torch version, torch thread count, load average and, on CUDA, the GPU's name.

    The load average says whether other work shared the CPU while the figures were taken.
    """
    import torch

    info: Dict[str, Any] = {
        "cpu_model": cpu_name(),
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


def git_commit(cwd: Optional[Path] = None) -> Dict[str, Any]:
    """``git rev-parse HEAD`` of the repository holding ``cwd`` (default: this package's source) and whether
    its working tree differs from it; ``None`` fields when git or the repository is unavailable."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", *args], cwd=cwd or _HERE, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def provenance(device: str = "cpu", config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The one record of where a result came from: ``machine`` (``machine_info``), ``commit``
    (``git_commit``) and, when given, the ``config`` that produced it."""
    out: Dict[str, Any] = {"machine": machine_info(device), "commit": git_commit()}
    if config is not None:
        out["config"] = config
    return out


def short_commit(record: Dict[str, Any]) -> str:
    """The first ten hex digits of a provenance record's commit, ``unknown`` without one."""
    sha = (record.get("commit") or {}).get("commit")
    return sha[:10] if sha else "unknown"
