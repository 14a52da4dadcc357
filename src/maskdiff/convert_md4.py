"""MD4's flax parameters as a maskdiff model folder.

MD4 (google-deepmind/md4) keeps its parameters as a flax tree. Its text model's tree, under ``params``,
is ``classifier/Embed_0/embedding`` (V + 1 rows, the mask last: id V), ``classifier/CondEmbedding_0/
{dense0, Dense_0}`` (the time features), ``classifier/Transformer_0/Dense_0`` (the input projection),
``Transformer_0/TransformerBlock_{i}/{Dense_0 (adaLN-zero), attention/{wq, wk, wv, wo},
feed_forward/{w1, w2, w3}}``, then ``Transformer_0/Dense_1`` (the output's adaLN-zero) and ``Dense_2``
(the output layer, V columns, no bias). Without time features the blocks hold ``RMSNorm_{0,1}/scale``,
the output ``RMSNorm_0/scale`` and the output layer is ``Dense_1``. Dense kernels are (in, out).

The tree is read from an ``.npz`` whose keys are the '/'-joined paths (with or without a leading
``params/``): a plain array file, no pickle (``numpy.load(allow_pickle=False)``). An EMA tree is read
the same way. :func:`md4_state_dict` maps it onto :class:`~maskdiff.networks.md4_transformer.MD4Transformer`
and checks every name and shape; :func:`convert_md4` writes a folder that :func:`maskdiff.from_pretrained`,
``maskdiff eval`` and ``maskdiff sample`` read, with maskdiff's ``linear`` schedule (MD4's text8 one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from maskdiff.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig
from maskdiff.convert import check_against
from maskdiff.errors import MaskdiffError

ROOT = "classifier/"
NET = ROOT + "Transformer_0/"
BLOCK_PARTS = {"attention/wq": "wq", "attention/wk": "wk", "attention/wv": "wv", "attention/wo": "wo",
               "feed_forward/w1": "w1", "feed_forward/w2": "w2", "feed_forward/w3": "w3"}


def read_npz(path) -> Dict[str, Tensor]:
    """The arrays of an .npz of flax paths, keyed without a leading ``params/``."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise MaskdiffError(f"MD4 parameter file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (ValueError, OSError) as err:
        raise MaskdiffError(f"{path} is not a readable .npz of arrays ({err})") from None
    return {(k[len("params/"):] if k.startswith("params/") else k): torch.from_numpy(v.astype("float32")) for k, v in arrays.items()}


