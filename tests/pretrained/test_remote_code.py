"""A Hugging Face backbone whose model type comes with its own modeling code (config.json auto_map): a
folder written by maskdiff's own export. Refused unless the user allows remote code; trained and loaded
again through that folder's code when allowed."""
import json
import sys

import torch

from helpers import MICRO_FLAGS, assert_clean_error, micro_config, run_main
from maskdiff.modalities import build_tokenizer
from maskdiff.objectives import build_objective
from maskdiff.pipeline import Pipeline, load


def exported(out):
    """A micro character model (its output layer made non-zero) written as maskdiff export writes it."""
    cfg = micro_config()
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    obj = build_objective(cfg, tok.vocab_size)
    with torch.no_grad():
        obj.network.head.weight.normal_(0, 0.5)
    pipe = Pipeline(cfg, tok, obj)
    pipe.weights, pipe.step = "ema", 1
    return pipe, pipe.save_pretrained(out)


def test_remote_code_backbone_is_refused_without_the_flag_and_trains_and_loads_with_it(tmp_path, plays):
    pipe, folder = exported(tmp_path / "exported")
    assert json.loads((folder / "config.json").read_text())["auto_map"]
    args = ["train", "--backbone", "hf", "--pretrained", folder, "--tokenizer", "text8", "--corpus", plays, "--steps", "2", *MICRO_FLAGS]
    run = tmp_path / "run"
    assert_clean_error(run_main(*args, "--run-dir", run), "--trust-remote-code", "auto_map")
    assert not run.exists()  # refused before the run folder is made

    proc = run_main(*args, "--run-dir", run, "--trust-remote-code")
    assert proc.returncode == 0, proc.stderr
    assert f"network initialised from {folder}" in proc.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["trust_remote_code"] and config["model"]["pretrained"] == str(folder)

    back = load(run)  # the network rebuilt from the folder's code
    net = back.objective.network
    assert type(net.model).__name__ == "MaskdiffForMaskedLM" and net.vocab_size == pipe.tokenizer.vocab_size
    # the folder's copy of the code; once `import maskdiff.hf` has registered the model type in this process
    # (another test may have), transformers takes that registered class for it instead
    module = type(net.model).__module__
    assert module.startswith("transformers_modules.") or ("maskdiff.hf" in sys.modules and module == "maskdiff.hf.modeling_maskdiff")
    x = torch.full((2, 8), net.vocab_size)
    x[:, :3] = pipe.encode(["the cat", "to be o"])[:, :3]
    with torch.no_grad():
        logits = net(x)
    assert logits.shape == (2, 8, net.vocab_size) and torch.isfinite(logits).all()
    out = back.sample(2, length=8, steps=4, seed=0)
    assert out.tokens.shape == (2, 8) and int(out.tokens.max()) < net.vocab_size
