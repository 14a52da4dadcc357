"""Model folders in and out (save_pretrained / from_pretrained / maskdiff export), the generate API, and a
Hugging Face masked LM as the network: its mask handling, SUBS on top, the exact toy identities of
docs/math.md through a tiny randomly initialised BERT, every objective and sampler, and the real
all-MiniLM-L6-v2 weights."""
import json
import math

import pytest
import torch
from scipy.stats import chisquare

import maskdiff
from helpers import MICRO_FLAGS, TINY_BERT, assert_clean_error, bert_pipeline, micro_config, run_cli
from maskdiff.denoiser import SUBSDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.exact import autoregressive_order_nll, chain_law, empirical_law, enumerate_sequences, exact_nelbo
from maskdiff.loss import continuous_diffusion_term
from maskdiff.networks.masked_lm import HFMaskedLM
from maskdiff.objectives import build_objective
from maskdiff.modalities import build_tokenizer
from maskdiff.pipeline import Pipeline
from maskdiff.sampling import cached_sample
from maskdiff.schedules import get_schedule

import transformers  # noqa: E402 (make test installs it: a missing one fails)

# A tiny BERT over 4 ids where id 3 is its [MASK]: the real tokens are 0, 1, 2 (V = 3 as the exact tests)
# and maskdiff's mask id is 4. A large init spread makes mu far from uniform and context-dependent.
V_HF, L = 4, 3


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    net = HFMaskedLM.from_config(TINY_BERT).eval()
    return net, SUBSDenoiser(net, V_HF, max_length=8)


def real_sequences():
    """Every sequence of the 3 real tokens, L = 3 (27 of them)."""
    return enumerate_sequences(3, L)


# ------------------------------------------------------------------------------------------------
# the masked-LM wrapper: mask handling and SUBS

@torch.no_grad()
def test_mask_id_is_translated_and_never_predicted(bert):
    net, den = bert
    x = torch.tensor([[4, 1, 4], [0, 4, 2]])  # maskdiff's mask is id 4
    log_mu = den(x, torch.full((2,), 0.5))
    hf = torch.where(x == 4, 3, x)  # the same inputs with BERT's own [MASK]
    raw = net.model(input_ids=hf).logits
    expect = torch.log_softmax(raw[..., :3], -1)
    masked = x == 4
    assert torch.allclose(log_mu[masked][:, :3], expect[masked], atol=1e-6)
    assert torch.all(log_mu[..., 3] == -torch.inf)  # the absorbing state is never a clean token
    assert torch.all(log_mu[~masked].argmax(-1) == x[~masked]) and torch.all(log_mu[~masked].max(-1).values == 0)  # carry-over
    assert torch.allclose(den.masked_log_probs(x, torch.full((2,), 0.5), masked), log_mu[masked])
    assert float((log_mu[0, 0] - log_mu[0, 2]).abs()[:3].max()) > 0.1  # not uniform, position-dependent


