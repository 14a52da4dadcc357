"""What a config implies, filled in once where the config is built, before it is checked: today the
Hugging Face backbone that model.pretrained names. The trainer applies it (:func:`maskdiff.train.train`)
right before :func:`maskdiff.validation.validate_config`; nothing else changes a config on its way to the
first step."""
from __future__ import annotations

from maskdiff.config import RunConfig
from maskdiff.errors import MaskdiffError


def complete_backbone(config: RunConfig) -> RunConfig:
    """Fill in what model.pretrained implies, in place: a Hugging Face masked LM (a named backbone such as
    'minilm', or a model folder) makes the backbone 'hf', records its config in model.hf_config and,
    when data.tokenizer is empty, takes the backbone's tokenizer. A folder with its own modeling code
    (auto_map) is refused unless model.trust_remote_code. A maskdiff model folder keeps the config's
    backbone, unless that is 'hf' (the folder then loads through its remote code). Returns the config."""
    from maskdiff.objectives.base import backbone_config
    from maskdiff.pretrained import is_pretrained_folder

    m = config.model
    if not m.pretrained or (m.backbone != "hf" and is_pretrained_folder(m.pretrained)):
        return config
    if m.backbone == "dit":
        m.backbone = "hf"
    if m.backbone != "hf":
        raise MaskdiffError(f"pretrained {m.pretrained!r} is a Hugging Face model; it needs backbone hf, not {m.backbone}")
    hf_config, tokenizer = backbone_config(m.pretrained)
    if hf_config.get("auto_map") and not m.trust_remote_code:
        raise MaskdiffError(f"pretrained {m.pretrained!r} needs its own modeling code (config.json auto_map); "
                            "allow it with --trust-remote-code (model.trust_remote_code)")
    if not m.hf_config:
        m.hf_config = hf_config
    if not config.data.tokenizer:
        config.data.tokenizer = tokenizer
    return config
