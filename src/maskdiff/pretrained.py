"""The published form of a model: a folder that Hugging Face tooling recognises.

    OUT/
      config.json              model_type "maskdiff", the sizes a reader looks for (vocab_size: the input ids,
                               the mask included; mask_token_id; max_position_embeddings), the network class and
                               its arguments ("network"), "auto_map" naming the files below, and the whole run
                               config under "maskdiff"
      model.safetensors        the weights (EMA by default), the network's own parameter names
      configuration_maskdiff.py, modeling_maskdiff.py, transformer.py, mdlm_dit.py
                               the code transformers runs with trust_remote_code=True where maskdiff is not
                               installed: maskdiff.hf's two files and the network files, copied byte for byte
                               (the dit and mdlm-dit backbones)
      maskdiff_tokenizer.json  the tokenizer as maskdiff reads it (any kind: characters, bytes, subwords)
      tokenizer.json           subword tokenizers also in the tokenizers library's own format, with
      tokenizer_config.json    a config naming PreTrainedTokenizerFast, so AutoTokenizer reads them
      README.md                the model card: YAML metadata for the hub, what it was trained on, its
                               measured bound with its interval, how to sample it

:meth:`maskdiff.pipeline.Pipeline.save_pretrained` writes it (``maskdiff export RUN OUT`` on the command
line) and :func:`maskdiff.from_pretrained` reads it back, from a local folder or, where a hub is
reachable, a hub name (downloaded with ``huggingface_hub``). Nothing is unpickled. Hugging Face's
``AutoModelForMaskedLM.from_pretrained`` reads it too (after ``import maskdiff.hf``, or with
``trust_remote_code=True``): see maskdiff.hf.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import Tensor

from maskdiff.checkpoint import atomic_write_text, read_tensors
from maskdiff.config import RunConfig
from maskdiff.data.subword import tokenizer_from_config
from maskdiff.errors import MaskdiffError
from maskdiff.objectives import get_objective
from maskdiff.objectives.base import network_arguments

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "maskdiff_tokenizer.json"
CARD_FILE = "README.md"
# Where a named starting point came from on the hub, for the card's base_model.
BASE_MODELS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}
# The code a folder carries for trust_remote_code=True: its file name -> the package file it is a copy of
# (relative to the maskdiff package). One source: maskdiff.hf imports the same network files from maskdiff.networks.
PACKAGE = Path(__file__).resolve().parent
REMOTE_CODE = {"configuration_maskdiff.py": "hf/configuration_maskdiff.py", "modeling_maskdiff.py": "hf/modeling_maskdiff.py",
               "transformer.py": "networks/transformer.py", "layers.py": "networks/layers.py",
               "mdlm_dit.py": "networks/mdlm_dit.py", "md4_transformer.py": "networks/md4_transformer.py"}
AUTO_MAP = {"AutoConfig": "configuration_maskdiff.MaskdiffConfig", "AutoModelForMaskedLM": "modeling_maskdiff.MaskdiffForMaskedLM"}


def is_pretrained_folder(path) -> bool:
    """Whether ``path`` is a folder written by :func:`write_pretrained` (not a run directory)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        return False
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")).get("model_type") == "maskdiff"
    except (json.JSONDecodeError, AttributeError):
        return False


