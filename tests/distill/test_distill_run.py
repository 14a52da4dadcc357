"""``maskdiff distill`` end to end on a micro teacher: the student is an ordinary run folder that loads and
samples with the steps it was distilled for, a killed distillation resumes exactly, and bad settings fail
with one line."""
import pytest
import torch

import maskdiff
from helpers import assert_clean_error, micro_config, run_main
from maskdiff.checkpoint import latest_valid_checkpoint, read_tensors
from maskdiff.distill import DistillSettings, distill
from maskdiff.train import train

SETTINGS = dict(rounds=2, steps_per_round=2, start_steps=8, batch_size=4, warmup_steps=1, lr=1e-3, checkpoint_every=1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, plays):
    run = tmp_path_factory.mktemp("distill") / "teacher"
    train(micro_config(steps=4, corpus=plays), run, progress=False)
    return run


def _weights(run):
    path, _ = latest_valid_checkpoint(run)
    return read_tensors(path / "model.safetensors")


def test_student_is_a_run_folder_and_a_killed_distillation_resumes_exactly(teacher, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    done = distill(teacher, whole, DistillSettings(**SETTINGS), progress=False)
    assert done.step == 4 and done.recommended_steps == 2
    first = distill(teacher, split, DistillSettings(**SETTINGS), progress=False, stop_after=3)  # in round 2
    assert first.step == 3 and first.recommended_steps == 4
    again = distill(teacher, split, DistillSettings(**SETTINGS), progress=False)
    assert again.resumed_from == 3 and again.step == 4
    a, b = _weights(whole), _weights(split)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], _weights(teacher)[k]) for k in a if k.startswith("ema."))  # it learned something

    pipe = maskdiff.load(whole)
    assert pipe.default_steps == 2 and maskdiff.load(whole / "rounds" / "T4").default_steps == 4
    assert maskdiff.load(teacher).default_steps == 256
    out = pipe.sample(3, sampler="ancestral")
    assert int(out.nfe.max()) <= 2 and len(out.texts) == 3
    proc = run_main("sample", whole, "--num", "1", "--no-progress")
    assert proc.returncode == 0 and "2 steps" in proc.stdout, proc.stderr


def test_bad_settings_fail_with_one_line(teacher, tmp_path):
    assert_clean_error(run_main("distill", teacher, tmp_path / "a", "--method", "duo"), "unknown distillation method", "sdtt")
    assert_clean_error(run_main("distill", teacher, tmp_path / "b", "--start-steps", "12", "--rounds", "3"), "multiple of 8")
    distill(teacher, tmp_path / "c", DistillSettings(**SETTINGS), progress=False, stop_after=1)
    assert_clean_error(run_main("distill", teacher, tmp_path / "c", "--lr", "0.5", "--no-progress"), "other settings", "steps_per_round")
    assert_clean_error(run_main("distill", teacher, teacher, "--no-progress"), "not a distillation")
