"""A maskdiff network as a Hugging Face ``PreTrainedModel``: ``AutoModelForMaskedLM`` reads a model folder.

One source for two places. Inside the package (``maskdiff.hf``) this file takes the networks from
``maskdiff.networks``; maskdiff copies it, as it is, into every exported folder beside
``configuration_maskdiff.py`` and the network files themselves (``transformer.py``, ``mdlm_dit.py``),
where ``trust_remote_code=True`` runs it with torch and transformers only. Either way the architecture
is maskdiff's own code, never a second copy of it.

``forward(input_ids, timesteps=None)`` returns the network's logits (B, L, V) (V + 1 columns where the
network predicts the mask too: MDLM's DiT, the zero-mask ablation), raw: the SUBS parameterisation
(log-softmax over the real tokens, carry-over of unmasked ones) is applied by maskdiff's denoiser, not here.
"""
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_maskdiff import MaskdiffConfig

try:  # in an exported folder: the network files copied beside this one
    from .md4_transformer import MD4Transformer
    from .mdlm_dit import MDLMDiT
    from .transformer import DiT, RotaryEmbedding
except ImportError:  # inside the package, maskdiff.hf: the same files in maskdiff.networks
    if __package__ != "maskdiff.hf":
        raise
    from maskdiff.networks.md4_transformer import MD4Transformer
    from maskdiff.networks.mdlm_dit import MDLMDiT
    from maskdiff.networks.transformer import DiT, RotaryEmbedding

NETWORKS = {"dit": DiT, "mdlm-dit": MDLMDiT, "md4-transformer": MD4Transformer}


class MaskdiffForMaskedLM(PreTrainedModel):
    """The network of a maskdiff model folder: ``network`` holds it under the parameter names of the
    folder's model.safetensors (transformers adds the ``network.`` prefix when it loads them)."""

    config_class = MaskdiffConfig
    base_model_prefix = "network"
    main_input_name = "input_ids"

    def __init__(self, config: MaskdiffConfig):
        super().__init__(config)
        backbone = config.network.get("backbone")
        if backbone not in NETWORKS:
            raise ValueError(f"network backbone {backbone!r} has no Hugging Face model class; choose one of: {', '.join(NETWORKS)} "
                             "(a folder with backbone 'hf' holds a Hugging Face masked LM: maskdiff.from_pretrained reads it)")
        self.network = NETWORKS[backbone](**config.network["arguments"])
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.network.embed if isinstance(self.network, (DiT, MD4Transformer)) else self.network.vocab_embed

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The weights come from the folder or from the network's own initialisation; only the rotary
        tables, which are not weights, are computed here again: transformers builds the model on the meta
        device before it loads the weights, and these buffers would stay empty."""
        if isinstance(module, RotaryEmbedding):
            fresh = RotaryEmbedding(2 * module.cos.shape[-1], module.cos.shape[0])
            module.cos.copy_(fresh.cos)
            module.sin.copy_(fresh.sin)
        elif isinstance(module, MDLMDiT):
            head_dim = 2 * module.inv_freq.shape[0]
            fresh = MDLMDiT(1, 1, width=head_dim, depth=0, heads=1, cond_dim=1)  # the same table, from the same code
            module.inv_freq.copy_(fresh.inv_freq)
        elif isinstance(module, MD4Transformer):
            head_dim = 2 * module.inv_freq.shape[0]
            fresh = MD4Transformer(1, 1, width=head_dim, depth=0, heads=1, time_conditioned=False)
            module.inv_freq.copy_(fresh.inv_freq)

    def forward(self, input_ids: torch.Tensor, timesteps: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, class_labels: Optional[torch.Tensor] = None,
                return_dict: Optional[bool] = None) -> MaskedLMOutput:
        """input_ids: (B, L) in [0, V], the mask is id V (``config.mask_token_id``). timesteps: (B,) the
        diffusion time t in [0, 1] (t = 1: every token masked); a time-conditioned network needs it, a
        time-independent one ignores it. attention_mask: (B, L), 0 at padding. class_labels: (B,) for a
        class-conditional DiT (default: the null class)."""
        valid = None if attention_mask is None else attention_mask.bool()
        if class_labels is not None:
            if not isinstance(self.network, DiT) or not self.network.num_classes:
                raise ValueError("this network is not class-conditional: it takes no class_labels")
            logits = self.network(input_ids, timesteps, class_labels, valid=valid)
        else:
            logits = self.network(input_ids, timesteps, valid=valid)
        return MaskedLMOutput(logits=logits) if return_dict is not False else (logits,)