def resolve(name_or_path, revision: Optional[str] = None) -> Path:
    """A local folder as it is; otherwise a hub name (``owner/name``), downloaded with huggingface_hub
    (offline: its cache only). Raises MaskdiffError saying which was tried."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name.count("/") != 1 or name.startswith((".", "/")):
        raise MaskdiffError(f"{name} is neither a local folder nor a hub name of the form owner/name")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise MaskdiffError(f"{name} is not a local folder, and a hub name needs huggingface_hub (pip install 'maskdiff[pretrained]')") from None
    try:
        return Path(snapshot_download(repo_id=name, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except Exception as err:  # the hub's own errors: offline, not found, gated
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MaskdiffError(f"{name} is not a local folder and could not be fetched from the hub ({first})") from None


def write_pretrained(out, config: RunConfig, tokenizer, weights: Dict[str, Tensor], *, weights_kind: str,
                     step: Optional[int], evaluation: Optional[Dict[str, Any]] = None, source: str = "",
                     overwrite: bool = False, notes: Optional[list] = None) -> Path:
    """Write the folder (see the module docstring). ``weights``: the objective's flat state dict;
    ``weights_kind``: 'ema' or 'model'; ``evaluation``: the measured bound for the card (keys: summary,
    split, corpus, sequences, tokens, passes, estimate); ``source``: where the weights came from (a
    converted checkpoint); ``notes``: lines for the card about the conversion."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise MaskdiffError(f"{out} exists and is not empty; choose a new folder (or pass overwrite=True / --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    V = int(tokenizer.vocab_size)
    backbone, arguments = network_arguments(config, V, get_objective(config.diffusion.objective))
    remote = backbone != "hf"  # a Hugging Face masked LM inside maskdiff's wrapper has no remote code here
    meta = {
        "model_type": "maskdiff",
        "architectures": ["MaskdiffForMaskedLM"],
        **({"auto_map": AUTO_MAP} if remote else {}),
        "maskdiff_format": FORMAT_VERSION,
        "vocab_size": V + 1,
        "mask_token_id": V,
        "max_position_embeddings": config.data.length,
        "network": {"backbone": backbone, "arguments": arguments},
        "weights": weights_kind,
        "step": step,
        "source": source,
        "evaluation": evaluation,
        "notes": list(notes or []),
        "maskdiff": config.to_dict(),
    }
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(out / WEIGHTS_FILE),
              metadata={"format": "pt", "maskdiff_weights": weights_kind})
    atomic_write_text(out / CONFIG_FILE, json.dumps(meta, indent=1))
    atomic_write_text(out / TOKENIZER_FILE, json.dumps(tokenizer.config()))
    for name, source in (REMOTE_CODE.items() if remote else ()):
        atomic_write_text(out / name, (PACKAGE / source).read_text(encoding="utf-8"))
    backend = getattr(tokenizer, "backend", None)
    if backend is not None:  # a subword tokenizer: also in the format AutoTokenizer reads
        atomic_write_text(out / "tokenizer.json", backend.to_str())
        atomic_write_text(out / "tokenizer_config.json", json.dumps(
            {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.data.length,
             "note": f"maskdiff adds its mask token as id {V}, one past this vocabulary"}, indent=1))
    n_params = sum(v.numel() for v in weights.values())
    atomic_write_text(out / CARD_FILE, model_card(config, tokenizer, meta, n_params, out.name))
    return out


