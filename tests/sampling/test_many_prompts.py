"""Many prompts per call (sampling/rows.py, sampling/batch.py, Pipeline.run_rows): each row keeps the law of
a one-row request (exact on the V = 3, L = 3 toy), its randomness is its own (the same row gives the same
tokens whatever the micro-batch size, the order of the rows or the other rows), texts stop at end-of-text,
and bad rows are refused naming the row."""
import pytest
import torch
from scipy.stats import chisquare

from helpers import micro_config
from maskdiff.denoiser import FunctionDenoiser
from maskdiff.errors import MaskdiffError
from maskdiff.exact import sequence_index
from maskdiff.modalities import build_tokenizer
from maskdiff.objectives import build_objective
from maskdiff.pipeline import Pipeline
from maskdiff.sampling.batch import draw_rows
from maskdiff.sampling.request import SamplingTarget
from maskdiff.sampling.rows import Row, RowsRequest, eos_cut, row_seed
from maskdiff.schedules import get_schedule

V, L = 3, 3


def toy_target(eos_id=None, max_length=L):
    """The toy as a model: the digits '0'..'2' are its tokens."""
    return SamplingTarget(kind="masked", mask_id=V, max_length=max_length, encode=lambda s: torch.tensor([int(c) for c in s]),
                          time_independent=True, eos_id=eos_id)


@pytest.fixture(scope="module")
def pipe():
    """A micro text model with random weights (the samples' law does not matter here, only their randomness)."""
    cfg = micro_config()
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    return Pipeline(cfg, tok, build_objective(cfg, tok.vocab_size))


def test_each_prompted_row_follows_the_exact_conditional_law(toy):
    """First-hitting draws p(x | prefix) exactly (Zheng et al. 2024); rows with prefixes of one and of two
    tokens, mixed in one call and micro-batched, each follow their own conditional (chi-square)."""
    seqs, p, d = toy
    prompts = ["0", "21"] * 300
    checked = RowsRequest([Row(prompt=q) for q in prompts], sampler="first-hitting", seed=3, batch_size=16).check(toy_target())
    rows_per_call = []
    counted = FunctionDenoiser(lambda x, t: rows_per_call.append(len(x)) or d(x, t), V, time_independent=True)
    outs = draw_rows(counted, get_schedule("linear"), checked)
    tokens = torch.cat([o.tokens for o in outs])
    assert sum(rows_per_call) == sum(int(o.nfe.sum()) for o in outs) and max(rows_per_call) == 16  # calls shared by 16 rows
    for prompt in ("0", "21"):
        fixed = torch.tensor([int(c) for c in prompt])
        rows = tokens[[i for i, q in enumerate(prompts) if q == prompt]]
        assert torch.equal(rows[:, : len(prompt)], fixed.expand(len(rows), -1))
        match = (seqs[:, : len(prompt)] == fixed).all(-1)
        law = p[match] / p[match].sum()  # p(x | prefix) over the sequences with this prefix
        observed = torch.bincount(sequence_index(rows, V), minlength=V ** L)[match].double()
        assert chisquare(observed.numpy(), (law * len(rows)).numpy()).pvalue > 1e-3


def test_rows_are_reproducible_whatever_the_micro_batch_size_and_order(pipe):
    rows = [Row(prompt="to be", length=20), Row(prompt="or not", length=32), Row(template="the [5] is"), Row(prompt="a", length=20),
            Row(prompt="xy", length=24), Row(prompt="what", length=20, seed=7)]
    for sampler in ("first-hitting", "ancestral"):  # (first-hitting's calls go through masked_log_probs)
        runs = [pipe.run_rows(RowsRequest(rows, sampler=sampler, steps=12, seed=4, batch_size=b)) for b in (1, 3, 8)]
        for other in runs[1:]:
            assert [r.tokens for r in other] == [r.tokens for r in runs[0]]
            assert [r.network_calls for r in other] == [r.network_calls for r in runs[0]]
    runs = [pipe.run_rows(RowsRequest(rows, steps=12, seed=4, batch_size=b)) for b in (1, 3, 8)]
    for other in runs[1:]:
        assert [r.tokens for r in other] == [r.tokens for r in runs[0]]
    first = runs[0]
    assert [r.index for r in first] == list(range(len(rows)))  # input order
    assert [r.seed for r in first] == [row_seed(4, i) for i in range(5)] + [7]
    # a row is the one-row request of its seed: alone, in another order, among other rows
    alone = pipe.sample(1, prompt="or not", length=32, steps=12, seed=first[1].seed).tokens[0].tolist()
    assert first[1].tokens == alone
    moved = pipe.run_rows(RowsRequest([Row(prompt="zz", length=32), Row(prompt="or not", length=32, seed=first[1].seed)],
                                      steps=12, batch_size=2))
    assert moved[1].tokens == alone
    assert first[0].text.startswith("to be") and first[2].text.startswith("the ") and first[2].text.endswith(" is")
    assert pipe.generate(prompts=["to be", "or not"], length=[20, 32], steps=12, seed=4) == [first[0].text, first[1].text]


