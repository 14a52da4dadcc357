"""Large-vocabulary training paths: logits at masked positions only, padding that changes nothing,
and BPE runs end to end through the command line (train, eval, sample, zero-shot, data)."""
import json
import math

import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, run_cli, run_main
from maskdiff.data.corpora import shakespeare_dir
from maskdiff.denoiser import SUBSDenoiser
from maskdiff.loss import continuous_diffusion_term, discrete_diffusion_term, nelbo
from maskdiff.networks.transformer import DiT
from maskdiff.schedules import get_schedule


def random_denoiser(V, L, *, time_conditioned=False, seed=0):
    """A small DiT with every weight random (the zero-initialised output layer would make mu uniform
    and every comparison below trivially true)."""
    torch.manual_seed(seed)
    net = DiT(V, L, width=32, depth=2, heads=2, cond_dim=16, time_conditioned=time_conditioned)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    return SUBSDenoiser(net, V, time_conditioned=time_conditioned, max_length=L)


@pytest.mark.parametrize("time_conditioned", [False, True])
def test_masked_only_logits_give_the_same_loss_and_gradients(time_conditioned):
    V, L, B = 300, 24, 6
    denoise = random_denoiser(V, L, time_conditioned=time_conditioned)
    schedule = get_schedule("cosine")
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (B, L), generator=g)
    t = torch.rand(B, generator=g) * 0.98 + 0.01
    noise = torch.rand(B, L, generator=g, dtype=torch.float64)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, 15:] = False  # padding as well, so both paths honour it
    results = []
    for masked_only in (False, True):
        denoise.zero_grad()
        per_seq = continuous_diffusion_term(denoise, x0, t, schedule, noise=noise, valid=valid, masked_only=masked_only)
        per_seq.sum().backward()
        results.append((per_seq.detach(), {n: p.grad.clone() for n, p in denoise.named_parameters()}))
    (full, g_full), (sparse, g_sparse) = results
    assert full.abs().min() > 1.0  # a real loss, not zeros
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-5)
    for name, grad in g_full.items():  # equal up to float32 summation order
        assert float((g_sparse[name] - grad).abs().max()) <= 1e-5 * float(grad.abs().max()), name
    assert float(g_full["network.head.weight"].abs().max()) > 0.1
    step = torch.randint(1, 11, (B,), generator=g)
    a = discrete_diffusion_term(denoise, x0, step, 10, schedule, noise=noise, masked_only=False)
    b = discrete_diffusion_term(denoise, x0, step, 10, schedule, noise=noise, masked_only=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_masked_only_logits_in_the_full_nelbo():
    V, L = 50, 16
    denoise = random_denoiser(V, L)
    x0 = torch.randint(0, V, (4, L), generator=torch.Generator().manual_seed(0))
    t = torch.full((4,), 0.4)
    runs = [nelbo(denoise, x0, t, get_schedule("loglinear"), torch.Generator().manual_seed(3), masked_only=m) for m in (False, True)]
    torch.testing.assert_close(runs[0].total, runs[1].total, rtol=1e-5, atol=1e-5)
    assert float(runs[0].diffusion.detach().min()) > 1.0 and float(runs[0].prior.sum()) > 0.0


def test_padding_does_not_change_the_loss():
    """A row padded from 11 to 16 tokens has the loss of the 11-token row, with the same t and mask
    uniforms; without telling the network about the padding it would not."""
    V, L, n = 40, 16, 11
    denoise = random_denoiser(V, L)
    schedule = get_schedule("linear")
    g = torch.Generator().manual_seed(2)
    short = torch.randint(0, V, (3, n), generator=g)
    padded = torch.cat([short, torch.full((3, L - n), 7)], dim=1)
    valid = torch.zeros(3, L, dtype=torch.bool)
    valid[:, :n] = True
    noise = torch.rand(3, L, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9])
    for masked_only in (False, True):
        alone = continuous_diffusion_term(denoise, short, t, schedule, noise=noise[:, :n], masked_only=masked_only)
        inside = continuous_diffusion_term(denoise, padded, t, schedule, noise=noise, valid=valid, masked_only=masked_only)
        torch.testing.assert_close(inside, alone, rtol=1e-5, atol=1e-5)
    x_t = padded.clone()
    x_t[:, :4] = V  # the same check at the network's output: real positions see no padding
    logits_short = denoise(x_t[:, :n], t)
    torch.testing.assert_close(denoise(x_t, t, valid=valid)[:, :n], logits_short, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(denoise(x_t, t)[:, :n], logits_short, atol=1e-3)  # attending to padding changes it


@pytest.fixture()
def corpus_file(tmp_path, monkeypatch):
    """Three plays from the Shakespeare package as one text file, and a private token cache."""
    monkeypatch.setenv("MASKDIFF_HOME", str(tmp_path / "home"))
    root = shakespeare_dir()
    text = "".join((root / f"{name}.txt").read_text(encoding="utf-8") for name in ("macbeth_gut", "sonnets_gut", "julius_caesar_gut"))
    path = tmp_path / "plays.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_bpe_train_eval_sample_and_zero_shot_end_to_end(tmp_path, corpus_file):
    run = tmp_path / "bpe"
    flags = [*MICRO_FLAGS, "--corpus", corpus_file, "--tokenizer", "gpt2", "--masked-logits"]
    proc = run_cli("train", "--run-dir", run, "--steps", "3", *flags)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "tokenizer.json").read_text())["name"] == "gpt2"
    assert len(list((tmp_path / "home" / "tokens").iterdir())) == 1  # the train split was cached
    out = tmp_path / "eval.json"
    proc = run_cli("eval", run, "--limit", "6", "--no-progress", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "PPL <=" in proc.stdout and "tokens in 6 sequences" in proc.stdout
    record = json.loads(out.read_text())
    lo, hi = record["perplexity_ci95"]
    assert lo <= record["perplexity_bound"] <= hi
    # The untrained model (zero output layer) is uniform over GPT-2's 50,257 tokens: PPL 50,257 exactly. Three
    # Adam steps move every logit a little (measured 97,467: unseen tokens were pushed down), so the bound is
    # within a factor e of it; a figure in the wrong unit (2^nats: 2,876; e^bits: 1.6e7) or per sequence is not.
    assert abs(math.log(record["perplexity_bound"]) - math.log(50257)) < 1.0, record
    assert record["perplexity_bound"] == pytest.approx(math.exp(record["nats_per_token"]), rel=1e-12)
    assert record["bits_per_token"] == pytest.approx(record["nats_per_token"] / math.log(2), rel=1e-12)
    # and it is the library's NELBO of the first 6 rows of the validation split (the same seed: the same draws)
    import maskdiff
    from maskdiff.modalities import eval_chunks

    pipe = maskdiff.load(run)
    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation", None)
    lib = pipe.evaluate(tokens[:6], valid[:6], seed=0)
    assert record["tokens"] == int(lib.tokens.sum()) == 6 * 32
    assert record["nats_per_token"] == pytest.approx(lib.nats_per_token, rel=1e-9)

    proc = run_cli("sample", run, "--num", "2", "--steps", "8", "--no-progress", "--out", tmp_path / "s.txt")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "s.txt").read_text().strip()) > 0

    other = tmp_path / "other.txt"
    other.write_text("The quick brown fox jumps over the lazy dog. " * 400, encoding="utf-8")
    proc = run_cli("zero-shot", run, "--corpora", f"{corpus_file},{other},brown", "--limit", "3", "--no-progress", "--json", tmp_path / "z.json")
    assert proc.returncode == 0, proc.stderr
    assert "| corpus |" in proc.stdout and "bpe (gpt2)" in proc.stdout
    assert f"| {other} | <= " in proc.stdout and "| brown | n/a |" in proc.stdout
    assert "maskdiff data fetch brown" in proc.stdout  # the absent corpus says how to get it
    cells = json.loads((tmp_path / "z.json").read_text())[0]["cells"]
    assert set(cells) == {str(corpus_file), str(other)}


