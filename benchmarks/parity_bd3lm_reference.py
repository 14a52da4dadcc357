"""BD3-LM's reference code, driven for benchmarks/parity_bd3lm.py: runs in a reference virtualenv, never imports maskdiff.

    PYTHONPATH=SHIMS:REF PYTHON benchmarks/parity_bd3lm_reference.py train --spec JSON

REF is an extracted snapshot of github:kuleshov-group/bd3lms; SHIMS the peer harness's CPU shims (only its
``timm`` stub is needed: BD3-LM's ``utils.py`` imports ``timm.scheduler``; its ``models/dit.py`` imports
flash-attn inside ``try``). Every command builds the reference's own ``diffusion.Diffusion`` (its
LightningModule: DiT backbone with the block-diffusion mask over [x_t, x_0], SUBS, log-linear noise, one
antithetic t per block, AdamW with constant-after-warm-up lr, its EMA) from its own hydra configs, with
``algo=bd3lm`` and ``model.attn_backend=sdpa`` (its CPU-capable attention path), and uses Lightning's
``Trainer`` as its ``main.py`` does:

- ``train``: ``Trainer.fit`` on given token windows, in their order; Lightning's ModelCheckpoint writes
  the reference's own ``.ckpt`` (``backbone.`` keys, the EMA under ``ema``, the clipping bounds
  ``sampling_eps_min`` / ``sampling_eps_max``);
- ``eval``: the reference's own evaluation of a ``.ckpt`` (``load_from_checkpoint`` then
  ``Trainer.validate``, which swaps in the EMA weights): its ``val/nll`` in nats per token, once per seed;
- ``logits``: the backbone's raw logits on [x_t, x_0] inputs (and the SUBS log-probabilities of
  ``Diffusion.forward``), with the EMA or the raw weights of a ``.ckpt``;
- ``hf``: the backbone in its Hugging Face format (``models/hf``: ``BD3LM.save_pretrained``, EMA weights,
  as its ``push_to_hf.py`` builds it) and that model's logits.

What is adapted (no reference file is edited): a byte tokenizer object (vocabulary 256, no mask token:
the reference appends the mask, id 256); the GPT-2 tokenizer download of ``metrics.Metrics`` is skipped
(generative perplexity only); the loader's shuffling sampler becomes a sequential one, so step k trains
on windows k B .. (k + 1) B - 1; ``algo.ignore_bos=False`` (bytes have no BOS token, so the first byte is
modelled like the others); ``models`` is imported before Lightning (:func:`_import_models_first`);
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` lets Lightning read its own checkpoints
under PyTorch >= 2.6.
"""
import argparse
import json
import os
import sys
import warnings

import parity_reference  # the Lightning driver's pieces, shared with MDLM's (same venv, same conventions)
from parity_reference import RESULT_TAG


def bd3lm_overrides(spec):
    """BD3-LM's hydra overrides (configs/config.yaml, algo bd3lm) for this run's sizes and settings."""
    return [
        "algo=bd3lm", "model=tiny", "noise=loglinear", "model.attn_backend=sdpa", f"block_size={spec['block_size']}",
        "algo.ignore_bos=False", "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32", "loader.num_workers=1",
        f"model.hidden_size={spec['width']}", f"model.cond_dim={spec['cond_dim']}", f"model.length={spec['length']}",
        f"model.n_blocks={spec['depth']}", f"model.n_heads={spec['heads']}", f"model.dropout={spec['dropout']}",
        f"training.ema={spec['ema']}", f"optim.lr={spec['lr']}", f"lr_scheduler.num_warmup_steps={spec['warmup']}",
        f"loader.global_batch_size={spec['batch']}",
    ]


def _import_models_first():
    """models/dit.py decorates a function with ``torch.compile(fullgraph=..., mode=...)`` at import time; Lightning
    2.2 (the harness's) wraps torch.compile so that it needs the model positionally, and that import fails
    (TypeError: compile() missing 1 required positional argument: 'model'). BD3-LM pins Lightning 2.5, which
    does not; importing the models before Lightning gives the same module."""
    import models  # noqa: F401


def load(spec, ckpt):
    return parity_reference.load(spec, ckpt, bd3lm_overrides(spec))


def cmd_train(spec):
    overrides = bd3lm_overrides(spec)
    model, config = parity_reference.start_run(spec, overrides)
    result = parity_reference.fit_windows(spec, model, config)
    return dict(result, state_dict_keys=sorted(model.state_dict().keys()))


def cmd_eval(spec):
    eps = lambda model: {"sampling_eps": [float(model.sampling_eps_min), float(model.sampling_eps_max)]}  # noqa: E731
    return {"runs": parity_reference.validate_seeds(spec, spec["ckpt"], bd3lm_overrides(spec), extra=eps)}


def cmd_logits(spec):
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    model, _ = load(spec, spec["ckpt"])
    if spec["weights"] == "ema":
        model.ema.copy_to(model.backbone.parameters())
    model.eval()
    x_t = torch.as_tensor(np.load(spec["inputs"]).astype("int64"))
    x0 = torch.as_tensor(np.load(spec["clean"]).astype("int64"))
    x = torch.cat([x_t, x0], dim=1)  # the training pass's input, [x_t, x_0]
    with torch.no_grad():
        sigma = torch.zeros(x.shape[0], 1)
        raw = model.backbone(x, model._process_sigma(sigma))
        subs = model.forward(x, sigma)
    np.save(spec["out"] + ".raw.npy", raw.float().numpy())
    np.save(spec["out"] + ".subs.npy", subs.float().numpy())
    return {"shape": list(raw.shape), "dtype": str(raw.dtype)}


def cmd_hf(spec):
    """The backbone in BD3-LM's Hugging Face format, written as its push_to_hf.py does (``models.hf.BD3LM``
    loads the .ckpt's state_dict, then the EMA parameters are copied in), with ``save_pretrained`` to a
    folder instead of ``push_to_hub``; and that model's own logits on [x_t, x_0]."""
    import numpy as np
    import torch

    from models.hf import BD3LM, BD3LMConfig

    torch.set_num_threads(spec["threads"])
    ckpt = torch.load(spec["ckpt"], map_location="cpu", weights_only=False)
    config = BD3LMConfig(block_size=spec["block_size"], vocab_size=spec["vocab"] + 1, model_length=spec["length"],
                         hidden_dim=spec["width"], cond_dim=spec["cond_dim"], n_blocks=spec["depth"], n_heads=spec["heads"],
                         dropout=spec["dropout"], time_conditioning=False, attn_backend="sdpa", return_dict=False)
    model = BD3LM(config)
    model.load_state_dict(ckpt["state_dict"])
    for s_param, param in zip(ckpt["ema"]["shadow_params"], model.parameters()):
        if param.requires_grad:
            param.data.copy_(s_param.data)
    model.save_pretrained(spec["out"])
    model.eval()
    x = torch.cat([torch.as_tensor(np.load(spec["inputs"]).astype("int64")), torch.as_tensor(np.load(spec["clean"]).astype("int64"))], 1)
    with torch.no_grad():
        logits = model(input_ids=x, timesteps=torch.zeros(x.shape[0]), return_dict=True).logits
    np.save(spec["out"] + ".logits.npy", logits.float().numpy())
    return {"files": sorted(os.listdir(spec["out"]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "eval", "logits", "hf"])
    p.add_argument("--spec", required=True, help="JSON object of settings (see benchmarks/parity_bd3lm.py)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    _import_models_first()
    result = {"train": cmd_train, "eval": cmd_eval, "logits": cmd_logits, "hf": cmd_hf}[args.command](json.loads(args.spec))
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
