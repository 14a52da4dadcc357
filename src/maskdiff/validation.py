"""The whole check of a RunConfig before any work: the config's own values (``RunConfig.validate``),
then what needs a higher layer: the schedule's arguments, the objective's own rules and the
modality's data (an image corpus's size, class labels)."""
from __future__ import annotations

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError
from maskdiff.modalities import get_modality
from maskdiff.objectives import get_objective
from maskdiff.schedules import get_schedule


def validate_config(config: RunConfig) -> RunConfig:
    """Raise MaskdiffError naming the first bad value; return the config unchanged."""
    get_schedule(config.diffusion.schedule, **config.diffusion.schedule_args)
    config.validate()
    get_modality(config).validate(config)
    get_objective(config.diffusion.objective).validate(config)
    return config


def complete_backbone(config: RunConfig) -> RunConfig:
    """Fill in what model.pretrained implies, in place: a Hugging Face masked LM (a named backbone such as
    'minilm', or a model folder) makes the backbone 'hf', records its config in model.hf_config and,
    when data.tokenizer is empty, takes the backbone's tokenizer. A maskdiff model folder keeps the
    config's backbone. Returns the config."""
    from maskdiff.objectives.base import backbone_config
    from maskdiff.pretrained import is_pretrained_folder

    m = config.model
    if not m.pretrained or is_pretrained_folder(m.pretrained):
        return config
    if m.backbone == "dit":
        m.backbone = "hf"
    if m.backbone != "hf":
        raise MaskdiffError(f"pretrained {m.pretrained!r} is a Hugging Face model; it needs backbone hf, not {m.backbone}")
    hf_config, tokenizer = backbone_config(m.pretrained)
    if not m.hf_config:
        m.hf_config = hf_config
    if not config.data.tokenizer:
        config.data.tokenizer = tokenizer
    return config
