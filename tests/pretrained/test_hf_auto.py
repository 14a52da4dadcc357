"""An exported model folder through Hugging Face's Auto classes: with maskdiff.hf imported (registered
model_type "maskdiff"), and with trust_remote_code=True in a Python where maskdiff cannot be imported;
both give the logits of maskdiff's own network, exactly."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import micro_config
from maskdiff.objectives import build_objective
from maskdiff.modalities import build_tokenizer
from maskdiff.pipeline import Pipeline
from maskdiff.pretrained import REMOTE_CODE

import transformers  # noqa: E402 (make test installs it: a missing one fails)

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "maskdiff"
# backbone x time conditioning (and one class-conditional DiT): the networks a folder can carry as remote code
CASES = {"dit": ("dit", False, 0), "dit-time": ("dit", True, 0), "mdlm-dit": ("mdlm-dit", False, 0),
         "mdlm-dit-time": ("mdlm-dit", True, 0), "dit-classes": ("dit", False, 3), "md4-time": ("md4-transformer", True, 0)}


def random_pipeline(backbone: str, time_conditioned: bool, num_classes: int) -> Pipeline:
    """A micro model whose every weight is random (the zero-initialised adaLN and output layers would make
    every network's logits the same constant)."""
    cfg = micro_config()
    cfg.model.backbone, cfg.model.time_conditioned, cfg.model.num_classes = backbone, time_conditioned, num_classes
    cfg.model.depth = 2
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    obj = build_objective(cfg, tok.vocab_size)
    with torch.no_grad():
        for p in obj.network.parameters():
            p.normal_(0, 0.3)
    pipe = Pipeline(cfg, tok, obj)
    pipe.weights, pipe.step = "ema", 1
    return pipe


def inputs(pipe: Pipeline):
    """(input_ids with some masks, t, attention mask with padding at the end of row 1)."""
    V = pipe.tokenizer.vocab_size
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (3, 32), generator=g)
    x[torch.rand(3, 32, generator=g) < 0.4] = V
    t = torch.tensor([0.1, 0.5, 0.9])
    attn = torch.ones(3, 32, dtype=torch.long)
    attn[1, 20:] = 0
    return x, t, attn


@torch.no_grad()
def own_logits(pipe: Pipeline, x, t, attn):
    pipe.objective.eval()
    return pipe.objective.network(x, t, valid=attn.bool())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    out = {}
    for name, case in CASES.items():
        pipe = random_pipeline(*case)
        out[name] = (pipe, pipe.save_pretrained(root / name))
    return out


