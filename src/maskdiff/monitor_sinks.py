"""Where the records of a training run go (rank 0 only): ``log.jsonl`` always; TensorBoard event files in
``RUN/tb`` when the ``tensorboard`` package is installed and ``train.tensorboard`` is on; a Weights & Biases
run when ``train.wandb`` names a project (``WANDB_MODE=offline`` writes it locally, for ``wandb sync``).
Samples drawn during training go to ``RUN/samples/`` and to TensorBoard's text tab.

Every number of a record is a scalar of the same name at the record's step (``loss_bits_per_token``,
``lr``, ``grad_norm``, ``tokens_per_s``, ``mfu``, ``val_nelbo_bits_per_token``, ``val_low``, ...).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Dict, List

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.runs import RunLog, sample_file

TENSORBOARD_DIR = "tb"
"""The run folder's TensorBoard log directory: ``tensorboard --logdir RUN/tb`` (or the parent of several runs)."""


def scalars(record: dict) -> Dict[str, float]:
    """The numbers of a log record but its step, as the scalars of TensorBoard and W&B."""
    return {k: float(v) for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Sinks:
    """The log of one run and its optional mirrors, opened by the trainer's rank 0; :meth:`close` at the end.

    ``start``: the step the run resumes from; TensorBoard drops what an interrupted earlier process logged
    after it (``log.jsonl`` keeps it; ``maskdiff plot`` drops it as it reads)."""

    def __init__(self, run_dir, config: RunConfig, *, start: int):
        self.run_dir = Path(run_dir)
        self.tb = _tensorboard(self.run_dir / TENSORBOARD_DIR, start) if config.train.tensorboard else None
        self.wandb = _wandb(config, self.run_dir) if config.train.wandb else None
        self.log = RunLog(self.run_dir)

    def write(self, record: dict) -> None:
        """One record: a line of log.jsonl, and each of its numbers as a scalar."""
        self.log.write(record)
        values = scalars(record)
        if self.tb is not None:
            for name, value in values.items():
                self.tb.add_scalar(name, value, record["step"])
        if self.wandb is not None:
            self.wandb.log(values, step=record["step"])

    def samples(self, step: int, texts: List[str], sampler: str, steps: int) -> Path:
        """Samples drawn at ``step``: samples/<time>-<sampler>-<steps>-step<step>.txt (and TensorBoard's text tab)."""
        path = sample_file(self.run_dir, sampler, steps, f"-step{step:08d}.txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        if self.tb is not None:
            self.tb.add_text("samples", "\n\n".join(f"    {t}" for t in texts), step)  # indented: shown verbatim
        return path

    def close(self) -> None:
        self.log.__exit__()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _tensorboard(log_dir: Path, start: int):
    """A SummaryWriter on ``log_dir``, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        return None
    return SummaryWriter(str(log_dir), purge_step=start + 1 if start else None)


def _wandb(config: RunConfig, run_dir: Path):
    """A W&B run in project ``train.wandb``, one per run folder (a resumed run continues it)."""
    try:
        import wandb
    except ImportError:
        raise MaskdiffError(f"--wandb {config.train.wandb} needs the wandb package: pip install wandb (or leave out --wandb)") from None
    run_id = hashlib.sha256(str(run_dir.resolve()).encode("utf-8")).hexdigest()[:16]
    return wandb.init(project=config.train.wandb, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir),
                      config=config.to_dict())
