"""maskdiff convert bd3lm: a Lightning checkpoint laid out as BD3-LM's (kuleshov-group/bd3lms) writes one,
``backbone.``-prefixed DiT names (MDLM's), its clipped-schedule buffers ``sampling_eps_min`` /
``sampling_eps_max`` and the EMA under ``ema.shadow_params``, is converted into a block-diffusion model.
Its logits at the x_t positions must equal a per-block computation written here: block b is the MDLM DiT
forward pass over [x_0 of blocks < b, x_t of block b] with block-causal attention (a block sees itself and
the blocks before it), which is BD3-LM's two-stream pass read one block at a time (Arriola et al. 2025)."""
import torch

import maskdiff
from helpers import assert_clean_error, run_main
from maskdiff.convert import convert_bd3lm
from maskdiff.errors import MaskdiffError
from test_convert_mdlm import HEADS, V, mdlm_state_dict, reference_forward

L, BLOCK = 12, 4


def bd3lm_checkpoint(path):
    """A .ckpt as Lightning saves BD3-LM's Diffusion module: the module's own buffers first, then the
    backbone; the EMA (different values, so the test sees which set was taken) in parameter order."""
    raw = mdlm_state_dict(seed=0)
    ema = mdlm_state_dict(seed=1)
    state = {"sampling_eps_min": torch.tensor(1e-3), "sampling_eps_max": torch.tensor(1.0), **raw}
    shadow = [ema[k] for k in raw if not k.endswith("inv_freq")]
    torch.save({"state_dict": state, "ema": {"decay": 0.9999, "num_updates": 40, "shadow_params": shadow},
                "global_step": 40}, str(path))
    return raw, ema


def per_block_reference(sd, x_t, x0):
    """Logits (B, L, V + 1) of the x_t positions, one block at a time."""
    out = []
    for start in range(0, L, BLOCK):
        end = start + BLOCK
        seq = torch.cat([x0[:, :start], x_t[:, start:end]], dim=1)
        blocks = torch.arange(end) // BLOCK
        allowed = blocks[None, :] <= blocks[:, None]  # block-causal
        out.append(reference_forward(sd, seq, torch.zeros(len(seq)), allowed=allowed)[:, start:end])
    return torch.cat(out, dim=1)


@torch.no_grad()
def test_bd3lm_checkpoint_converts_to_block_model_with_per_block_logits(tmp_path):
    _, ema = bd3lm_checkpoint(tmp_path / "last.ckpt")
    out = convert_bd3lm(tmp_path / "last.ckpt", tmp_path / "out", block_size=BLOCK, heads=HEADS, length=L, tokenizer="bytes",
                        allow_pickle=True)
    pipe = maskdiff.from_pretrained(out)
    assert pipe.config.diffusion.objective == "block" and pipe.config.diffusion.block_size == BLOCK
    g = torch.Generator().manual_seed(2)
    x0 = torch.randint(0, V, (3, L), generator=g)
    x_t = torch.where(torch.rand(3, L, generator=g) < 0.5, torch.full_like(x0, V), x0)
    network = pipe.objective.network
    ours = network.two_stream(x_t, x0)
    ref = per_block_reference(ema, x_t, x0)  # the EMA weights are the default
    assert ours.shape == (3, L, V + 1)
    assert float((ours - ref).abs().max()) < 2e-5
    assert float(ref.std()) > 0.5
    # the block sampler's path: a cache of the clean blocks, then one noisy block, gives the same rows
    cache = network.extend_cache(None, x0[:, :BLOCK], 0)
    cache = network.extend_cache(cache, x0[:, BLOCK:2 * BLOCK], BLOCK)
    last = network.cached_logits(cache, x_t[:, 2 * BLOCK:], 2 * BLOCK)
    assert float((last - ours[:, 2 * BLOCK:]).abs().max()) < 2e-5
    whole = network.extend_cache(None, x0[:, :2 * BLOCK], 0)  # two blocks in one call, block-causal among them
    assert float((network.cached_logits(whole, x_t[:, 2 * BLOCK:], 2 * BLOCK) - last).abs().max()) < 2e-5
    samples = pipe.sample(num=2, steps=BLOCK, seed=0)
    assert len(samples.tokens) == 2 and all(len(s) == L for s in samples.tokens)


def test_cli_convert_bd3lm_raw_weights_and_errors(tmp_path):
    raw, _ = bd3lm_checkpoint(tmp_path / "last.ckpt")
    args = ["convert", "bd3lm", str(tmp_path / "last.ckpt"), str(tmp_path / "out"), "--allow-pickle", "--heads", str(HEADS),
            "--length", str(L), "--tokenizer", "bytes", "--raw-weights"]
    done = run_main(*args, "--block-size", str(BLOCK))
    assert done.returncode == 0, done.stderr
    pipe = maskdiff.from_pretrained(tmp_path / "out")
    embedding = pipe.objective.network.vocab_embed.embedding
    assert torch.equal(embedding, raw["backbone.vocab_embed.embedding"])
    assert_clean_error(run_main(*args, "--block-size", "5", "--overwrite"), "must be at least 1 and divide")
    assert_clean_error(run_main(*args[:-1], "--overwrite"), "--block-size")
    try:
        convert_bd3lm(tmp_path / "last.ckpt", tmp_path / "o2", block_size=BLOCK, heads=HEADS, length=L, tokenizer="bytes")
    except MaskdiffError as err:
        assert "--allow-pickle" in str(err)
    else:
        raise AssertionError("a pickle was read without allow_pickle")


def test_a_bd3lm_hugging_face_folder_gives_its_block_size_heads_and_length(tmp_path):
    """BD3-LM's save_pretrained writes config.json (model_type bd3lm, block_size, n_heads, model_length) beside
    the backbone's weights: convert reads them where the flags are left out, and refuses a --block-size that
    contradicts the file."""
    import json

    from safetensors.torch import save_file

    raw = mdlm_state_dict(seed=0)
    folder = tmp_path / "hf"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in raw.items() if not k.endswith("inv_freq")}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "bd3lm", "block_size": BLOCK, "n_heads": HEADS,
                                                    "model_length": L, "time_conditioning": False}))
    done = run_main("convert", "bd3lm", str(folder), str(tmp_path / "out"), "--tokenizer", "bytes")
    assert done.returncode == 0, done.stderr
    pipe = maskdiff.from_pretrained(tmp_path / "out")
    assert (pipe.config.diffusion.block_size, pipe.config.model.heads, pipe.config.data.length) == (BLOCK, HEADS, L)
    assert_clean_error(run_main("convert", "bd3lm", str(folder), str(tmp_path / "o2"), "--tokenizer", "bytes", "--block-size", "6"),
                       "--block-size 6 differs from the block_size 4")
