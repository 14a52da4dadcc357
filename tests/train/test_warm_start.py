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