@torch.no_grad()
def test_padding_is_not_attended_to(bert):
    _, den = bert
    x = torch.tensor([[4, 1, 4, 0, 0]])
    valid = torch.tensor([[True, True, True, False, False]])
    padded = den(x, torch.zeros(1), valid=valid)[:, :3]
    alone = den(x[:, :3], torch.zeros(1))
    assert torch.allclose(padded, alone, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the exact toy identities of docs/math.md through the tiny BERT

@torch.no_grad()
def test_order_identity_through_bert(bert):
    """A masked LM is time-independent, so its NELBO is the average over all L! orders of its
    autoregressive NLL (MD4 Sec. 3). Enumeration and quadrature, no Monte Carlo."""
    _, den = bert
    x = real_sequences()
    value = exact_nelbo(den, x, get_schedule("linear"))
    orders = autoregressive_order_nll(den, x)
    assert torch.allclose(value, orders, rtol=0, atol=1e-5), (value - orders).abs().max()  # float32 network outputs
    # and it is a bound of a proper distribution over the 27 sequences: sum_x exp(-NELBO) <= 1
    assert float(torch.exp(-value).sum()) <= 1.0 + 1e-6


@torch.no_grad()
def test_training_loss_is_unbiased_through_bert(bert):
    """The Monte-Carlo training loss (uniform t, random masks) averages to the exact NELBO."""
    _, den = bert
    x0 = torch.tensor([[0, 2, 1]])
    exact = float(exact_nelbo(den, x0, get_schedule("linear"), t_min=1e-3, terms=True)["diffusion"][0])
    n = 20000
    g = torch.Generator().manual_seed(0)
    t = 1e-3 + (1 - 1e-3) * torch.rand(n, generator=g)
    est = continuous_diffusion_term(den, x0.repeat(n, 1), t, get_schedule("linear"), g, t_min=1e-3).double()
    se = float(est.std()) / math.sqrt(n)
    assert abs(float(est.mean()) - exact) < 4 * se, (float(est.mean()), exact, se)


@torch.no_grad()
def test_cached_sampler_follows_the_exact_chain_law_through_bert(bert):
    _, den = bert
    sched = get_schedule("linear")
    law = chain_law(den, sched, L, 4)
    out = cached_sample(den, sched, (20000, L), steps=4, generator=torch.Generator().manual_seed(0))
    counts = empirical_law(out.tokens, V_HF).double()
    assert counts[law == 0].sum() == 0  # no [MASK] token, nothing of probability 0
    keep = law > 1e-4
    obs, exp = counts[keep], law[keep] * counts.sum()
    obs, exp = torch.cat([obs, (counts.sum() - obs.sum())[None]]), torch.cat([exp, (counts.sum() - exp.sum())[None]])
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3
    one_step = chain_law(den, sched, L, 1)  # the test has power: one step draws the positions independently
    exp1 = torch.cat([one_step[keep] * counts.sum(), (counts.sum() * (1 - one_step[keep].sum()))[None]])
    assert chisquare(obs.numpy(), exp1.numpy() * float(obs.sum() / exp1.sum())).pvalue < 1e-6


@pytest.mark.parametrize("sampler", ["ancestral", "cached", "mean", "greedy", "first-hitting", "confidence"])
@torch.no_grad()
def test_every_sampler_draws_real_tokens_through_bert(bert, sampler):
    from maskdiff.sampling import SAMPLERS, get_sampler

    assert set(SAMPLERS) >= {"ancestral", "cached", "mean", "greedy", "first-hitting", "confidence"}
    _, den = bert
    out = get_sampler(sampler)(den, get_schedule("linear"), (64, 5), steps=8, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (64, 5) and bool((out.tokens < 3).all())  # neither [MASK] (3) nor maskdiff's mask (4)


def tiny_hf_config(objective: str):
    cfg = micro_config()
    cfg.model.backbone, cfg.model.hf_config = "hf", dict(TINY_BERT)
    cfg.data.length, cfg.diffusion.objective = L, objective
    return cfg


def dependent_law() -> torch.Tensor:
    """Dirichlet(0.3) weights over the 27 sequences of real_sequences(): strong dependencies between positions."""
    torch.manual_seed(0)
    weights = torch._standard_gamma(torch.full((27,), 0.3))
    return weights / weights.sum()


@pytest.mark.parametrize("objective", ["masked", "genmd4", "sedd"])
def test_every_diffusion_objective_trains_through_bert(objective):
    """150 Adam steps on draws of a dependent law over 27 sequences lower the bound on held-out draws (the
    same noise before and after) by more than a nat, and below log 27 = 3.30 nats, a uniform model's."""
    from maskdiff.validation import validate_config

    cfg = tiny_hf_config(objective)
    validate_config(cfg)
    torch.manual_seed(0)
    obj = build_objective(cfg, V_HF)
    law, sequences = dependent_law(), real_sequences()

    def draw(n: int, seed: int) -> torch.Tensor:
        return sequences[torch.multinomial(law, n, replacement=True, generator=torch.Generator().manual_seed(seed))]

    held_out = draw(512, 1)

    @torch.no_grad()
    def held_out_bound() -> float:
        obj.eval()
        g = torch.Generator().manual_seed(2)
        value = float(obj.eval_terms(held_out, torch.rand(len(held_out), generator=g), g).total.mean())
        obj.train()
        return value

    before = held_out_bound()
    opt = torch.optim.Adam(obj.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(3)
    for step in range(150):
        x0 = draw(64, 100 + step)
        t = 1e-3 + (1 - 1e-3) * torch.rand(64, generator=g)
        noise = torch.rand(obj.noise_draws, 64, L, dtype=torch.float64, generator=g)
        loss, _ = obj.train_loss(x0, t, noise)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    after = held_out_bound()
    assert after < before - 1.0 and after < math.log(27) - 0.1, (before, after)


def test_the_autoregressive_objective_is_refused_for_a_masked_lm():
    from maskdiff.validation import validate_config

    with pytest.raises(MaskdiffError, match="attends both ways"):
        validate_config(tiny_hf_config("ar"))


# ------------------------------------------------------------------------------------------------
# save_pretrained / from_pretrained round trips, generate

def char_pipeline():
    cfg = micro_config()
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    obj = build_objective(cfg, tok.vocab_size)
    with torch.no_grad():
        obj.network.head.weight.normal_(0, 0.5)  # the zero-initialised output layer would make mu uniform
    pipe = Pipeline(cfg, tok, obj)
    pipe.weights, pipe.step = "ema", 7
    return pipe


@pytest.mark.parametrize("make", [char_pipeline, bert_pipeline], ids=["dit-chars", "bert-wordpiece"])
def test_save_load_round_trip_is_exact(tmp_path, make):
    pipe = make()
    out = pipe.save_pretrained(tmp_path / "model")
    back = maskdiff.from_pretrained(out)
    x = torch.full((2, 8), pipe.tokenizer.mask_id)
    x[:, :3] = pipe.encode(["the cat", "to be o"])[:, :3] if pipe.tokenizer.vocab_size < 100 else torch.tensor([1996, 4937, 2003])
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        assert torch.equal(pipe.denoiser(x, t), back.denoiser(x, t))
    a = pipe.sample(3, length=8, steps=8, seed=5)
    b = back.sample(3, length=8, steps=8, seed=5)
    assert torch.equal(a.tokens, b.tokens) and a.texts == b.texts
    assert back.step == pipe.step and back.weights == "ema"
    meta = json.loads((out / "config.json").read_text())
    assert meta["model_type"] == "maskdiff" and meta["mask_token_id"] == pipe.tokenizer.vocab_size


def test_the_folder_is_read_by_hugging_face_tooling(tmp_path):
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    out = bert_pipeline().save_pretrained(tmp_path / "model", evaluation={"summary": "PPL <= 123.4 (95% CI 100.0-150.0)", "split": "validation",
                                                                          "sequences": 8, "tokens": 256, "passes": 1})
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "maskdiff" and "masked-diffusion" in card.data.tags
    assert "PPL <= 123.4 (95% CI 100.0-150.0)" in card.text and "from_pretrained" in card.text
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok("to be or not")["input_ids"][1:-1] == bert_pipeline().tokenizer.encode("to be or not").tolist()


def test_a_missing_folder_or_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MaskdiffError, match="could not be fetched"):
        maskdiff.from_pretrained("nobody-here/no-such-model")
    with pytest.raises(MaskdiffError, match="neither a local folder"):
        maskdiff.from_pretrained(str(tmp_path / "absent"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(MaskdiffError, match="not empty"):
        char_pipeline().save_pretrained(tmp_path / "full")


def test_generate_continues_a_prompt_and_fills_spans():
    pipe = char_pipeline()
    texts = pipe.generate(prompt="to be", num=2, length=16, steps=16, sampler="first-hitting", seed=1)
    assert len(texts) == 2 and all(len(t) == 16 and t.startswith("to be") for t in texts)
    filled = pipe.generate(infill="to [4] be", num=3, steps=8, sampler="ancestral")
    assert all(len(t) == 10 and t.startswith("to ") and t.endswith(" be") and "_" not in t for t in filled)
    with pytest.raises(MaskdiffError, match="either a prompt or"):
        pipe.generate(prompt="a", infill="b [2]")
    with pytest.raises(MaskdiffError, match=r"\[N\] spans"):
        pipe.generate(infill="no spans here")


# ------------------------------------------------------------------------------------------------
# the real all-MiniLM-L6-v2 weights

def test_minilm_weights_initialise_the_encoder_and_tie_the_head():
    from safetensors.torch import load_file

    from maskdiff.networks.masked_lm import pretrained_folder
    from maskdiff.presets import get_preset
    from maskdiff.completion import complete_backbone
    from maskdiff.validation import validate_config

    cfg = complete_backbone(get_preset("minilm"))
    validate_config(cfg)
    assert cfg.data.tokenizer == "bert" and cfg.model.hf_config["hidden_size"] == 384
    obj = build_objective(cfg, 30522)
    obj.init_from_pretrained()
    shipped = load_file(str(pretrained_folder("minilm") / "model.safetensors"))
    net = obj.network.model
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight", "encoder.layer.0.attention.self.query.bias"):
        key = name if name in shipped else "bert." + name
        assert torch.equal(net.bert.state_dict()[name], shipped[key]), name
    assert net.cls.predictions.decoder.weight.data_ptr() == net.bert.embeddings.word_embeddings.weight.data_ptr()
    assert "model.cls.predictions.decoder.weight" not in obj.state_dict()  # saved once, under the embedding's name


@pytest.mark.slow
def test_export_command_writes_a_card_with_the_measured_bound(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--run-dir", run, "--steps", "2", *MICRO_FLAGS).returncode == 0
    proc = run_cli("export", run, tmp_path / "out", "--limit", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    card = (tmp_path / "out" / "README.md").read_text()
    assert "BPC <=" in card and "95% CI" in card and "EMA weights of step 2" in card
    proc = run_cli("sample", tmp_path / "out", "--num", "2", "--steps", "4", "--no-progress", "--out", tmp_path / "s.txt")
    assert proc.returncode == 0, proc.stderr
    assert_clean_error(run_cli("export", run, tmp_path / "out", "--no-eval"), "not empty")
