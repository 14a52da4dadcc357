"""``maskdiff plot``: two runs' learning curves in one PNG (the validation NELBO with its band), the
history of a resumed log, and bad flags as one-line errors."""
import pytest
from PIL import Image

from helpers import assert_clean_error, micro_config, run_main
from maskdiff.plotting import resumed_records
from maskdiff.train import train
from maskdiff.visualize import save_line_chart

COLOURS = [(40, 90, 180), (200, 60, 30), (30, 140, 60), (140, 60, 160)]  # save_line_chart's first series colours


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, plays):
    """Two micro runs of 4 steps (seeds 0 and 1), the first evaluated every 2 steps."""
    root = tmp_path_factory.mktemp("plot")
    for name, seed, every in (("a", 0, 2), ("b", 1, 0)):
        cfg = micro_config(steps=4, corpus=plays, seed=seed, eval_every=every, eval_rows=8, threads=1, tensorboard=False)
        train(cfg, root / name, progress=False)
    return root / "a", root / "b"


def test_plot_draws_two_runs_in_one_png(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = run_main("plot", *two_runs, "--out", out, "--x", "tokens")
    assert proc.returncode == 0, proc.stderr
    # a's training loss, a's validation line (with its band), b's training loss: three legend rows
    reference = save_line_chart({"1": [(0, 0)], "2": [(0, 0)], "3": [(0, 0)]}, tmp_path / "reference.png")
    image = Image.open(out).convert("RGB")
    assert image.size == Image.open(reference).size
    colours = {c for _, c in image.getcolors(maxcolors=1 << 20)}
    assert set(COLOURS[:3]) <= colours  # every series is drawn
    pale = tuple(int(255 - 0.25 * (255 - c)) for c in COLOURS[1])
    assert pale in colours  # the validation interval of run a, shaded


def test_resumed_log_keeps_the_final_history():
    """A process logged steps 1-4 and died after the checkpoint of step 2; the resumed one logged 3-4 again."""
    records = [{"step": s, "elapsed_s": 10.0 * s} for s in (1, 2, 3, 4)] + [{"step": s, "elapsed_s": 5.0 * (s - 2)} for s in (3, 4)]
    kept = resumed_records(records)
    assert [r["step"] for r in kept] == [1, 2, 3, 4]
    assert [r["train_s"] for r in kept] == [10.0, 20.0, 25.0, 30.0]


def test_bad_plot_flags_are_one_line_errors(two_runs, tmp_path):
    a, b = two_runs
    assert_clean_error(run_main("plot", a, "--metric", "bpc"), "--metric", "invalid choice")
    assert_clean_error(run_main("plot", a, b, "--metric", "val", "--out", tmp_path / "v.png"), "b has no validation records", "--eval-every")
    assert_clean_error(run_main("plot", a, "--out", tmp_path / "v.jpg"), ".png")
    assert_clean_error(run_main("plot", tmp_path / "missing"), "does not exist")
