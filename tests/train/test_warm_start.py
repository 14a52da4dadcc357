"""A fine-tuned run (model.init_from) resumes from its own checkpoint even when its parent has moved; a new
run from a missing parent is still refused before anything is written."""
import shutil

import pytest
from helpers import micro_config

from maskdiff.errors import MaskdiffError
from maskdiff.runs import read_run_config
from maskdiff.train import train


def test_a_fine_tuned_run_resumes_after_its_parent_moved(tmp_path, plays):
    parent = tmp_path / "parent"
    train(micro_config(steps=1, corpus=plays), parent, progress=False)
    child = micro_config(steps=4, corpus=plays)
    child.model.init_from = str(parent)
    first = train(child, tmp_path / "child", progress=False, stop_after=2)
    assert first.step == 2 and first.resumed_from is None
    shutil.move(parent, tmp_path / "moved")
    done = train(read_run_config(tmp_path / "child"), tmp_path / "child", progress=False)
    assert (done.resumed_from, done.step) == (2, 4)
    with pytest.raises(MaskdiffError, match=f"--init-from {parent}: there is no run directory there"):  # a new run from the moved parent: refused first
        train(child, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


def test_the_same_train_command_resumes_after_the_parent_moved(tmp_path, plays):
    """`maskdiff train --init-from P --run-dir R` run again reads R's own config once R has one, not P's."""
    from helpers import run_main

    parent = tmp_path / "parent"
    train(micro_config(steps=1, corpus=plays), parent, progress=False)
    command = ("train", "--init-from", parent, "--run-dir", tmp_path / "child", "--no-progress")
    assert run_main(*command, "--steps", "2").returncode == 0
    shutil.move(parent, tmp_path / "moved")
    proc = run_main(*command, "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert read_run_config(tmp_path / "child").train.steps == 3
