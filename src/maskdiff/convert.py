"""MDLM's released checkpoints as maskdiff model folders.

MDLM (Sahoo et al. 2024) released its OpenWebText model (``kuleshov-group/mdlm-owt``) as a DiT whose
state dict carries a ``backbone.`` prefix: ``vocab_embed.embedding`` (V + 1 = 50,258 rows, the mask
last, id 50,257), ``sigma_map.mlp.{0,2}``, ``blocks.{i}.{norm1, attn_qkv, attn_out, norm2, mlp.0, mlp.2,
adaLN_modulation}``, ``output_layer.{norm_final, linear, adaLN_modulation}`` and the rotary buffer
``rotary_emb.inv_freq``; 12 blocks x 768, 12 heads. Its output is raw logits over V + 1 columns: SUBS is
applied outside the network, as maskdiff's SUBS denoiser does. :func:`convert_mdlm` checks every name
and shape against :class:`~maskdiff.networks.mdlm_dit.MDLMDiT` (the same architecture, attention
through PyTorch's SDPA, so no flash-attn), and writes a folder that :func:`maskdiff.from_pretrained`,
``maskdiff eval`` and ``maskdiff sample`` read.

The weights are read from safetensors. A PyTorch Lightning ``.ckpt`` (or any pickle) is read only when
``allow_pickle`` is given, and then with ``torch.load(weights_only=True)``, which unpickles tensors and
plain containers only. MDLM's own ``.ckpt`` also pickles its hydra config (omegaconf objects) and its
tokenizer; every such class or function is replaced by :class:`Opaque`, an inert placeholder, so no code
of the checkpoint's runs and only its tensors are kept. Its ``state_dict`` holds the raw weights and its
``ema`` entry the exponential moving average (``shadow_params``, in the order of the backbone's
parameters), which is what MDLM evaluates and samples with: the EMA is taken unless ``ema=False``.

BD3-LM (Arriola et al. 2025, ``kuleshov-group/bd3lms``) trains the same DiT, under the same names, in its
block-diffusion mode: one pass over [x_t, x_0] under its block mask, sigma = 0. Its Lightning ``.ckpt``
adds two buffers beside ``backbone.`` (``sampling_eps_min``, ``sampling_eps_max``: the clipped noise
interval its training searches for), which have no EMA. :func:`convert_bd3lm` writes a folder with the
``block`` objective and the checkpoint's block size; MDLM's DiT runs it with ``block_size`` set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig
from maskdiff.errors import MaskdiffError

PREFIX = "backbone."
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
ROTARY_BUFFER = "rotary_emb.inv_freq"
CLIP_BUFFERS = ("sampling_eps_min", "sampling_eps_max")  # BD3-LM's clipped-schedule bounds: buffers, no EMA


class _OpaqueCall(type):
    def __call__(cls, *args, **kwargs):
        return {}  # what a pickled call (REDUCE) of a foreign function or class returns: an empty plain dict


class Opaque(metaclass=_OpaqueCall):
    """What every class or function a checkpoint names beyond tensors and plain containers is bound to when
    it is read with torch.load(weights_only=True), so that none of the checkpoint's code runs: a pickled
    call of it gives an empty dict (which the unpickler may fill, as for a defaultdict), an object built
    from it is an instance that keeps no state."""

    def __setstate__(self, state):
        pass


def _load_tensors_only(path: Path):
    """torch.load(weights_only=True), with the file's other globals (MDLM's .ckpt: its hydra config and
    tokenizer) bound to :class:`Opaque`."""
    unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    names = unsafe(str(path)) if unsafe is not None else []
    with torch.serialization.safe_globals([(Opaque, name) for name in names]):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def _ema_weights(obj: dict, path: Path) -> Dict[str, Tensor]:
    """A Lightning checkpoint's EMA (MDLM, BD3-LM: ``obj['ema']['shadow_params']``, one tensor per parameter
    in the order of ``backbone.parameters()``) under the names of its ``state_dict``, whose order is the
    same once the buffers (rotary, BD3-LM's clipping bounds) are left out."""
    shadow = obj["ema"].get("shadow_params") if isinstance(obj.get("ema"), dict) else None
    if not isinstance(shadow, (list, tuple)) or not all(isinstance(v, Tensor) for v in shadow):
        raise MaskdiffError(f"{path} has no EMA weights (ema.shadow_params); convert its raw weights with ema=False (--raw-weights)")
    names = [k for k, v in obj["state_dict"].items()
             if isinstance(v, Tensor) and not k.endswith(ROTARY_BUFFER) and k not in CLIP_BUFFERS]
    if len(names) != len(shadow) or any(obj["state_dict"][n].shape != v.shape for n, v in zip(names, shadow)):
        raise MaskdiffError(f"{path}: the {len(shadow)} EMA tensors do not match the {len(names)} parameters of its state_dict "
                            "one to one; convert its raw weights with ema=False (--raw-weights)")
    weights = dict(zip(names, shadow))
    weights.update({k: v for k, v in obj["state_dict"].items() if k.endswith(ROTARY_BUFFER)})
    return weights


def read_checkpoint(path, *, allow_pickle: bool = False, ema: bool = True) -> Dict[str, Tensor]:
    """The tensors of a checkpoint: a .safetensors file, a folder holding model.safetensors (a hub
    snapshot), or, with ``allow_pickle``, a pickle whose ``state_dict`` (or top level) holds tensors.
    ``ema``: from a Lightning checkpoint with an ``ema`` entry (MDLM's), its EMA weights."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise MaskdiffError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise MaskdiffError(f"{path} is not a readable safetensors file ({err})") from None
    if path.suffix not in PICKLE_SUFFIXES:
        raise MaskdiffError(f"unknown checkpoint format {path.suffix!r}; give a .safetensors file, a folder holding model.safetensors, "
                            f"or a pickle ({', '.join(PICKLE_SUFFIXES)}) with --allow-pickle")
    if not allow_pickle:
        raise MaskdiffError(f"{path} is a pickle, which can run code when it is read; convert its safetensors instead, or pass "
                            "--allow-pickle (allow_pickle=True) to read it with torch.load(weights_only=True), tensors only")
    try:
        obj = _load_tensors_only(path)
    except Exception as err:  # the unpickler's own errors: a forbidden global, a truncated file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MaskdiffError(f"{path} could not be read as tensors only ({first})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        if ema and "ema" in obj:
            return _ema_weights(obj, path)
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise MaskdiffError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}


def mdlm_architecture(tensors: Dict[str, Tensor], heads: int) -> Tuple[Dict[str, Tensor], dict]:
    """(the backbone's tensors without the prefix, the sizes read from their shapes). ``heads`` cannot be
    read from shapes (mdlm-owt: 12)."""
    if any(k.startswith(PREFIX) for k in tensors):
        weights = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    else:
        weights = dict(tensors)
    for key in ("vocab_embed.embedding", "sigma_map.mlp.0.weight", "blocks.0.mlp.0.weight"):
        if key not in weights:
            raise MaskdiffError(f"the checkpoint has no {PREFIX}{key}: it is not an MDLM DiT checkpoint")
    rows, width = weights["vocab_embed.embedding"].shape
    depth = len({k.split(".")[1] for k in weights if k.startswith("blocks.")})
    hidden = weights["blocks.0.mlp.0.weight"].shape[0]
    if hidden % width:
        raise MaskdiffError(f"{PREFIX}blocks.0.mlp.0.weight has shape {tuple(weights['blocks.0.mlp.0.weight'].shape)}: "
                            f"its hidden size is not a multiple of the width {width}")
    if width % heads or (width // heads) % 2:
        raise MaskdiffError(f"width {width} does not split into {heads} heads of even size; give the checkpoint's --heads")
    sizes = {"vocab_size": rows - 1, "width": width, "depth": depth, "heads": heads,
             "cond_dim": weights["sigma_map.mlp.0.weight"].shape[0], "mlp_ratio": hidden // width}
    return weights, sizes


def check_against(weights: Dict[str, Tensor], network, prefix: str = PREFIX) -> List[str]:
    """Raise MaskdiffError naming the first missing, misshaped or unknown tensor (as the checkpoint names it:
    ``prefix`` + the network's name); return the notes (a rotary buffer, recomputed, is checked and dropped)."""
    own = network.state_dict()
    notes = []
    inv = weights.pop("rotary_emb.inv_freq", None)
    if inv is not None:
        if inv.shape != network.inv_freq.shape or not torch.allclose(inv.float(), network.inv_freq, rtol=1e-5):
            raise MaskdiffError(f"{prefix}rotary_emb.inv_freq differs from the rotary frequencies with base 10,000 "
                                f"(shape {tuple(inv.shape)}); this converter knows that base only")
        notes.append("rotary_emb.inv_freq checked (base 10,000) and recomputed")
    for name, value in own.items():
        if name not in weights:
            raise MaskdiffError(f"the checkpoint lacks {prefix}{name} (shape {tuple(value.shape)})")
        if weights[name].shape != value.shape:
            raise MaskdiffError(f"{prefix}{name} has shape {tuple(weights[name].shape)}; this architecture needs {tuple(value.shape)}")
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise MaskdiffError(f"the checkpoint has tensors this architecture does not: {', '.join(prefix + u for u in unknown[:5])}")
    return notes


def mdlm_config(sizes: dict, *, length: int, tokenizer: str, time_conditioned: bool) -> RunConfig:
    """A run config for a converted MDLM model: MDLM's log-linear schedule and t_min = 1e-3."""
    return RunConfig(
        preset="mdlm-convert",
        model=ModelConfig(backbone="mdlm-dit", width=sizes["width"], depth=sizes["depth"], heads=sizes["heads"],
                          cond_dim=sizes["cond_dim"], mlp_ratio=float(sizes["mlp_ratio"]), time_conditioned=time_conditioned,
                          masked_logits=True),
        data=DataConfig(corpus="openwebtext", tokenizer=tokenizer, packing="wrap", length=length),
        diffusion=DiffusionConfig(schedule="loglinear", t_min=1e-3),
    )


def convert_mdlm(checkpoint, out, *, heads: int = 12, length: int = 1024, tokenizer: str = "gpt2",
                 time_conditioned: bool = False, allow_pickle: bool = False, overwrite: bool = False,
                 source: Optional[str] = None, ema: bool = True) -> Path:
    """Convert an MDLM DiT checkpoint into a maskdiff model folder at ``out``; return ``out``.

    heads: attention heads (not readable from the shapes; mdlm-owt has 12). length: the sequence length
    written into the config (rotary positions extend to any length; mdlm-owt was trained at 1,024).
    tokenizer: a maskdiff tokenizer name or folder whose vocabulary has exactly V tokens (mdlm-owt:
    'gpt2', 50,257). time_conditioned: the checkpoint was trained with MDLM's time conditioning.
    ema: from a Lightning .ckpt that holds them, the EMA weights (what MDLM evaluates and samples with);
    False: its raw weights (``state_dict``). Safetensors hold one set of weights and ignore it.
    """
    tensors = read_checkpoint(checkpoint, allow_pickle=allow_pickle, ema=ema)
    weights, sizes = mdlm_architecture(tensors, heads)
    config = mdlm_config(sizes, length=length, tokenizer=tokenizer, time_conditioned=time_conditioned)
    return _write(checkpoint, out, config, sizes, weights, ema=ema, source=source, overwrite=overwrite)


def _write(checkpoint, out, config: RunConfig, sizes: dict, weights: Dict[str, Tensor], *, ema: bool,
           source: Optional[str], overwrite: bool) -> Path:
    """Check the weights against the config's network and write the model folder."""
    from maskdiff.objectives import build_objective
    from maskdiff.modalities import build_tokenizer
    from maskdiff.pretrained import write_pretrained

    tokenizer = config.data.tokenizer
    tok = build_tokenizer(config)
    if tok.vocab_size != sizes["vocab_size"]:
        raise MaskdiffError(f"the checkpoint has {sizes['vocab_size']:,} tokens plus the mask, but tokenizer {tokenizer!r} has "
                            f"{tok.vocab_size:,}; give the tokenizer it was trained with (mdlm-owt: gpt2)")
    network = build_objective(config, sizes["vocab_size"]).network  # MDLM's DiT, freshly initialised
    notes = check_against(weights, network)
    weights = {k: v.float() for k, v in weights.items()}
    kind = "as released" if Path(checkpoint).suffix not in PICKLE_SUFFIXES else ("ema" if ema else "model")
    return write_pretrained(out, config, tok, weights, weights_kind=kind, step=None,
                            source=source or str(checkpoint), overwrite=overwrite, notes=notes)


def bd3lm_config(sizes: dict, *, block_size: int, length: int, tokenizer: str) -> RunConfig:
    """A run config for a converted BD3-LM model: the block objective with block size L', and BD3-LM's
    log-linear noise, whose masking probability is t itself (alpha_t = 1 - t: maskdiff's linear schedule),
    t_min = 1e-3."""
    if block_size < 1 or length % block_size:
        raise MaskdiffError(f"the block size {block_size} must be at least 1 and divide the sequence length {length}")
    config = RunConfig(
        preset="bd3lm-convert",
        model=ModelConfig(backbone="mdlm-dit", width=sizes["width"], depth=sizes["depth"], heads=sizes["heads"],
                          cond_dim=sizes["cond_dim"], mlp_ratio=float(sizes["mlp_ratio"]), masked_logits=True),
        data=DataConfig(corpus="openwebtext", tokenizer=tokenizer, packing="wrap", length=length),
        diffusion=DiffusionConfig(objective="block", block_size=block_size, schedule="linear", t_min=1e-3),
    )
    return config


def bd3lm_folder_settings(checkpoint) -> Dict[str, int]:
    """block_size, heads and length as BD3-LM's Hugging Face config.json beside the weights records them
    (``block_size``, ``n_heads``, ``model_length``: a folder its ``save_pretrained`` wrote); {} for a .ckpt or a
    folder without such a file."""
    import json

    path = Path(checkpoint)
    config = (path if path.is_dir() else path.parent) / "config.json"
    try:
        meta = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or meta.get("model_type") != "bd3lm":
        return {}
    names = {"block_size": "block_size", "heads": "n_heads", "length": "model_length"}
    return {ours: int(meta[theirs]) for ours, theirs in names.items() if isinstance(meta.get(theirs), int)}


def convert_bd3lm(checkpoint, out, *, block_size: int, heads: int = 12, length: int = 1024, tokenizer: str = "gpt2",
                  allow_pickle: bool = False, overwrite: bool = False, source: Optional[str] = None, ema: bool = True) -> Path:
    """Convert a BD3-LM DiT checkpoint (its Lightning .ckpt, or the backbone's safetensors) into a maskdiff
    model folder with the block objective at ``out``; return ``out``.

    block_size: the block length L' the checkpoint was trained with (BD3-LM's ``block_size``; the shapes do
    not tell it). heads, length, tokenizer, allow_pickle, ema: as :func:`convert_mdlm` (BD3-LM's
    OpenWebText models: 12 heads, L = 1024, gpt2). BD3-LM's block models are not time-conditioned.
    """
    tensors = read_checkpoint(checkpoint, allow_pickle=allow_pickle, ema=ema)
    weights, sizes = mdlm_architecture(tensors, heads)
    config = bd3lm_config(sizes, block_size=block_size, length=length, tokenizer=tokenizer)
    return _write(checkpoint, out, config, sizes, weights, ema=ema, source=source, overwrite=overwrite)