def md4_sizes(params: Dict[str, Tensor]) -> dict:
    """vocab_size, width, depth, heads and time conditioning, read from the tree's shapes."""
    for key in (ROOT + "Embed_0/embedding", NET + "Dense_0/kernel"):
        if key not in params:
            raise MaskdiffError(f"the parameters have no {key}: not MD4's text network (outside_embed on, the transformer)")
    rows, feature_dim = params[ROOT + "Embed_0/embedding"].shape
    width = params[NET + "Dense_0/kernel"].shape[1]
    if width % feature_dim:
        raise MaskdiffError(f"width {width} is not a multiple of the embedding size {feature_dim} (MD4: feature_dim x num_heads)")
    depth = len({k[len(NET):].split("/")[0] for k in params if k.startswith(NET + "TransformerBlock_")})
    conditioned = any(k.startswith(ROOT + "CondEmbedding_0/") for k in params)
    return {"vocab_size": rows - 1, "width": width, "depth": depth, "heads": width // feature_dim, "time_conditioned": conditioned}


def _dense(out: Dict[str, Tensor], params: Dict[str, Tensor], flax: str, name: str, used: set) -> None:
    kernel = flax + "/kernel"
    if kernel not in params:
        raise MaskdiffError(f"the parameters lack {kernel}")
    out[name + ".weight"] = params[kernel].t().contiguous()
    used.add(kernel)
    if flax + "/bias" in params:
        out[name + ".bias"] = params[flax + "/bias"]
        used.add(flax + "/bias")


def md4_state_dict(params: Dict[str, Tensor], sizes: dict) -> Dict[str, Tensor]:
    """MD4's flax paths -> MD4Transformer's parameter names (kernels transposed to (out, in))."""
    out, used = {"embed.weight": params[ROOT + "Embed_0/embedding"]}, {ROOT + "Embed_0/embedding"}
    _dense(out, params, NET + "Dense_0", "input_proj", used)
    for i in range(sizes["depth"]):
        block = f"{NET}TransformerBlock_{i}/"
        for flax, name in BLOCK_PARTS.items():
            _dense(out, params, block + flax, f"blocks.{i}.{name}", used)
        if sizes["time_conditioned"]:
            _dense(out, params, block + "Dense_0", f"blocks.{i}.modulation", used)
        else:
            for j, name in enumerate(("attention_norm", "ffn_norm")):
                out[f"blocks.{i}.{name}.scale"] = params[f"{block}RMSNorm_{j}/scale"]
                used.add(f"{block}RMSNorm_{j}/scale")
    if sizes["time_conditioned"]:
        _dense(out, params, ROOT + "CondEmbedding_0/dense0", "time_embed.dense0", used)
        _dense(out, params, ROOT + "CondEmbedding_0/Dense_0", "time_embed.dense1", used)
        _dense(out, params, NET + "Dense_1", "final_modulation", used)
        _dense(out, params, NET + "Dense_2", "head", used)
    else:
        out["final_norm.scale"] = params[NET + "RMSNorm_0/scale"]
        used.add(NET + "RMSNorm_0/scale")
        _dense(out, params, NET + "Dense_1", "head", used)
    unknown = sorted(set(params) - used)
    if unknown:
        raise MaskdiffError(f"the parameters have entries MD4's text network does not: {', '.join(unknown[:5])}")
    return out


def md4_config(sizes: dict, *, length: int, tokenizer: str) -> RunConfig:
    """A run config for converted MD4 weights: backbone md4-transformer, maskdiff's linear schedule (MD4's
    text8 schedule; MD4 keeps alpha within [1e-4, 1 - 1e-4], maskdiff within [0, 1])."""
    return RunConfig(
        preset="md4-convert",
        model=ModelConfig(backbone="md4-transformer", width=sizes["width"], depth=sizes["depth"], heads=sizes["heads"],
                          time_conditioned=sizes["time_conditioned"]),
        data=DataConfig(tokenizer=tokenizer, length=length),
        diffusion=DiffusionConfig(schedule="linear"),
    )


def load_md4(path, *, length: int = 256, tokenizer: str = "text8") -> Tuple[RunConfig, Dict[str, Tensor]]:
    """(the run config, MD4Transformer's state dict) of an .npz of MD4 parameters, checked against the network."""
    from maskdiff.objectives import build_objective

    params = read_npz(path)
    sizes = md4_sizes(params)
    config = md4_config(sizes, length=length, tokenizer=tokenizer)
    weights = md4_state_dict(params, sizes)
    check_against(weights, build_objective(config, sizes["vocab_size"]).network, prefix="")
    return config, weights


def convert_md4(params, out, *, length: int = 256, tokenizer: str = "text8", overwrite: bool = False,
                source: Optional[str] = None) -> Path:
    """Convert an .npz of MD4's flax parameters (its text network) into a maskdiff model folder at ``out``.

    length: the sequence length written into the config (MD4's text8: 256). tokenizer: a maskdiff tokenizer
    with exactly V tokens (MD4's text8: 'text8', a-z and space, 27).
    """
    from maskdiff.modalities import build_tokenizer
    from maskdiff.pretrained import write_pretrained

    config, weights = load_md4(params, length=length, tokenizer=tokenizer)
    tok = build_tokenizer(config)
    vocab = weights["embed.weight"].shape[0] - 1
    if tok.vocab_size != vocab:
        raise MaskdiffError(f"the parameters have {vocab:,} tokens plus the mask, but tokenizer {tokenizer!r} has "
                            f"{tok.vocab_size:,}; give the tokenizer they were trained with (MD4's text8: text8)")
    return write_pretrained(out, config, tok, weights, weights_kind="as released", step=None,
                            source=source or str(params), overwrite=overwrite, notes=["converted from MD4's flax parameters"])
