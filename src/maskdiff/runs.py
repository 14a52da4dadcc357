"""Run directories, read and written in one place. A run directory holds

    RUN/
      config.json                      the RunConfig (JSON of ``RunConfig.to_dict``)
      tokenizer.json                   the tokenizer's ``config()``, so the run reads back without its corpus
      checkpoints/step_XXXXXXXX/       atomic safetensors checkpoints (see :mod:`maskdiff.checkpoint`)
      log.jsonl                        one JSON record per logged training step
      samples/                         what ``maskdiff sample`` writes (named by :func:`sample_file`)
      distill.json                     a distilled run only: how it was made and the steps it samples with

The trainer (:mod:`maskdiff.train`) writes it through :func:`start_run` and :class:`RunLog` (and its
checkpoints through :mod:`maskdiff.checkpoint`, which names their folder); the loader
(:func:`maskdiff.pipeline.load`) reads it through :func:`read_run_config`, :func:`read_tokenizer` and
:func:`checkpoint_to_load`. Both sit above this module; it sits above the checkpoint format and the data.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional, Tuple

from maskdiff.checkpoint import atomic_write_text, latest_valid_checkpoint, verify_checkpoint
from maskdiff.config import RunConfig, differences
from maskdiff.data.subword import tokenizer_from_config
from maskdiff.errors import MaskdiffError

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MaskdiffError(f"{path} is not valid JSON ({err})") from None


def read_run_config(run_dir) -> RunConfig:
    """The RunConfig stored in ``run_dir``; MaskdiffError when it is not a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise MaskdiffError(f"run directory {run_dir} does not exist")
    if not path.exists():
        raise MaskdiffError(f"{run_dir} is not a maskdiff run directory: {CONFIG_FILE} is missing")
    return RunConfig.from_dict(_read_json(path))


def read_tokenizer(run_dir):
    """The tokenizer stored in ``run_dir`` (any kind: characters, bytes, subwords, pixels)."""
    path = Path(run_dir) / TOKENIZER_FILE
    if not path.exists():
        raise MaskdiffError(f"{run_dir} has no {TOKENIZER_FILE}")
    return tokenizer_from_config(_read_json(path))


def start_run(run_dir, config: RunConfig, tokenizer) -> None:
    """Create the run directory and write its config and tokenizer, or check that an existing one was
    made with the same configuration: only the fields of ``config.RESUMABLE`` (train.steps, to extend a
    run, and how it runs) may differ; anything else is an error naming the fields."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / CONFIG_FILE).exists():
        diff = differences(read_run_config(run_dir), config)
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:4])
            raise MaskdiffError(f"{run_dir} holds a run with a different configuration ({shown}); use another --run-dir")
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=1))
    atomic_write_text(run_dir / TOKENIZER_FILE, json.dumps(tokenizer.config(), indent=1))


class RunLog:
    """The training log of a run, opened for appending (a resumed run continues it): one JSON record per
    line, flushed as it is written. A context manager."""

    def __init__(self, run_dir):
        self._file = open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()


def read_log(run_dir) -> List[dict]:
    """The records of the training log, oldest first; none when the run has not logged yet."""
    path = Path(run_dir) / LOG_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample_file(run_dir, sampler: str, steps: int, suffix: str) -> Path:
    """Where ``maskdiff sample`` saves a draw by default: samples/<date-time>-<sampler>-<steps><suffix>."""
    return Path(run_dir) / SAMPLES_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{sampler}-{steps}{suffix}"


def checkpoint_to_load(run_dir, checkpoint=None) -> Tuple[Path, dict]:
    """(checkpoint directory, its verified state.json): ``checkpoint`` when given, otherwise the newest
    valid checkpoint of ``run_dir`` (broken newer ones are reported and skipped)."""
    if checkpoint is not None:
        return Path(checkpoint), verify_checkpoint(Path(checkpoint))
    found = latest_valid_checkpoint(run_dir)
    if found is None:
        raise MaskdiffError(f"{run_dir} has no valid checkpoint; train it first (maskdiff train --run-dir {run_dir})")
    return found



DISTILL_FILE = "distill.json"


def write_distill_record(run_dir, record: dict) -> None:
    """Write ``distill.json``: how a distilled run was made (``maskdiff distill``) and ``recommended_steps``,
    the grid it was distilled for."""
    atomic_write_text(Path(run_dir) / DISTILL_FILE, json.dumps(record, indent=1))


def read_distill_record(run_dir) -> dict:
    """The ``distill.json`` of a distilled run; {} for any other run directory or model folder."""
    path = Path(run_dir) / DISTILL_FILE
    return _read_json(path) if path.is_file() else {}


def recommended_steps(run_dir) -> Optional[int]:
    """The sampling steps a run is meant for (a distilled run's grid), or None for an ordinary run."""
    steps = read_distill_record(run_dir).get("recommended_steps")
    return int(steps) if steps else None