def test_the_folder_carries_its_code_byte_for_byte(folders):
    """No second copy of the architecture: the folder's code files are the package's own files."""
    _, folder = folders["dit"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["auto_map"] == {"AutoConfig": "configuration_maskdiff.MaskdiffConfig",
                                "AutoModelForMaskedLM": "modeling_maskdiff.MaskdiffForMaskedLM"}
    assert meta["vocab_size"] == meta["mask_token_id"] + 1 and meta["network"]["backbone"] == "dit"
    for name, source in REMOTE_CODE.items():
        assert (folder / name).read_bytes() == (PACKAGE / source).read_bytes(), name
    assert "trust_remote_code=True" in (folder / "README.md").read_text()  # the card says how


def test_import_maskdiff_leaves_transformers_alone_and_import_maskdiff_hf_registers():
    code = ("import sys, maskdiff, maskdiff.pretrained\n"
            "assert 'transformers' not in sys.modules, 'import maskdiff imported transformers'\n"
            "import maskdiff.hf\n"
            "from transformers import CONFIG_MAPPING, MODEL_FOR_MASKED_LM_MAPPING\n"
            "assert CONFIG_MAPPING['maskdiff'] is maskdiff.hf.MaskdiffConfig\n"
            "assert MODEL_FOR_MASKED_LM_MAPPING[maskdiff.hf.MaskdiffConfig] is maskdiff.hf.MaskdiffForMaskedLM\n")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_transformers_refuses_the_folder_without_maskdiff_or_trust(folders):
    """Neither registered nor trusted: transformers asks for trust_remote_code (the folder's code is not run)."""
    code = ("import sys; sys.modules['maskdiff'] = None\n"
            "from transformers import AutoConfig\n"
            f"AutoConfig.from_pretrained({str(folders['dit'][1])!r}, trust_remote_code=False)\n")
    proc = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode != 0 and "trust_remote_code" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("name", list(CASES))
def test_auto_model_with_maskdiff_imported_gives_the_networks_logits(folders, name):
    import maskdiff.hf
    from transformers import AutoConfig, AutoModelForMaskedLM

    pipe, folder = folders[name]
    assert isinstance(AutoConfig.from_pretrained(str(folder)), maskdiff.hf.MaskdiffConfig)
    model, info = AutoModelForMaskedLM.from_pretrained(str(folder), output_loading_info=True)
    assert type(model) is maskdiff.hf.MaskdiffForMaskedLM
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x, t, attn = inputs(pipe)
    with torch.no_grad():
        got = model.eval()(input_ids=x, timesteps=t, attention_mask=attn).logits
    want = own_logits(pipe, x, t, attn)
    assert got.shape == want.shape and torch.equal(got, want)
    assert float(want.std(dim=1).min()) > 0.01  # logits that vary along the sequence: the comparison has power
    if CASES[name][1]:  # time-conditioned: the logits depend on t, and t is passed through
        with torch.no_grad():
            other = model(input_ids=x, timesteps=1 - t, attention_mask=attn).logits
        assert float((other - got).abs().max()) > 1e-3
    if CASES[name][2]:  # class-conditional: the labels are passed through
        labels = torch.tensor([0, 2, 1])
        with torch.no_grad():
            got = model(input_ids=x, timesteps=t, attention_mask=attn, class_labels=labels).logits
            want = pipe.objective.network(x, t, labels, valid=attn.bool())
        assert torch.equal(got, want) and float((got - other_class(model, x, t, attn)).abs().max()) > 1e-3


@torch.no_grad()
def other_class(model, x, t, attn):
    return model(input_ids=x, timesteps=t, attention_mask=attn).logits  # the null class


# Run where maskdiff cannot be imported: its paths dropped from sys.path (the editable install's too) and
# the name blocked; each folder, copied elsewhere, loads with trust_remote_code=True; logits to a file.
CLEAN = r"""
import importlib.util, sys
sys.path = [p for p in sys.path if not p or not __import__("os").path.isdir(__import__("os").path.join(p, "maskdiff"))]
assert importlib.util.find_spec("maskdiff") is None
sys.modules["maskdiff"] = None
import torch
from safetensors.torch import save_file
from transformers import AutoModelForMaskedLM
folders, inputs, out = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
from safetensors.torch import load_file
x = load_file(inputs)
logits = {}
for folder in folders:
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        logits[folder.rsplit("/", 1)[1]] = model(input_ids=x["ids"], timesteps=x["t"], attention_mask=x["attn"]).logits.contiguous()
save_file(logits, out)
"""


def test_trust_remote_code_without_maskdiff_gives_the_networks_logits(folders, tmp_path):
    from safetensors.torch import load_file, save_file

    copies = []
    for name, (_, folder) in folders.items():
        copies.append(str(shutil.copytree(folder, tmp_path / "elsewhere" / name)))
    pipe = folders["dit"][0]
    x, t, attn = inputs(pipe)
    save_file({"ids": x, "t": t, "attn": attn}, str(tmp_path / "inputs.safetensors"))
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-I", "-c", CLEAN, ",".join(copies), str(tmp_path / "inputs.safetensors"),
                           str(tmp_path / "logits.safetensors")], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = load_file(str(tmp_path / "logits.safetensors"))
    for name, (pipe, _) in folders.items():
        assert torch.equal(got[name], own_logits(pipe, x, t, attn)), name


def test_a_bert_backbone_folder_names_what_reads_it(tmp_path):
    """A folder whose network is a Hugging Face masked LM inside maskdiff's wrapper carries no remote code;
    the Auto class says what reads it instead of building a wrong model."""
    import maskdiff.hf
    from transformers import AutoModelForMaskedLM

    from helpers import bert_pipeline

    folder = bert_pipeline().save_pretrained(tmp_path / "bert")
    assert "auto_map" not in json.loads((folder / "config.json").read_text())
    assert not (folder / "modeling_maskdiff.py").exists()
    with pytest.raises(ValueError, match="maskdiff.from_pretrained reads it"):
        AutoModelForMaskedLM.from_pretrained(str(folder))
