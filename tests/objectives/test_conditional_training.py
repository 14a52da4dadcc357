"""Conditional training end to end: a micro run on prompt/response pairs trains, `maskdiff eval` reports the
response NELBO given the prompt with its intervals, and the Python API gives the same figure; the
autoregressive baseline's conditional NLL is its full NLL less the prompt's."""
import json

import torch

from helpers import micro_config, run_main
from maskdiff.objectives import OBJECTIVES, build_objective
from maskdiff.objectives.base import CONDITIONAL_OBJECTIVES
from maskdiff.train import train


def _pairs(path, n=24):
    words = ["to be", "or not", "that is", "the question", "whether tis", "nobler in"]
    path.write_text("".join(json.dumps({"prompt": words[i % 6] + " ", "response": words[(i + 1) % 6]}) + "\n" for i in range(n)))
    return path


def test_train_and_eval_on_pairs(tmp_path):
    """Three steps on pairs write a run whose `eval` is the conditional NELBO of the held-out pairs (JSON with
    per-token and per-response intervals), equal to Pipeline.conditional_nelbo of the same rows."""
    import maskdiff

    cfg = micro_config(steps=3)
    cfg.data.pairs, cfg.data.pairs_holdout = str(_pairs(tmp_path / "p.jsonl")), 0.25
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.step == 3 and result.last_loss is not None and result.last_loss > 0
    proc = run_main("eval", tmp_path / "run", "--passes", "2", "--no-progress", "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    assert "validation pairs: response given prompt BPC <=" in proc.stdout and "per response NELBO <=" in proc.stdout
    record = json.loads((tmp_path / "e.json").read_text())
    assert record["conditional"] and record["sequences"] == 6
    lo, hi = record["nats_per_response_ci95"]
    assert lo <= record["nats_per_response"] <= hi
    pipe = maskdiff.load(tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    from maskdiff.data.pairs import holdout_indices

    held = holdout_indices(len(rows), 0.25)[1].tolist()
    api = pipe.conditional_nelbo([rows[i]["prompt"] for i in held], [rows[i]["response"] for i in held], passes=2, batch_size=64)
    assert abs(float(api.nelbo.mean()) - record["nats_per_response"]) < 1e-6 * record["nats_per_response"]


def test_autoregressive_conditional_nll_and_registry():
    """The AR baseline scores only the response, reading the prompt as its prefix: its conditional NLL is the
    full NLL less the prompt's own terms. The objectives that declare ``conditional`` are the ones named in
    the error message."""
    assert {n for n, o in OBJECTIVES.items() if o.conditional} == set(CONDITIONAL_OBJECTIVES)
    cfg = micro_config()
    cfg.diffusion.objective = "ar"
    ar = build_objective(cfg, 27).eval()
    x0 = torch.randint(0, 27, (3, 32), generator=torch.Generator().manual_seed(0))
    cond = torch.arange(32)[None] < torch.tensor([1, 5, 30])[:, None]
    with torch.no_grad():
        full = ar.eval_terms(x0, None, None).total
        given = ar.eval_terms(x0, None, None, cond=cond).total
        prompt_only = ar.eval_terms(x0, None, None, valid=cond).total  # the prompt's own terms
    assert torch.allclose(given + prompt_only, full, rtol=1e-5) and (given < full).all()


def test_init_from_a_trained_run(tmp_path):
    """--init-from RUN: a new run's network starts from RUN's EMA weights (the weights maskdiff.load gives),
    and a run whose network differs, or the same folder as --run-dir, is refused before anything is written."""
    import maskdiff
    from maskdiff.warm_start import initialise

    source = tmp_path / "source"
    train(micro_config(steps=2), source, progress=False)
    cfg = micro_config()
    cfg.model.init_from = str(source)
    objective = build_objective(cfg, 27)
    initialise(objective, cfg)
    expected = maskdiff.load(source).objective.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in objective.state_dict().items())
    for args, needle in ((["--preset", "small"], "model.width: 32 there, 768 here"), ([], "give --run-dir another folder")):
        run_dir = source if not args else tmp_path / "new"
        proc = run_main("train", "--init-from", source, "--run-dir", run_dir, *args, "--no-progress")
        assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
        assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["source"]


def test_eval_every_on_pairs_scores_the_responses(tmp_path):
    """--eval-every on a pairs run evaluates the validation pairs given their prompts: the record's figure is
    the conditional NELBO per response token (prompts neither masked nor counted), not the corpus's."""
    from maskdiff.distributed import Context
    from maskdiff.modalities import build_tokenizer
    from maskdiff.modalities.text import pair_split
    from maskdiff.monitor import EVAL_BATCH, validation_nelbo

    cfg = micro_config(steps=2)
    cfg.data.pairs, cfg.data.pairs_holdout = str(_pairs(tmp_path / "p.jsonl")), 0.25
    cfg.train.eval_every, cfg.train.ema_decay = 2, 0.0
    train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_nelbo_bits_per_token" in r]
    assert len(val) == 1 and val[0]["val_rows"] == 6
    import maskdiff

    pipe = maskdiff.load(tmp_path / "run", ema=False)
    rows = pair_split(pipe.config, build_tokenizer(pipe.config), "validation")
    ctx = Context()
    valid = torch.ones_like(rows.tokens, dtype=torch.bool)
    batch = min(EVAL_BATCH, cfg.train.batch_size)  # as the trainer evaluates
    with torch.no_grad():
        mine = validation_nelbo(pipe.objective, rows.tokens, valid, t_min=cfg.diffusion.t_min, batch=batch, ctx=ctx, cond=rows.cond)
        unconditional = validation_nelbo(pipe.objective, rows.tokens, valid, t_min=cfg.diffusion.t_min, batch=batch, ctx=ctx)
    assert abs(mine.bits_per_token()[0] - val[0]["val_nelbo_bits_per_token"]) < 1e-9
    assert mine.conditional and abs(mine.bits_per_token()[0] - unconditional.bits_per_token()[0]) > 1e-3
