"""The whole check of a RunConfig before any work: the config's own values (``RunConfig.validate``),
then what needs a higher layer: the schedule's arguments, the objective's own rules and the
modality's data (an image corpus's size, class labels). It only checks: what a config implies is
filled in before, by :mod:`maskdiff.completion`."""
from __future__ import annotations

from maskdiff.config import RunConfig
from maskdiff.modalities import get_modality
from maskdiff.objectives import get_objective
from maskdiff.schedules import get_schedule
from maskdiff.warm_start import check_init_from


def validate_config(config: RunConfig) -> None:
    """Raise MaskdiffError naming the first bad value; the config is left as it is."""
    get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)
    config.validate()
    get_modality(config).validate(config)
    get_objective(config.diffusion.objective).validate(config)
    check_init_from(config)
