"""Bad input: one clear error line, exit status 2, no traceback, nothing written and nothing on disk damaged.

The commands run in this process through ``main(argv)`` (an unexpected exception fails the test outright);
a few run as real processes: the installed ``maskdiff`` console script, and Ctrl-C.
"""
import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, micro_config, run_main
from maskdiff import MaskdiffError
from maskdiff.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad") / "run"
    train(micro_config(steps=4, checkpoint_every=2, keep_checkpoints=3), run, progress=False)
    return run


def _digest(path):
    return {p.relative_to(path): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def cli(capsys, tmp_path, monkeypatch):
    """``cli(*args)``: run ``maskdiff ARGS`` in this process, in an empty working directory (``tmp_path / "cwd"``)
    that a test can check stayed empty."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return lambda *args: run_main(*args)


def refused(proc, *needles):
    """Exit status 2 and exactly one error line on stderr naming each needle (helpers.assert_clean_error)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    return assert_clean_error(proc, *needles)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "--schedule", "cosin"], ["unknown schedule 'cosin'", "linear", "mdlm-cosine"]),
        (["train", "--preset", "huge"], ["unknown preset 'huge'", "tiny", "small"]),
        (["train", "--steps", "-3"], ["positive integer"]),
        (["train", "--steps", "many"], ["positive integer"]),
        (["train", "--lr", "nan"], ["positive finite"]),
        (["train", "--form", "bytes"], ["unknown text form", "text8", "chars"]),
        (["train", "--width", "30", "--heads", "4"], ["heads"]),
        (["train", "--local-mixing", "4"], ["local_mixing", "odd kernel size"]),
        (["train", "--schedule", "polynomial", "--schedule-arg", "q=2"], ["bad arguments for schedule"]),
        (["train", "--bogus-flag"], ["unrecognized arguments"]),
        (["eval", "/no/such/run"], ["does not exist"]),
        (["sample", "/no/such/run"], ["does not exist"]),
    ],
)
def test_cli_bad_values(cli, tmp_path, args, needles):
    """Each wrong flag or value names what was wrong (and the valid choices), and nothing is written."""
    refused(cli(*args, *(["--run-dir", tmp_path / "r"] if args[0] == "train" else [])), *needles)
    assert not (tmp_path / "r").exists() and not any((tmp_path / "cwd").iterdir())