def read_pretrained(folder) -> Tuple[RunConfig, Any, Dict[str, Tensor], Dict[str, Any]]:
    """(run config, tokenizer, weights, the rest of config.json) of a folder written by :func:`write_pretrained`."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        if not (folder / name).is_file():
            raise MaskdiffError(f"{folder} is not a maskdiff model folder: {name} is missing")
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        tok_cfg = json.loads((folder / TOKENIZER_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MaskdiffError(f"{folder} holds a file that is not valid JSON ({err})") from None
    if meta.get("model_type") != "maskdiff" or "maskdiff" not in meta:
        raise MaskdiffError(f"{folder}/{CONFIG_FILE} is not a maskdiff model config (model_type {meta.get('model_type')!r})")
    if int(meta.get("maskdiff_format", 0)) > FORMAT_VERSION:
        raise MaskdiffError(f"{folder} was written by a newer maskdiff (format {meta['maskdiff_format']}); this one reads {FORMAT_VERSION}")
    config = RunConfig.from_dict(meta["maskdiff"])
    return config, tokenizer_from_config(tok_cfg), read_tensors(folder / WEIGHTS_FILE), meta


def model_card(config: RunConfig, tokenizer, meta: Dict[str, Any], n_params: int, name: str) -> str:
    """The README.md of a model folder: hub metadata in YAML front matter, then prose."""
    m, d, dc = config.model, config.data, config.diffusion
    base = BASE_MODELS.get(m.pretrained)
    front = ["---", "library_name: maskdiff", "tags:", "- masked-diffusion", "- mdlm", "- md4", "pipeline_tag: fill-mask"]
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    if m.backbone == "hf":
        arch = f"a Hugging Face {m.hf_config.get('model_type', '?')} masked LM ({m.hf_config.get('num_hidden_layers', '?')} layers x " \
               f"{m.hf_config.get('hidden_size', '?')} wide) whose own mask token is the absorbing state"
    else:
        name = {"mdlm-dit": "MDLM's DiT", "md4-transformer": "MD4's transformer"}.get(m.backbone, "maskdiff's DiT")
        arch = f"{name}, {m.depth} layers x {m.width} wide, {m.heads} heads"
    started = f", initialised from `{m.pretrained}`" if m.pretrained else ("" if meta.get("source") else ", trained from scratch")
    kind = {"ema": "EMA", "model": "raw"}.get(meta.get("weights"), meta.get("weights"))
    data = ("see the source" if meta.get("source") else
            f"corpus `{d.corpus}`, tokenizer `{d.tokenizer or d.form}`, {d.packing} packing, sequences of {d.length} tokens")
    ev = meta.get("evaluation")
    if ev:
        measured = (f"{ev.get('corpus', d.corpus)} {ev.get('split', '?')} split: **{ev['summary']}** over {ev.get('sequences', '?')} "
                    f"sequences ({ev.get('tokens', '?')} tokens), {ev.get('estimate', 'continuous NELBO')}, {ev.get('passes', 1)} pass(es); "
                    "the NELBO is an upper bound on -log p(x) and the interval is over sequences.")
    else:
        measured = "not measured when this folder was written (`maskdiff eval FOLDER` measures it)."
    lines = front + [
        "", f"# {name}", "",
        f"A masked diffusion model (MD4, Shi et al. 2024; MDLM, Sahoo et al. 2024) written by maskdiff: objective "
        f"`{dc.objective}`, schedule `{dc.schedule}`, {arch}; {n_params:,} parameters, "
        f"{kind} weights"
        + (f" of step {meta['step']}" if meta.get("step") is not None else "") + f"{started}."
        + (f" Converted from {meta['source']}." if meta.get("source") else ""), "",
        f"- Vocabulary: {tokenizer.vocab_size:,} tokens; maskdiff's mask token is id {tokenizer.vocab_size}.",
        f"- Time conditioning: {'yes' if m.time_conditioned else 'no (the cached sampler applies)'}.",
        f"- Training data: {data}.",
        f"- Measured: {measured}",
        *[f"- Conversion: {n}." for n in meta.get("notes") or []],
        "", "## How to sample it", "",
        "```python", "import maskdiff", "",
        f'model = maskdiff.from_pretrained("{name}")          # a local folder, or owner/name on the hub',
        'model.generate(prompt="...", num=2, sampler="cached")  # text that continues the prompt',
        'model.generate(infill="... [8] ...")                    # [N]: N tokens to fill in',
        "```", "",
        "On the command line: `maskdiff sample FOLDER --num 4 --sampler first-hitting` and `maskdiff eval FOLDER`.", "",
    ]
    if meta.get("auto_map"):
        reads_t = meta["network"]["arguments"].get("time_conditioned")
        lines += [f"With transformers alone, the network's logits (the mask is id {tokenizer.vocab_size}; `timesteps` is t in [0, 1], "
                  f"which this network {'reads' if reads_t else 'ignores'}):", "",
                  "```python", "from transformers import AutoModelForMaskedLM", "",
                  f'model = AutoModelForMaskedLM.from_pretrained("{name}", trust_remote_code=True)  # or, maskdiff installed: import maskdiff.hf first',
                  "logits = model(input_ids, timesteps=t).logits", "```", ""]
    return "\n".join(lines)
