"""Numerics of the objectives beyond the toy enumerations: GenMD4 at t = 1 in float32 and with padded
rows, and SEDD's scores at initialisation with GPT-2's vocabulary (docs/math.md#genmd4, #sedd)."""
import math

import pytest
import torch

from helpers import micro_config
from maskdiff.denoiser import FunctionDenoiser, SUBSDenoiser
from maskdiff.loss import continuous_diffusion_term
from maskdiff.loss.genmd4 import genmd4_loss
from maskdiff.loss.score_entropy import score_entropy_term
from maskdiff.networks.transformer import DiT
from maskdiff.objectives import build_objective


def _table_denoiser(V, seed=0):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(V + 1, V, generator=g, dtype=torch.float64)
    return FunctionDenoiser(lambda x_t, t: torch.log_softmax(table[x_t], -1), V, time_independent=True)


def test_genmd4_gradient_is_finite_when_t_rounds_to_one_in_float32():
    """t = 1 - 1e-8 is 1.0 in float32: every position is masked and log(1 - t^w) is -inf on the branch
    torch.where does not take, which used to turn the gradient of w into NaN. It must equal the float64
    gradient at t = 1 - 1e-12, where the same uniforms mask every position too."""
    V, L, B = 3, 5, 6
    den = _table_denoiser(V)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, V, (B, L), generator=g)
    noise = torch.rand((2, B, L), generator=g, dtype=torch.float64) * 0.9 + 0.1  # >= 0.1: masked near t = 1
    w0 = torch.tensor([1.3, 0.7, 2.0])
    t32 = torch.full((B,), 1.0 - 1e-8, dtype=torch.float32)
    assert bool((t32 == 1.0).all())
    w = w0.clone().requires_grad_(True)
    out = genmd4_loss(den, x0, t32, w, noise, t_min=1e-3)
    out.surrogate.mean().backward()
    assert bool(torch.isfinite(out.nelbo).all()) and bool(torch.isfinite(w.grad).all()), w.grad
    w64 = w0.double().clone().requires_grad_(True)
    ref = genmd4_loss(den, x0, torch.full((B,), 1.0 - 1e-12, dtype=torch.float64), w64, noise, t_min=1e-3)
    ref.surrogate.mean().backward()
    torch.testing.assert_close(out.nelbo.double(), ref.nelbo.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(w.grad.double(), w64.grad, rtol=1e-5, atol=1e-5)


def test_genmd4_ignores_padding_like_the_masked_objective():
    """A row padded from 9 to 16 tokens has the GenMD4 NELBO (and surrogate) of the 9-token row, with the
    same t and uniforms at the real positions: padding is never masked, never counted, not attended to."""
    V, L, n, B = 40, 16, 9, 3
    torch.manual_seed(0)
    net = DiT(V, L, width=32, depth=2, heads=2, cond_dim=16, time_conditioned=True)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    den = SUBSDenoiser(net, V, time_conditioned=True, max_length=L)
    g = torch.Generator().manual_seed(2)
    short = torch.randint(0, V, (B, n), generator=g)
    padded = torch.cat([short, torch.full((B, L - n), 5)], dim=1)
    valid = torch.zeros(B, L, dtype=torch.bool)
    valid[:, :n] = True
    noise = torch.rand((2, B, L), generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.6, 0.95])
    w = torch.linspace(0.5, 2.0, V)
    alone = genmd4_loss(den, short, t, w, noise[:, :, :n])
    inside = genmd4_loss(den, padded, t, w, noise, valid=valid)
    torch.testing.assert_close(inside.nelbo, alone.nelbo, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inside.surrogate, alone.surrogate, rtol=1e-5, atol=1e-5)


def test_genmd4_evaluation_does_not_see_padding():
    """The objective's evaluation terms (diffusion and R(t_min)) of a padded row do not depend on what the
    padding holds, with the same generator: the network sees no padding in either term."""
    cfg = micro_config()
    cfg.diffusion.objective, cfg.model.time_conditioned, cfg.data.length = "genmd4", True, 12
    obj = build_objective(cfg, 30)
    with torch.no_grad():
        for p in obj.network.parameters():
            p.normal_(0.0, 0.3)
    obj.eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 30, (4, 12), generator=g)
    valid = torch.ones(4, 12, dtype=torch.bool)
    valid[:, 7:] = False
    padded = torch.where(valid, x, torch.full_like(x, 3))
    other = torch.where(valid, x, torch.full_like(x, 17))  # different padding ids: must not matter
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        a = obj.eval_terms(padded, t, torch.Generator().manual_seed(4), valid=valid)
        b = obj.eval_terms(other, t, torch.Generator().manual_seed(4), valid=valid)
    torch.testing.assert_close(a.total, b.total, rtol=1e-5, atol=1e-5)
    assert a.tokens.tolist() == [7.0] * 4


