"""MDLM's reference code, driven for benchmarks/parity.py: runs in the peer harness's virtualenv, never imports maskdiff.

    PYTHONPATH=PEERS/shims:PEERS/refs/mdlm PEERS/.venv/bin/python benchmarks/parity_reference.py train --spec JSON

Every command builds the reference's own ``diffusion.Diffusion`` (its LightningModule: DiT backbone, SUBS
loss, log-linear noise, antithetic t, AdamW and the constant-with-warm-up schedule of its
``configure_optimizers``, its EMA) from its own hydra configs, as peers/mdlm_bench.py does, and uses
Lightning's ``Trainer`` as its ``main.py`` does:

- ``train``: ``Trainer.fit`` on given token windows, in their order, with Lightning's ModelCheckpoint
  writing the reference's own ``.ckpt`` (``backbone.`` keys, the EMA under ``ema``) every few steps; the
  initial weights are written too (``init.safetensors``, ``backbone.`` keys), so that maskdiff can start
  from the same ones;
- ``budget``: ``train`` for a number of CPU seconds of its process instead of a number of steps, with a
  ``.ckpt`` at given fractions of the budget (for benchmarks/parity_compute.py);
- ``eval``: the reference's own evaluation of a ``.ckpt`` (``load_from_checkpoint`` then
  ``Trainer.validate``, which swaps in the EMA weights): its ``val/nll`` in nats per token, once per seed;
- ``logits``: the backbone's raw logits (and the SUBS log-probabilities of ``Diffusion.forward``) on given
  inputs, with the EMA or the raw weights of a ``.ckpt``;
- ``hf``: the backbone written by its Hugging Face mixin (``DIT.save_pretrained``: ``model.safetensors``
  and ``config.json``), with the EMA weights.

What is adapted (no reference file is edited): the harness's CPU shims (flash-attn through SDPA); a byte
tokenizer object (vocabulary 256, no mask token: the reference appends the mask, id 256); the GPT-2
tokenizer download in ``Diffusion.__init__`` is skipped (it is for generative perplexity only); the data
loader's shuffling sampler is replaced by a sequential one so that step k trains on the given windows
k B .. (k + 1) B - 1; ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` lets Lightning 2.2 read its own checkpoints
under PyTorch >= 2.6.
"""
import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
RESULT_TAG = "PARITY_REFERENCE_RESULT "


class ByteTokenizer:
    """The only tokenizer fields Diffusion reads: no mask token, so the mask is id vocab_size."""

    def __init__(self, vocab_size=256):
        self.vocab_size = vocab_size
        self.mask_token = None
        self.pad_token_id = self.bos_token_id = self.eos_token_id = 0

    def batch_decode(self, rows):
        return [bytes(int(i) for i in r if int(i) < 256).decode("utf-8", errors="replace") for r in rows]


class _NoTokenizer:
    pad_token = None
    eos_token = "<eos>"
    pad_token_id = None
    eos_token_id = 0


def mdlm_overrides(spec):
    """MDLM's hydra overrides for this run's sizes and settings."""
    return [
        "model=tiny", "noise=loglinear", "parameterization=subs", "backbone=dit", "T=0", "time_conditioning=False",
        "trainer.devices=1", "trainer.accelerator=cpu", "trainer.precision=32", "loader.num_workers=1",
        f"model.hidden_size={spec['width']}", f"model.cond_dim={spec['cond_dim']}", f"model.length={spec['length']}",
        f"model.n_blocks={spec['depth']}", f"model.n_heads={spec['heads']}", f"model.dropout={spec['dropout']}",
        f"training.ema={spec['ema']}", f"optim.lr={spec['lr']}", f"lr_scheduler.num_warmup_steps={spec['warmup']}",
        f"loader.global_batch_size={spec['batch']}", "eval.generate_samples=False",
    ]


