"""Generative perplexity under a judge named by its folder: any local Hugging Face causal LM (here a tiny
random GPT-2 with GPT-2's real BPE), checked against the NLL computed here token by token."""
import json
import math

import pytest
import torch

from maskdiff.errors import MaskdiffError

transformers = pytest.importorskip("transformers")

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A second, longer text: it has more tokens than the first one does.", "Short"]


@pytest.mark.slow
def test_perplexity_is_exp_of_the_mean_token_nll(judge_dir):
    from maskdiff.evaluation.judge import EvaluatorLM

    judge = EvaluatorLM.from_pretrained(judge_dir)
    ppl, per_text = judge.perplexity(TEXTS, batch_size=2)  # padded batches of unequal lengths
    # independently: each text alone, after GPT-2's BOS, every token's -log p from log_softmax
    tok = transformers.AutoTokenizer.from_pretrained(str(judge_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(judge_dir)).eval()
    total, count, means = 0.0, 0, []
    for text in TEXTS:
        ids = torch.tensor([[tok.bos_token_id] + tok(text)["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.double(), -1)
        nll = -logp[0, :-1].gather(-1, ids[0, 1:, None]).sum().item()
        total, count = total + nll, count + ids.shape[1] - 1
        means.append(nll / (ids.shape[1] - 1))
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    assert per_text == pytest.approx(means, rel=1e-5)
    assert judge.name == "tiny-gpt2"
    assert 1000 < ppl < 1e6  # a random model over 50,257 tokens: near uniform, not 1 and not inf


def test_bad_judge_folders_are_refused(tmp_path):
    from maskdiff.evaluation.judge import check_judge_folder

    with pytest.raises(MaskdiffError, match="does not exist"):
        check_judge_folder(tmp_path / "nope")
    with pytest.raises(MaskdiffError, match="has no config.json"):
        check_judge_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model": {"width": 32}}), encoding="utf-8")
    with pytest.raises(MaskdiffError, match="is a maskdiff run .*--evaluator"):
        check_judge_folder(tmp_path)


def test_sample_flags_name_what_is_wrong(tmp_path, capsys):
    judge_dir = tmp_path / "judge"
    from helpers import assert_clean_error, run_main

    assert_clean_error(run_main("sample", tmp_path, "--judge", judge_dir), "--judge chooses the LM of --evaluate")
    assert_clean_error(run_main("sample", tmp_path, "--evaluate", "--judge", judge_dir, "--evaluator", tmp_path),
                       "--judge", "--evaluator", "give one")
    assert_clean_error(run_main("sample", tmp_path, "--evaluate", "--judge", tmp_path / "missing"), "judge folder", "does not exist")
