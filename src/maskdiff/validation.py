"""The whole check of a RunConfig before any work: the config's own values (``RunConfig.validate``),
then what needs a higher layer: the schedule's arguments, the objective's own rules and the
modality's data (an image corpus's size, class labels). It only checks: what a config implies is
filled in before, by :mod:`maskdiff.completion`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from maskdiff.config import RunConfig
from maskdiff.modalities import get_modality
from maskdiff.objectives import get_objective
from maskdiff.schedules import get_schedule
from maskdiff.warm_start import check_init_from


def validate_config(config: RunConfig, run_dir: Optional[Path] = None) -> None:
    """Raise MaskdiffError naming the first bad value; the config is left as it is. run_dir: the run it starts
    or resumes (a resume does not look at model.init_from's run: its own checkpoint holds the weights)."""
    get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)
    config.validate()
    get_modality(config).validate(config)
    get_objective(config.diffusion.objective).validate(config)
    check_init_from(config, run_dir)
