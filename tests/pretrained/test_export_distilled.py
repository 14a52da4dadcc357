"""``maskdiff export`` of a distilled run: the folder keeps its distill.json and samples at its grid, as the run does."""
import json
import shutil

from helpers import run_main

import maskdiff
from maskdiff.runs import DISTILL_FILE, write_distill_record


def test_an_exported_distilled_run_keeps_its_record_and_samples_at_its_grid(served_run, tmp_path):
    run = tmp_path / "student"
    shutil.copytree(served_run, run)
    record = {"method": "sdtt", "teacher": str(served_run), "recommended_steps": 4, "grid": "uniform"}
    write_distill_record(run, record)  # as maskdiff distill leaves a finished round
    assert run_main("export", run, tmp_path / "out", "--no-eval").returncode == 0
    assert json.loads((tmp_path / "out" / DISTILL_FILE).read_text()) == record
    folder = maskdiff.load(tmp_path / "out")
    assert folder.default_steps == maskdiff.load(run).default_steps == 4
    proc = run_main("sample", tmp_path / "out", "--num", "1", "--no-progress", "--out", tmp_path / "s.txt")
    assert proc.returncode == 0, proc.stderr
    assert "cached sampler, 4 steps" in proc.stdout
    plain = tmp_path / "plain"
    assert run_main("export", served_run, plain, "--no-eval").returncode == 0  # an ordinary run: no record, 256 steps
    assert not (plain / DISTILL_FILE).exists() and maskdiff.load(plain).default_steps == 256