def test_missing_and_empty_data_files(cli, tmp_path):
    """A missing or empty data file is one clear error, and nothing is trained."""
    refused(cli("train", "--corpus", tmp_path / "nope.txt", "--run-dir", tmp_path / "r1", *MICRO_FLAGS), "does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    refused(cli("train", "--corpus", empty, "--run-dir", tmp_path / "r2", *MICRO_FLAGS), "is empty")
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    refused(cli("train", "--corpus", short, "--run-dir", tmp_path / "r3", *MICRO_FLAGS))
    for r in ["r1", "r2", "r3"]:  # the data is read before the run folder is written: a corrected --corpus can reuse it
        assert not (tmp_path / r).exists()
    assert not any((tmp_path / "cwd").iterdir())


def test_sample_template_longer_than_model(cli, trained_run):
    """Lengths beyond L are generated semi-autoregressively, but one template must fit in the model."""
    before = _digest(trained_run)
    refused(cli("sample", trained_run, "--template", "[40]", "--no-progress"), "more than the model's maximum length 32")
    refused(cli("sample", trained_run, "--template", "no spans here", "--no-progress"), "no [N] span")
    refused(cli("sample", trained_run, "--prompt", "a" * 40, "--length", "20", "--no-progress"), "leaves nothing to generate")
    refused(cli("sample", trained_run, "--sampler", "first-hitting", "--grid", "cosine", "--no-progress"), "no time grid")
    assert _digest(trained_run) == before


def test_unknown_sampler_and_split(cli, trained_run):
    before = _digest(trained_run)
    refused(cli("sample", trained_run, "--sampler", "magic"), "unknown sampler 'magic'", "ancestral", "cached")
    refused(cli("eval", trained_run, "--split", "dev"), "unknown split 'dev'", "validation")
    assert _digest(trained_run) == before


def test_token_ids_out_of_range(trained_run):
    """The library refuses ids outside [0, V] and too long inputs with a MaskdiffError naming the range."""
    import maskdiff

    pipe = maskdiff.load(trained_run)
    V = pipe.tokenizer.vocab_size
    with pytest.raises(MaskdiffError, match=f"token id {V + 1} is out of range"):
        pipe.denoiser(torch.full((1, 8), V + 1), torch.ones(1))
    with pytest.raises(MaskdiffError, match="token id -1 is out of range"):
        pipe.denoiser(torch.full((1, 8), -1), torch.ones(1))
    with pytest.raises(MaskdiffError, match="exceeds the model's maximum length"):
        pipe.nelbo("a" * 33)
    with pytest.raises(MaskdiffError, match=f"token id {V + 5} is out of range"):
        pipe.tokenizer.decode([V + 5])
    with pytest.raises(MaskdiffError, match="not in this tokenizer's alphabet"):
        from maskdiff.data.tokenizers import CharTokenizer

        CharTokenizer("abc").encode("abd")


def test_truncated_checkpoint(cli, trained_run, tmp_path):
    """A truncated checkpoint is named as such; automatic choice falls back to the previous one."""
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = _digest(run)
    refused(cli("eval", run, "--checkpoint", newest, "--limit", "4", "--no-progress"), "truncated or corrupted")
    proc = cli("eval", run, "--limit", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "truncated or corrupted" in proc.stdout and "step 2" in proc.stdout
    assert _digest(run) == before  # nothing on disk changed


def test_pickle_checkpoint_refused(trained_run, tmp_path):
    """A pickle file in place of safetensors is refused, never unpickled."""
    import pickle

    from maskdiff.checkpoint import read_tensors

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(MaskdiffError, match="never unpickles"):
        read_tensors(bad)
    torch.save({"w": torch.zeros(2)}, tmp_path / "t.safetensors")
    with pytest.raises(MaskdiffError, match="never unpickles"):
        read_tensors(tmp_path / "t.safetensors")


def test_run_dir_with_other_config(trained_run):
    """Reusing a run directory with a different configuration is refused, naming the field."""
    cfg = micro_config(steps=4)
    cfg.model.width = 64
    with pytest.raises(MaskdiffError, match="model.width"):
        train(cfg, trained_run, progress=False)


MATRIX = [
    (["eval", "{run}", "--split", "holdout"], ["holdout"]),
    (["eval", "{run}", "--passes", "0"], ["positive integer"]),
    (["eval", "{run}", "--batch-size", "-1"], ["positive integer"]),
    (["eval", "{run}", "--discrete-steps", "ten"], ["positive integer"]),
    (["eval", "{run}", "--checkpoint", "/no/such/checkpoint"], ["does not exist"]),
    (["eval", "{run}", "--corpus", "/no/such/file.txt"], ["does not exist"]),
    (["sample", "{run}", "--sampler", "beam"], ["unknown sampler 'beam'", "ancestral"]),
    (["sample", "{run}", "--steps", "0"], ["positive integer"]),
    (["sample", "{run}", "--temperature", "0"], ["temperature"]),
    (["sample", "{run}", "--top-p", "2"], ["top"]),
    (["sample", "{run}", "--num", "0"], ["positive integer"]),
    (["sample", "{run}", "--template", "no span here"], ["[N]"]),
    (["train", "--run-dir", "{run}", "--width", "64", "--steps", "8"], ["model.width"]),
    (["train", "--run-dir", "{run}", "--objective", "bert"], ["unknown objective", "masked, genmd4, sedd, ar"]),
    (["train", "--run-dir", "{run}", "--parallel", "zero3"], ["unknown parallel mode", "ddp, fsdp"]),
    (["train", "--run-dir", "{run}", "--device", "tpu"], ["unknown device", "auto, cpu, cuda"]),
    (["train", "--run-dir", "{run}", "--max-bad-steps", "0"], ["positive integer"]),
    (["train", "--run-dir", "{run}", "--genmd4-samples", "0"], ["positive integer"]),
    (["train", "--run-dir", "{run}", "--t-min", "1.5"], ["--t-min", "[0, 1)"]),
    (["experiment", "scaling-laws"], ["unknown experiment", "schedules", "ar"]),
    (["experiment", "ar", "--scale", "huge"], ["unknown scale", "test, cpu, gpu"]),
    (["exponents", "{run}"], ["exponents exist only"]),
]


@pytest.mark.parametrize("args, needles", MATRIX, ids=[" ".join(a[:1] + a[2:4]) for a, _ in MATRIX])
def test_bad_input_matrix_leaves_the_run_intact(cli, tmp_path, trained_run, args, needles):
    """Every case: exit status 2, one clear line, no traceback, the run directory byte for byte unchanged and
    nothing written elsewhere."""
    before = _digest(trained_run)
    refused(cli(*[a.format(run=trained_run) for a in args]), *needles)
    assert _digest(trained_run) == before
    assert not any((tmp_path / "cwd").iterdir())


@pytest.mark.parametrize("header_bytes", [0x4B50, 0x4B50 + 0x10000, 0x80, 0x180])
def test_safetensors_whose_header_length_looks_like_a_magic_number(tmp_path, header_bytes):
    """A real safetensors file whose 8-byte header length starts with b'PK' or 0x80 still loads."""
    import json as _json

    from maskdiff.checkpoint import read_tensors
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    for pad in range(0, 4096):
        save_file({"w": torch.arange(4.0)}, str(path), metadata={"pad": "x" * pad})
        if int.from_bytes(path.read_bytes()[:8], "little") & 0xFFFF == header_bytes & 0xFFFF:
            break
    n = int.from_bytes(path.read_bytes()[:8], "little")
    if n & 0xFFFF != header_bytes & 0xFFFF:  # safetensors pads headers to 8 bytes: build the length by hand
        body = path.read_bytes()[8 + n:]
        header = _json.loads(path.read_bytes()[8:8 + n])
        text = _json.dumps(header).encode()
        text += b" " * (header_bytes - len(text))
        path.write_bytes(len(text).to_bytes(8, "little") + text + body)
    assert path.read_bytes()[:2] == b"PK" or path.read_bytes()[:1] == b"\x80"
    torch.testing.assert_close(read_tensors(path)["w"], torch.arange(4.0))


def test_wrong_architecture_checkpoint(cli, trained_run, tmp_path):
    """A checkpoint of another architecture is named as not fitting, and nothing on disk changes."""
    other = tmp_path / "wide"
    cfg = micro_config(steps=1)
    cfg.model.width = 64
    train(cfg, other, progress=False)
    ckpt = sorted((other / "checkpoints").glob("step_*"))[-1]
    before = _digest(trained_run)
    refused(cli("eval", trained_run, "--checkpoint", ckpt, "--limit", "2", "--no-progress"), "does not fit this model's architecture")
    assert _digest(trained_run) == before


def test_the_console_script_refuses_bad_input(tmp_path):
    """The installed ``maskdiff`` script (pyproject's entry point) prints the same one line and exits 2."""
    script = Path(sys.executable).parent / "maskdiff"
    assert script.exists(), f"{script} is missing: install maskdiff (make test does) to get the console script"
    proc = subprocess.run([str(script), "train", "--schedule", "cosin", "--run-dir", str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    refused(proc, "maskdiff train: error: unknown schedule 'cosin'", "linear", "mdlm-cosine")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _start(*args, cwd):
    """The command as a user starts it in a terminal: SIGINT at its default disposition (a suite started in
    the background by a shell without job control inherits SIGINT ignored, and so would every child)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "maskdiff.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait(ready, proc, what, timeout=240):
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_ctrl_c_stops_training_after_the_step_and_saves_it(tmp_path):
    """Ctrl-C during ``maskdiff train``: the current step ends, a checkpoint of it is saved, exit status 130."""
    from maskdiff.checkpoint import latest_valid_checkpoint

    run = tmp_path / "run"
    proc = _start("train", "--run-dir", run, *MICRO_FLAGS, "--steps", "100000", "--log-every", "1", "--threads", "1", cwd=tmp_path)
    log = run / "log.jsonl"
    _wait(lambda: log.exists() and len(log.read_text().splitlines()) >= 2, proc, "two logged steps")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "Traceback" not in out
    steps = len(log.read_text().splitlines())
    assert "stopping after this step and saving a checkpoint" in out
    assert f"saved step {steps} to {run}; run the same command again to resume" in out
    assert f"trained {run} to step {steps} (from scratch" in out
    assert latest_valid_checkpoint(run)[1]["step"] == steps


def test_ctrl_c_while_sampling_is_one_line(trained_run, tmp_path):
    """Ctrl-C anywhere else (here: mid-sampling) prints 'interrupted', exits 130 and writes no samples."""
    before = _digest(trained_run)
    proc = _start("sample", trained_run, "--sampler", "ancestral", "--steps", "10000000", "--num", "1", cwd=tmp_path)
    _wait(lambda: bool(select.select([proc.stderr], [], [], 0)[0]), proc, "progress bar")  # sampling has begun
    for _ in range(6):  # Python drops a Ctrl-C that lands inside a finalizer (__del__): press it again, as a user would
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.kill()
        pytest.fail(f"maskdiff sample ignored six Ctrl-C: {proc.communicate()}")
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].endswith("interrupted")
    assert _digest(trained_run) == before
