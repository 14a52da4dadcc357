"""MDLM's zero-shot protocol end to end on a tiny GPT-2-token run: a local PTB file detokenized, packed as
[BOS] 30 tokens [EOS] rows (L = 32), evaluated by `maskdiff eval` and `maskdiff zero-shot`; and samples
judged by a causal LM folder with `maskdiff sample --evaluate --judge`."""
import json
import math

import pytest
import torch

from helpers import micro_config, run_cli

PTB_LINES = [" no it was n't black monday ", " the company 's shares rose N N to $ N ", " analysts said the <unk> deal was off "]
PTB_DETOKENIZED = ["no it wasn't black monday", "the company's shares rose 1 1 to $1", "analysts said the ? deal was off"]


@pytest.fixture(scope="module")
def gpt2_run(tmp_path_factory):
    from maskdiff.train import train

    root = tmp_path_factory.mktemp("zs")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document {i}: the market rose and analysts said it was fine." for i in range(200)), encoding="utf-8")
    cfg = micro_config(steps=2, corpus=corpus)
    cfg.data.tokenizer = "gpt2"
    with pytest.MonkeyPatch.context() as mp:  # the token cache of the training split stays in tmp
        mp.setenv("MASKDIFF_HOME", str(root / "home"))
        train(cfg, str(root / "run"))
    ptb = root / "ptb.valid.txt"
    ptb.write_text("\n".join(PTB_LINES * 20) + "\n", encoding="utf-8")
    return root / "run", ptb


@pytest.mark.slow
def test_eval_detokenizer_packs_and_scores_as_mdlm(gpt2_run, tmp_path):
    import maskdiff
    from maskdiff.data.subword import gpt2_tokenizer

    run, ptb = gpt2_run
    out = tmp_path / "eval.json"
    proc = run_cli("eval", run, "--corpus", ptb, "--detokenizer", "ptb", "--no-progress", "--json", out, "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "MDLM's protocol (ptb)" in proc.stdout
    record = json.loads(out.read_text())
    # the rows built here from the hand-detokenized lines: doc EOS doc EOS ..., cut into 30s, [BOS] piece [EOS]
    tok = gpt2_tokenizer()
    stream = [t for text in PTB_DETOKENIZED * 20 for t in tok.encode(text).tolist() + [50256]]
    rows = torch.tensor([[50256] + stream[i : i + 30] + [50256] for i in range(0, len(stream) - 29, 30)])
    assert record["tokens"] == rows.numel() and record["detokenizer"] == "ptb"
    expected = maskdiff.load(run).evaluate(rows, None, passes=1, batch_size=64, seed=3)
    # equal up to float32 rounding between processes (measured 3e-7 of 11.3 nats per token)
    assert math.log(record["perplexity_bound"]) == pytest.approx(expected.nats_per_token, rel=1e-5)


@pytest.mark.slow
def test_zero_shot_file_rows_and_judged_samples(gpt2_run, tmp_path):
    run, ptb = gpt2_run
    proc = run_cli("zero-shot", run, "--file", f"ptb={ptb}", "--file", f"none:raw={ptb}", "--limit", "4", "--no-progress", "--json", tmp_path / "z.json")
    assert proc.returncode == 0, proc.stderr
    assert "| ptb | <= " in proc.stdout and "| none:raw | <= " in proc.stdout
    cells = json.loads((tmp_path / "z.json").read_text())[0]["cells"]
    assert set(cells) == {"ptb", "none:raw"} and cells["ptb"]["tokens"] == 4 * 32
    proc = run_cli("zero-shot", run, "--file", "ptb.txt")
    assert proc.returncode != 0 and "write NAME=PATH" in proc.stderr
    proc = run_cli("eval", run, "--detokenizer", "ptb")
    assert proc.returncode != 0 and "--detokenizer needs --corpus FILE" in proc.stderr


@pytest.mark.slow
def test_sample_evaluate_with_a_judge_folder(gpt2_run, judge_dir):
    run, _ = gpt2_run
    proc = run_cli("sample", run, "--num", "2", "--steps", "4", "--no-progress", "--evaluate", "--judge", judge_dir)
    assert proc.returncode == 0, proc.stderr
    line = [l for l in proc.stdout.splitlines() if "gen-PPL" in l][0]
    assert "(tiny-gpt2)" in line and "unigram entropy" in line and "repeated 4-grams" in line
