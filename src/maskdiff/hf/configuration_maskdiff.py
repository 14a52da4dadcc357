"""The configuration of a maskdiff model folder as Hugging Face's Auto classes read it (model_type "maskdiff").

This file is copied, as it is, into every exported model folder (``config.json``'s ``auto_map`` names it),
so it imports transformers only: it must run where maskdiff is not installed.
"""
from transformers import PretrainedConfig


class MaskdiffConfig(PretrainedConfig):
    """config.json of a folder written by maskdiff (``Pipeline.save_pretrained``, ``maskdiff export``,
    ``maskdiff convert``). The keys maskdiff itself reads (the run config under ``maskdiff``, the weights'
    kind, the measured bound) travel along as attributes.

    network: ``{"backbone": "dit" | "mdlm-dit", "arguments": {...}}``, the network class and its keyword
        arguments, as maskdiff built it for training.
    vocab_size: the input ids, V real tokens and the mask (V + 1, as MDLM's released config counts them).
    mask_token_id: the mask, id V (the last input id).
    max_position_embeddings: the training sequence length.
    """

    model_type = "maskdiff"

    def __init__(self, network=None, vocab_size=0, mask_token_id=None, max_position_embeddings=0, **kwargs):
        self.network = dict(network or {})
        self.vocab_size = vocab_size
        self.mask_token_id = vocab_size - 1 if mask_token_id is None else mask_token_id
        self.max_position_embeddings = max_position_embeddings
        kwargs.setdefault("tie_word_embeddings", False)  # the output layer is its own matrix
        super().__init__(**kwargs)