def reference_config(spec, overrides=None):
    """The reference's hydra config (its configs/config.yaml) with ``overrides`` (default: MDLM's,
    :func:`mdlm_overrides`); the reference is the ``diffusion`` module on the path (MDLM's, or BD3-LM's for
    parity_bd3lm_reference.py, which shares this driver's pieces)."""
    import hydra
    import omegaconf
    import torch

    for name, fn in [("cwd", os.getcwd), ("device_count", torch.cuda.device_count), ("eval", eval),
                     ("div_up", lambda x, y: (x + y - 1) // y)]:
        if not omegaconf.OmegaConf.has_resolver(name):
            omegaconf.OmegaConf.register_new_resolver(name, fn)
    ref = os.path.dirname(os.path.abspath(__import__("diffusion").__file__))
    with hydra.initialize_config_dir(config_dir=os.path.join(ref, "configs"), version_base=None):
        return hydra.compose(config_name="config", overrides=overrides or mdlm_overrides(spec))


def _no_download():
    import transformers

    orig = transformers.AutoTokenizer.from_pretrained
    transformers.AutoTokenizer.from_pretrained = lambda *a, **k: _NoTokenizer()
    return lambda: setattr(transformers.AutoTokenizer, "from_pretrained", orig)


def build(spec, overrides=None):
    import diffusion

    config = reference_config(spec, overrides)
    restore = _no_download()
    try:
        return diffusion.Diffusion(config, tokenizer=ByteTokenizer(spec["vocab"])), config
    finally:
        restore()


def load(spec, ckpt, overrides=None):
    import diffusion

    config = reference_config(spec, overrides)
    restore = _no_download()
    try:
        return diffusion.Diffusion.load_from_checkpoint(ckpt, tokenizer=ByteTokenizer(spec["vocab"]), config=config,
                                                        map_location="cpu"), config
    finally:
        restore()


class Windows:
    """A map-style dataset over rows of a (N, L) array, as the reference's loaders yield them."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        import torch

        x = torch.as_tensor(self.rows[i].astype("int64"))
        return {"input_ids": x, "attention_mask": torch.ones_like(x)}


def loader(rows, batch):
    import torch

    return torch.utils.data.DataLoader(Windows(rows), batch_size=batch, shuffle=False, num_workers=0)


def trainer(**kwargs):
    import lightning as L

    return L.Trainer(accelerator="cpu", devices=1, precision="32", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kwargs)


def start_run(spec, overrides=None):
    """Torch threads and the seed set, then the reference's module built (its initial weights follow the seed)
    and the output folder made: (model, config). ``overrides``: as :func:`reference_config`."""
    import lightning as L
    import torch

    torch.set_num_threads(spec["threads"])
    L.seed_everything(spec["seed"], workers=True)
    model, config = build(spec, overrides)
    os.makedirs(spec["out"], exist_ok=True)
    return model, config


def keep_window_order():
    """Diffusion.on_train_start rebuilds the loader with a shuffling sampler; keep the given order instead."""
    import torch

    import dataloader

    dataloader.RandomFaultTolerantSampler = lambda dataset, **kw: torch.utils.data.SequentialSampler(dataset)


def fit_windows(spec, model, config):
    """``Trainer.fit`` on the first steps x batch windows in their order, Lightning's ModelCheckpoint writing
    the reference's own ``.ckpt`` every ``spec['every']`` steps; the losses and seconds of every step."""
    import lightning as L
    import numpy as np

    rows = np.load(spec["windows"])
    assert rows.shape[0] >= spec["steps"] * spec["batch"], rows.shape
    keep_window_order()
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=spec["out"], filename="step{step}", save_top_k=-1,
                                               every_n_train_steps=spec["every"], auto_insert_metric_name=False)
    losses, seconds = [], []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seconds.append(time.perf_counter())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))
            seconds[-1] = time.perf_counter() - seconds[-1]

    fit = trainer(max_steps=spec["steps"], gradient_clip_val=config.trainer.gradient_clip_val, limit_val_batches=0,
                  callbacks=[ckpt, Record()])
    fit.fit(model, loader(rows[: spec["steps"] * spec["batch"]], spec["batch"]))
    return {"losses": losses, "seconds_per_step": seconds, "checkpoints": sorted(os.listdir(spec["out"])),
            "backbone_parameters": sum(p.numel() for p in model.backbone.parameters())}


