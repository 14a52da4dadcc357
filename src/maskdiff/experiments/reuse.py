"""A run trained to a step of its schedule, or a run folder made elsewhere reused in its place only when it
was trained the same way: its configuration (the schedule's length included, which a resume may change),
the learning rate of every logged step (which tells a schedule changed midway) and its step."""
from __future__ import annotations

from pathlib import Path

from maskdiff.errors import MaskdiffError


def check_reusable(cfg, run_dir: Path, stop: int) -> int:
    """The step of the newest checkpoint in ``run_dir`` (0: none), after checking that the run there is
    ``cfg`` trained as ``cfg`` says up to at most ``stop``; a MaskdiffError naming what differs otherwise."""
    from maskdiff.checkpoint import latest_valid_checkpoint
    from maskdiff.config import RESUMABLE, differences
    from maskdiff.runs import read_log, read_run_config
    from maskdiff.step import learning_rate

    found = latest_valid_checkpoint(run_dir) if (run_dir / "config.json").exists() else None
    if found is None:
        return 0
    diff = differences(read_run_config(run_dir), cfg, ignore=tuple(k for k in RESUMABLE if k != "train.steps"))
    if diff:
        raise MaskdiffError(f"{run_dir} holds a run with another configuration ({', '.join(list(diff)[:4])}); "
                            f"move it away or use another --out")
    for rec in read_log(run_dir):  # step s was taken at the rate of step index s - 1
        if "lr" in rec and abs(rec["lr"] - learning_rate(rec["step"] - 1, cfg.train)) > 1e-9 * max(1.0, rec["lr"]):
            raise MaskdiffError(f"{run_dir} was trained on another learning-rate schedule (step {rec['step']}: lr {rec['lr']:.6g}, "
                                f"this one's {learning_rate(rec['step'] - 1, cfg.train):.6g}); move it away or use another --out")
    step = int(found[1]["step"])
    if step > stop:
        raise MaskdiffError(f"{run_dir} was trained {step} steps, past this scale's {stop}; use another --out")
    return step


def train_to(cfg, run_dir: Path, stop: int, device: str) -> None:
    """Train ``cfg`` into ``run_dir`` up to step ``stop`` of its schedule (``cfg.train.steps`` long): a run
    there that ``check_reusable`` accepts is resumed, or used as it is once at ``stop``."""
    from maskdiff.train import train

    if check_reusable(cfg, run_dir, stop) == stop:
        return
    cfg.train.device = device
    result = train(cfg, run_dir, progress=False, log=lambda *a: None, stop_after=stop if stop < cfg.train.steps else None)
    if result.interrupted and result.step < stop:
        raise KeyboardInterrupt


def logged_seconds(run_dir: Path) -> float:
    """Training seconds in ``run_dir``'s log over all its invocations (each restarts elapsed_s at 0)."""
    from maskdiff.runs import read_log

    total, last = 0.0, 0.0
    for rec in read_log(run_dir):
        t = rec.get("elapsed_s", 0.0)
        total, last = (total + last, t) if t < last else (total, t)
    return total + last