@pytest.mark.slow
def test_pad_packing_trains_and_evaluates(tmp_path, corpus_file):
    run = tmp_path / "pad"
    proc = run_cli("train", "--run-dir", run, "--steps", "2", *MICRO_FLAGS, "--corpus", corpus_file, "--tokenizer", "bytes", "--packing", "pad")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("eval", run, "--limit", "4", "--unit", "BPT", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "BPT <=" in proc.stdout
    assert "includes -log p(length)" in proc.stdout  # the bound is of -log p(x): the row length is charged


def test_data_and_zero_shot_commands_explain_and_fail_cleanly(tmp_path):
    """In this process (run_main): help, the catalog, and errors that come before any work."""
    for command in (["data"], ["data", "fetch"], ["zero-shot"]):
        proc = run_main(*command, "--help")
        assert proc.returncode == 0 and "usage: maskdiff" in proc.stdout, proc.stderr
    proc = run_main("data", "list")
    assert proc.returncode == 0, proc.stderr
    for name in ("shakespeare", "linux-doc", "python-doc", "brown", "wiki", "gpt2", "bert"):
        assert name in proc.stdout
    assert_clean_error(run_main("data", "fetch", "cifar"), "unknown corpus 'cifar'", "linux-doc")
    assert_clean_error(run_main("train", "--tokenizer", "gtp2", "--run-dir", tmp_path / "r", *MICRO_FLAGS), "unknown tokenizer 'gtp2'", "gpt2")
    assert_clean_error(run_main("train", "--packing", "pack", "--run-dir", tmp_path / "r", *MICRO_FLAGS), "unknown packing 'pack'", "wrap, pad")


@pytest.mark.slow
def test_padded_rows_resume_bit_identically(tmp_path, corpus_file):
    """Row draws of the pad packing come from the step's generator: 6 steps == 3 + resume + 3."""
    from helpers import micro_config
    from maskdiff.checkpoint import list_checkpoints, read_tensors
    from maskdiff.train import train

    cfg = micro_config(steps=6, micro_batch_size=2)
    cfg.data.corpus, cfg.data.tokenizer, cfg.data.packing = str(corpus_file), "bytes", "pad"
    cfg.model.masked_logits = True
    train(cfg, tmp_path / "a", progress=False)
    assert train(cfg, tmp_path / "b", progress=False, stop_after=3).step == 3
    assert train(cfg, tmp_path / "b", progress=False).resumed_from == 3
    a, b = (read_tensors(list_checkpoints(tmp_path / r)[-1] / "model.safetensors") for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.head.weight"], torch.zeros_like(a["model.head.weight"]))
