"""maskdiff model folders through Hugging Face's Auto classes.

    import maskdiff.hf                                   # registers model_type "maskdiff" (imports transformers)
    from transformers import AutoModelForMaskedLM
    model = AutoModelForMaskedLM.from_pretrained("out/tiny")
    logits = model(input_ids, timesteps=t).logits        # the network's logits, as maskdiff computes them

Importing this package is the opt-in: it imports transformers (seconds) and registers
:class:`MaskdiffConfig` with ``AutoConfig`` and :class:`MaskdiffForMaskedLM` with ``AutoModelForMaskedLM``
(``import maskdiff`` alone does neither). Where maskdiff is not installed, an exported folder loads with
``trust_remote_code=True``: it carries ``configuration_maskdiff.py`` and ``modeling_maskdiff.py`` (these two
files, copied) and the network files they import (maskdiff.pretrained writes them).
"""
from transformers import AutoConfig, AutoModelForMaskedLM

from maskdiff.hf.configuration_maskdiff import MaskdiffConfig
from maskdiff.hf.modeling_maskdiff import MaskdiffForMaskedLM

__all__ = ["MaskdiffConfig", "MaskdiffForMaskedLM", "register"]


def register() -> None:
    """Register model_type "maskdiff" with AutoConfig and AutoModelForMaskedLM (again: no effect)."""
    AutoConfig.register(MaskdiffConfig.model_type, MaskdiffConfig, exist_ok=True)
    AutoModelForMaskedLM.register(MaskdiffConfig, MaskdiffForMaskedLM, exist_ok=True)


register()
