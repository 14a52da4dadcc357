"""maskdiff: masked diffusion models of discrete data (MD4 and MDLM in one library)."""
from maskdiff.errors import MaskdiffError
from maskdiff.schedules import SCHEDULES, Schedule, get_schedule

__version__ = "0.1.0"


def load(run_dir, **kwargs):
    """Load a trained run directory (config, tokenizer, EMA weights) or a model folder: see :func:`maskdiff.pipeline.load`."""
    from maskdiff.pipeline import load as _load

    return _load(run_dir, **kwargs)


def from_pretrained(name_or_path, **kwargs):
    """Load a model folder (save_pretrained, maskdiff export, maskdiff convert), local or on a hub: see
    :func:`maskdiff.pipeline.from_pretrained`."""
    from maskdiff.pipeline import from_pretrained as _from_pretrained

    return _from_pretrained(name_or_path, **kwargs)


__all__ = ["MaskdiffError", "SCHEDULES", "Schedule", "get_schedule", "load", "from_pretrained", "__version__"]