def cmd_train(spec):
    from safetensors.torch import save_file

    model, config = start_run(spec)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(spec["out"], "init.safetensors"))
    return fit_windows(spec, model, config)


def cmd_budget(spec):
    """``train`` on a budget of CPU seconds of this process (user + system, counted from the first step), with
    Lightning's own checkpoint at each fraction of it; the run stops at the last."""
    import resource

    import lightning as L
    import numpy as np

    model, config = start_run(spec)
    rows = np.load(spec["windows"])
    keep_window_order()
    cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])  # noqa: E731
    pending, marks, start = sorted(spec["fractions"]), [], []

    class Budget(L.Callback):
        def on_train_start(self, trainer, module):
            start.append(cpu())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            used = cpu() - start[0]
            while pending and used >= pending[0] * spec["budget"]:
                path = os.path.join(spec["out"], f"budget{len(marks)}.ckpt")
                trainer.save_checkpoint(path)
                marks.append({"fraction": pending.pop(0), "step": trainer.global_step, "cpu_seconds": used, "ckpt": path,
                              "loss": float(outputs["loss"])})
            trainer.should_stop = not pending

    fit = trainer(max_steps=len(rows) // spec["batch"], gradient_clip_val=config.trainer.gradient_clip_val, limit_val_batches=0,
                  callbacks=[Budget()], enable_checkpointing=False)
    fit.fit(model, loader(rows, spec["batch"]))
    if pending:
        raise SystemExit(f"the windows ran out at step {fit.global_step} before the budget: write more")
    return {"marks": marks, "backbone_parameters": sum(p.numel() for p in model.backbone.parameters())}


def validate_seeds(spec, ckpt, overrides=None, extra=lambda model: {}):
    """The reference's own evaluation of ``ckpt`` (``load_from_checkpoint`` then ``Trainer.validate``, which swaps
    in the EMA) once per seed of ``spec['eval_seeds']``: its ``val/nll`` and every batch's, plus ``extra(model)``."""
    import lightning as L
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    rows = np.load(spec["val"])
    runs = []
    for seed in spec["eval_seeds"]:
        model, _ = load(spec, ckpt, overrides)
        L.seed_everything(seed)
        batches = []

        class Record(L.Callback):
            def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
                batches.append(float(outputs))

        (metrics,) = trainer(callbacks=[Record()]).validate(model, loader(rows, spec["eval_batch"]), verbose=False)
        runs.append({"seed": seed, "val_nll": float(metrics["val/nll"]), "batch_nll": batches, **extra(model)})
    return runs


def cmd_eval(spec):
    return {"runs": [{"ckpt": ckpt, "runs": validate_seeds(spec, ckpt)} for ckpt in spec["ckpts"]]}


def cmd_logits(spec):
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    model, _ = load(spec, spec["ckpt"])
    if spec["weights"] == "ema":
        model.ema.copy_to(model.backbone.parameters())
    model.eval()
    x = torch.as_tensor(np.load(spec["inputs"]).astype("int64"))
    with torch.no_grad():
        sigma = torch.zeros(x.shape[0])
        raw = model.backbone(x, sigma)
        subs = model.forward(x, sigma)
    np.save(spec["out"] + ".raw.npy", raw.float().numpy())
    np.save(spec["out"] + ".subs.npy", subs.float().numpy())
    return {"shape": list(raw.shape), "dtype": str(raw.dtype)}


def cmd_hf(spec):
    model, _ = load(spec, spec["ckpt"])
    model.ema.copy_to(model.backbone.parameters())
    model.backbone.save_pretrained(spec["out"])
    return {"files": sorted(os.listdir(spec["out"]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "budget", "eval", "logits", "hf"])
    p.add_argument("--spec", required=True, help="JSON object of settings (see benchmarks/parity.py)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    result = {"train": cmd_train, "budget": cmd_budget, "eval": cmd_eval, "logits": cmd_logits, "hf": cmd_hf}[args.command](json.loads(args.spec))
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