def test_sedd_scores_start_normalised_at_gpt2_vocabulary():
    """With zero output weights the log scores are the head bias. Started at -log V, sum_v s_v = r_t and
    the score-entropy bound equals the masked-diffusion bound of the same (uniform) network; started at 0
    it would exceed it by V - 1 - log V (about 5e4 nats) per masked token."""
    V = 50_257
    cfg = micro_config()
    cfg.diffusion.objective, cfg.data.length = "sedd", 8
    cfg.model.width, cfg.model.heads = 16, 2
    obj = build_objective(cfg, V)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (4, 8), generator=g)
    t = torch.tensor([0.1, 0.4, 0.7, 0.99])
    noise = torch.rand((4, 8), generator=g, dtype=torch.float64)
    with torch.no_grad():
        sedd = score_entropy_term(obj.denoiser, x0, t, obj.schedule, t_min=1e-3, noise=noise)
        md4 = continuous_diffusion_term(obj.denoiser, x0, t, obj.schedule, t_min=1e-3, noise=noise)
    assert float(md4.sum()) > 10.0  # something is masked: the comparison is not 0 = 0
    torch.testing.assert_close(sedd.double(), md4.double(), rtol=1e-4, atol=1e-3)
    masked = (noise >= obj.schedule.alpha(t.double())[:, None]).sum(-1).double()
    torch.testing.assert_close(md4.double(), 0.999 * obj.schedule.weight(t.double()) * masked * math.log(V),
                               rtol=1e-5, atol=1e-4)


def test_ablation_charges_the_tokens_masked_at_t_0():
    """Carry-over on, zero-mask off, geometric schedule with alpha_0 = e^{-0.3}: the evaluation's t = 0
    term is the decoder's cost of the tokens already masked then (uniform mu at init: log V each), not 0."""
    cfg = micro_config()
    cfg.diffusion.zero_mask, cfg.diffusion.discrete_steps = False, 4
    cfg.diffusion.schedule, cfg.diffusion.schedule_args = "geometric", {"s_min": 0.3, "s_max": 3.0}
    obj = build_objective(cfg, 20)
    x0 = torch.randint(0, 20, (64, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        terms = obj.eval_terms(x0, torch.full((64,), 0.5), torch.Generator().manual_seed(1))
    per_token = float(terms.reconstruction.sum()) / x0.numel()
    expected = (1 - math.exp(-0.3)) * math.log(21)  # masked share at t = 0, times -log x_theta = log(V + 1)
    assert abs(per_token - expected) < 0.05 * expected, (per_token, expected)
    loss, logged = obj.train_loss(x0, torch.full((64,), 0.5), torch.rand((1, 64, 32), dtype=torch.float64))
    assert bool(torch.isfinite(loss).all())


def test_pad_runs_charge_the_row_length(tmp_path, monkeypatch):
    """'pad' packing tells the network each row's length, so the diffusion terms bound -log p(x | length);
    evaluation adds -log p(length) under the training split's row lengths with add-one smoothing over
    1..L (docs/math.md#packing), recomputed here from the training rows."""
    from maskdiff.evaluation.nelbo import evaluate
    from maskdiff.modalities.text import split_rows
    from maskdiff.modalities import build_tokenizer, eval_chunks
    from maskdiff.pipeline import Pipeline

    monkeypatch.setenv("MASKDIFF_HOME", str(tmp_path / "home"))
    cfg = micro_config()
    cfg.data.packing = "pad"
    tok = build_tokenizer(cfg)
    pipe = Pipeline(cfg, tok, build_objective(cfg, tok.vocab_size))
    tokens, valid = eval_chunks(cfg, tok, "validation")
    short = (~valid).any(-1)
    assert bool(short.any())
    rows = torch.cat([torch.nonzero(short)[:3, 0], torch.nonzero(~short)[:3, 0]])
    tokens, valid = tokens[rows], valid[rows]
    res = pipe.evaluate(tokens, valid, seed=0)

    def terms(x, t, gen, v):
        return pipe.objective.eval_terms(x, t, gen, v)

    with torch.no_grad():
        plain = evaluate(terms, tokens, valid, t_min=cfg.diffusion.t_min, seed=0).nelbo
    _, train_valid = split_rows(cfg, tok, "train")
    L = cfg.data.length
    counts = [int((train_valid.sum(-1) == n).sum()) for n in range(L + 1)]
    p = [(counts[n] + 1) / (train_valid.shape[0] + L) for n in range(L + 1)]
    expected = torch.tensor([-math.log(p[int(n)]) for n in valid.sum(-1)], dtype=torch.float64)
    assert abs(sum(p[1:]) - 1.0) < 1e-12
    torch.testing.assert_close(res.length, expected)
    torch.testing.assert_close(res.nelbo, plain + expected)
    assert res.to_dict()["length_nats"] == pytest.approx(float(expected.sum()))
    # wrap runs are not charged: their rows carry no length information
    cfg.data.packing = "wrap"
    assert Pipeline(cfg, tok, build_objective(cfg, tok.vocab_size)).evaluate(tokens, valid, seed=0).length is None
