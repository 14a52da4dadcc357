"""MD4's reference code (JAX), driven for benchmarks/parity_md4.py: runs in the peer harness's JAX virtualenv
(``.venv-jax``), never imports maskdiff.

    PYTHONPATH=PEERS/refs/md4 PEERS/.venv-jax/bin/python benchmarks/parity_md4_reference.py train --spec JSON

Every command builds MD4's own model from its own text8 configuration (``md4/configs/md4/text8.py``) with
the sizes of the spec put in (layers, heads, feature_dim, sequence length, vocabulary, batch, learning rate,
warm-up and steps), through ``md4.models.utils.get_model`` and ``md4.train.create_train_state`` (MD4's
parameters, optax's AdamW in MD4's chain, the EMA copy), as ``md4.train.train_and_evaluate`` does:

- ``train``: initialises (the random key split as in ``train_and_evaluate``: PRNGKey(seed), one split
  for the data seed, one for the model), writes the initial parameters (``init.npz``: the flax paths joined
  by '/'), then runs MD4's ``train_step`` (``jax.pmap`` over the one CPU device, as ``train_and_evaluate``)
  on the given token windows in their order, step k on rows k B .. (k + 1) B - 1, with MD4's learning-rate
  function (``get_learning_rate``: linear warm-up from 0, cosine to 0 at the last step) and EMA rate;
  every ``every`` steps it writes ``step{k}.npz`` (parameters) and ``step{k}_ema.npz``; with ``noise_seed``
  the step key starts from PRNGKey(noise_seed) instead (the same initial weights and windows, other t and masks);
- ``logits``: the classifier's logits (``MD4.predict_x``, i.e. ``DiscreteClassifier``) of given inputs at
  given times, from an .npz of parameters;
- ``eval``: MD4's own loss (``MD4.__call__`` with ``train=False``: its antithetic t, its masks, the
  reconstruction term) in bits per token on given rows, averaged over batches and repeats with keys
  derived from given seeds;
- ``grad``: the gradient of MD4's training loss at given x, t and masks (its ``forward_sample`` replaced by
  the given masks), written as an .npz of flax paths.

What is adapted, no reference file edited: ``md4.train`` imports its TF / grain input pipelines and clu's
TensorBoard writers at module level; stand-in modules take their place in ``sys.modules`` (the harness's
md4_bench.py does the same). XLA is held to one thread by the caller (XLA_FLAGS).
"""
import argparse
import functools
import importlib.util
import json
import os
import sys
import time
import types

RESULT_TAG = "PARITY_REFERENCE_RESULT "  # the tag parity.Reference reads


def _stub_imports():
    stubs = ["md4.input_pipeline", "md4.input_pipeline_v2"]
    if importlib.util.find_spec("tensorflow") is None:
        stubs.append("clu.metric_writers")
    for name in stubs:
        sys.modules.setdefault(name, types.ModuleType(name))
    if "clu.metric_writers" in stubs:
        sys.modules["clu.metric_writers"].MetricWriter = type("MetricWriter", (), {})
    try:
        import grain.python  # noqa: F401
    except Exception:
        g = types.ModuleType("grain")
        g.python = types.ModuleType("grain.python")
        g.python.__getattr__ = lambda attr: type(attr, (), {})
        sys.modules.setdefault("grain", g)
        sys.modules.setdefault("grain.python", g.python)