def test_texts_stop_at_the_first_generated_end_of_text(pipe):
    """With the space as end-of-text (a tokenizer with an EOS token), a text stops before the first space
    generated after the prompt; the prompt's own spaces do not count; the tokens are kept whole."""
    tok = build_tokenizer(pipe.config)
    tok.eos_id = int(tok.encode(" ")[0])
    spaced = Pipeline(pipe.config, tok, pipe.objective)
    rows = [Row(prompt="to be or", length=32), Row(template="a [12] b")]
    cut = spaced.run_rows(RowsRequest(rows, steps=12))
    whole = spaced.run_rows(RowsRequest(rows, steps=12, stop_at_eos=False))
    assert [r.tokens for r in cut] == [r.tokens for r in whole] and not any(r.eos for r in whole)
    row = torch.tensor(cut[0].tokens)
    spaces = (row[8:] == tok.eos_id).nonzero()
    assert len(spaces), "the random model draws spaces"
    n = 8 + int(spaces[0])
    assert cut[0].eos and cut[0].kept == n and cut[0].text == "to be or" + tok.decode(row[8:n])
    assert not cut[1].eos and cut[1].text == whole[1].text  # a template ending in fixed text is never cut
    assert eos_cut(torch.tensor([1, 5, 2, 5]), 2, 5) == 3 and eos_cut(torch.tensor([1, 5, 2]), 2, 5) == 3
    assert eos_cut(torch.tensor([1, 5]), 0, None) == 2
    # the one-prompt API cuts the same way by default for a prompt, never for an unconditional sample
    assert spaced.generate("to be or", length=32, steps=12, seed=cut[0].seed) == [cut[0].text]


def test_semi_autoregressive_rows_stop_adding_blocks_at_end_of_text(toy):
    """Beyond the window a row stops once it has generated end-of-text (here token 0); without a stop it
    runs to its length."""
    _, _, d = toy
    rows = [Row(prompt="1", length=30)] * 6
    target = toy_target(eos_id=0)
    stopped = draw_rows(d, get_schedule("linear"), RowsRequest(rows, steps=4, block=1, batch_size=3).check(target))
    full = draw_rows(d, get_schedule("linear"), RowsRequest(rows, steps=4, block=1, stop_at_eos=False).check(target))
    assert all(o.tokens.shape[1] == 30 for o in full)
    for o in stopped:
        x = o.tokens[0]
        hits = (x[1:] == 0).nonzero()
        assert len(hits) and x.numel() == max(L, 1 + int(hits[0]) + 1)  # the block that drew it is the last


@pytest.mark.parametrize("row, needle", [
    (Row(prompt=""), "row 1: the prompt is empty"),
    (Row(template="no span here"), "row 1: the template has no [N] span"),
    (Row(), "row 1: give a prompt or a template"),
    (Row(prompt="a long prompt", length=4), "row 1: the prompt has 13 tokens; the sample length 4 leaves nothing"),
    (Row(prompt="ab", seed=-1), "row 1: seed must be an integer"),
])
def test_bad_rows_are_refused_naming_the_row(pipe, row, needle):
    with pytest.raises(MaskdiffError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        RowsRequest([Row(prompt="fine"), row]).check(pipe.target())
    with pytest.raises(MaskdiffError, match="no end-of-text token"):
        RowsRequest([Row(prompt="fine")], stop_at_eos=True).check(pipe.target())
