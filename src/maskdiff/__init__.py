"""maskdiff: masked diffusion models of discrete data (MD4 and MDLM in one library)."""
from maskdiff.errors import MaskdiffError
from maskdiff.schedules import SCHEDULES, Schedule, get_schedule

__version__ = "0.1.0"


def load(run_dir, **kwargs):
    """Load a trained run directory (config, tokenizer, EMA weights): see :func:`maskdiff.pipeline.load`."""
    from maskdiff.pipeline import load as _load

    return _load(run_dir, **kwargs)


__all__ = ["MaskdiffError", "SCHEDULES", "Schedule", "get_schedule", "load", "__version__"]