def reference_config(spec):
    """MD4's text8 config with the spec's sizes and settings."""
    import md4

    path = os.path.join(os.path.dirname(md4.__file__), "configs", "md4", "text8.py")
    module_spec = importlib.util.spec_from_file_location("md4_text8_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config()
    config.vocab_size = spec["vocab"]
    config.data_shape = (spec["length"],)
    config.n_layers = spec["depth"]
    config.num_heads = spec["heads"]
    config.feature_dim = spec["feature_dim"]
    config.batch_size = spec["batch"]
    config.learning_rate = spec["lr"]
    config.warmup_steps = spec["warmup"]
    config.num_train_steps = spec["steps"]
    config.ema_rate = spec["ema"]
    config.seed = spec["seed"]
    return config


def build(spec):
    """(model, optimizer, train state, metrics class, lr function, config), as train_and_evaluate builds them."""
    import jax
    from md4 import train

    config = reference_config(spec)
    schedule_fn = functools.partial(train.get_learning_rate, base_learning_rate=config.learning_rate,
                                    num_steps=config.num_train_steps, warmup_steps=config.warmup_steps,
                                    schedule_type=config.learning_rate_schedule)
    rng = jax.random.PRNGKey(config.seed)
    rng, _data_seed = jax.random.split(rng)
    rng, model_rng = jax.random.split(rng)
    model, optimizer, state, metrics_class = train.create_train_state(
        config, model_rng, input_shape=(config.batch_size,) + tuple(config.data_shape), schedule_fn=schedule_fn)
    return model, optimizer, state, metrics_class, schedule_fn, config


def save_tree(tree, path):
    import numpy as np
    from flax import traverse_util

    flat = traverse_util.flatten_dict(tree, sep="/")
    np.savez(path, **{k: np.asarray(v, dtype=np.float32) for k, v in flat.items()})


def load_tree(path):
    import jax.numpy as jnp
    import numpy as np
    from flax import traverse_util

    with np.load(path) as npz:
        return traverse_util.unflatten_dict({k: jnp.asarray(npz[k]) for k in npz.files}, sep="/")


def cmd_train(spec):
    import flax.jax_utils as flax_utils
    import jax
    import jax.numpy as jnp
    import numpy as np
    from md4 import train

    model, optimizer, state, metrics_class, schedule_fn, config = build(spec)
    if spec.get("noise_seed") is not None:  # the same initial weights, other draws of t and masks (a control run)
        state = state.replace(rng=jax.random.PRNGKey(spec["noise_seed"]))
    os.makedirs(spec["out"], exist_ok=True)
    save_tree(state.params, os.path.join(spec["out"], "init.npz"))
    rows = np.load(spec["windows"]).astype(np.int32)
    B = spec["batch"]
    assert rows.shape[0] >= spec["steps"] * B, rows.shape
    step_fn = jax.pmap(functools.partial(train.train_step, model=model, optimizer=optimizer, train_metrics_class=metrics_class,
                                         learning_rate_fn=schedule_fn, ema_rate=config.ema_rate,
                                         num_microbatches=config.get("num_microbatches", None)),
                       axis_name="batch", donate_argnums=(0,))
    state = flax_utils.replicate(state)
    losses, seconds, lrs = [], [], []
    for k in range(spec["steps"]):
        batch = {"text": jnp.asarray(rows[k * B:(k + 1) * B][None])}
        t0 = time.perf_counter()
        state, metrics = step_fn(train_state=state, batch=batch)
        computed = flax_utils.unreplicate(metrics).compute()
        losses.append(float(computed["loss"]))
        lrs.append(float(computed["learning_rate"]))
        seconds.append(time.perf_counter() - t0)
        if (k + 1) % spec["every"] == 0:
            one = flax_utils.unreplicate(state)
            save_tree(one.params, os.path.join(spec["out"], f"step{k + 1}.npz"))
            save_tree(one.ema_params, os.path.join(spec["out"], f"step{k + 1}_ema.npz"))
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(flax_utils.unreplicate(state).params))
    return {"losses_bits_per_token": losses, "learning_rates": lrs, "seconds_per_step": seconds, "parameters": n_params,
            "checkpoints": sorted(os.listdir(spec["out"]))}


def cmd_logits(spec):
    import jax.numpy as jnp
    import numpy as np

    model, _, _, _, _, _ = build(spec)
    params = load_tree(spec["params"])
    x = jnp.asarray(np.load(spec["inputs"]).astype(np.int32))
    out = {}
    for t in spec["times"]:
        logits, _ = model.apply({"params": params}, x, jnp.full((x.shape[0],), t, dtype=jnp.float32), method=model.predict_x)
        out[str(t)] = np.asarray(logits)
    np.savez(spec["out"], **out)
    return {"shape": list(out[str(spec["times"][0])].shape), "times": spec["times"]}


def cmd_grad(spec):
    """The gradient of MD4's own training loss (``MD4.diffusion_loss``, averaged and scaled to bits per token as
    ``MD4.__call__`` does) at given x, t and masks: ``MD4.forward_sample`` is replaced, in this process only,
    by the given masks (the rest of the loss is the reference's code)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from md4.models.diffusion import md4 as md4_model

    model, _, _, _, _, _ = build(spec)
    params = load_tree(spec["params"])
    x = jnp.asarray(np.load(spec["x"]).astype(np.int32))
    t = jnp.asarray(np.load(spec["t"]).astype(np.float32))
    mask = jnp.asarray(np.load(spec["mask"]))
    md4_model.MD4.forward_sample = lambda self, x0, t0: jnp.where(mask, self.vocab_size, x0)

    def loss(p):
        per_row = model.apply({"params": p}, t, x, train=True, method=md4_model.MD4.diffusion_loss)
        return per_row.mean() / (x.shape[1] * jnp.log(2.0))

    value, grads = jax.value_and_grad(loss)(params)
    save_tree(grads, spec["out"])
    return {"loss_bits_per_token": float(value)}


def cmd_eval(spec):
    import jax
    import jax.numpy as jnp
    import numpy as np

    model, _, _, _, _, _ = build(spec)
    rows = np.load(spec["val"]).astype(np.int32)
    B = spec["eval_batch"]
    apply = jax.jit(lambda params, x, rng: model.apply({"params": params}, x, train=False, rngs={"sample": rng})["loss"])
    out = []
    for path in spec["params"]:
        params = load_tree(path)
        per_seed = []
        for seed in spec["eval_seeds"]:
            rng = jax.random.PRNGKey(seed)
            values = []
            for start in range(0, len(rows) - B + 1, B):
                rng, sub = jax.random.split(rng)
                values.append(float(apply(params, jnp.asarray(rows[start:start + B]), sub)))
            per_seed.append(float(np.mean(values)))
        out.append({"params": path, "bits_per_token": per_seed})
    return {"runs": out}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["train", "logits", "eval", "grad"])
    p.add_argument("--spec", required=True, help="JSON object of settings (see benchmarks/parity_md4.py)")
    args = p.parse_args(argv)
    _stub_imports()
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    result = {"train": cmd_train, "logits": cmd_logits, "eval": cmd_eval, "grad": cmd_grad}[args.command](json.loads(args.spec))
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
