"""Bad input: one clear error line, non-zero exit, no traceback, nothing on disk damaged."""
import hashlib

import pytest
import torch

from helpers import MICRO_FLAGS, assert_clean_error, micro_config, run_cli
from maskdiff import MaskdiffError
from maskdiff.train import train


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad") / "run"
    train(micro_config(steps=4, checkpoint_every=2, keep_checkpoints=3), run, progress=False)
    return run


def _digest(path):
    return {p.relative_to(path): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


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
def test_cli_bad_values(tmp_path, args, needles):
    """Each wrong flag or value names what was wrong (and the valid choices)."""
    proc = run_cli(*args, *(["--run-dir", tmp_path / "r"] if args[0] == "train" else []))
    assert_clean_error(proc, *needles)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_and_empty_data_files(tmp_path):
    """A missing or empty data file is one clear error."""
    proc = run_cli("train", "--corpus", tmp_path / "nope.txt", "--run-dir", tmp_path / "r1", *MICRO_FLAGS)
    assert_clean_error(proc, "does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    proc = run_cli("train", "--corpus", empty, "--run-dir", tmp_path / "r2", *MICRO_FLAGS)
    assert_clean_error(proc, "is empty")
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    proc = run_cli("train", "--corpus", short, "--run-dir", tmp_path / "r3", *MICRO_FLAGS)
    assert_clean_error(proc)


def test_sample_template_longer_than_model(trained_run):
    """Lengths beyond L are generated semi-autoregressively, but one template must fit in the model."""
    proc = run_cli("sample", trained_run, "--template", "[40]", "--no-progress")
    assert_clean_error(proc, "more than the model's maximum length 32")
    proc = run_cli("sample", trained_run, "--template", "no spans here", "--no-progress")
    assert_clean_error(proc, "no [N] span")
    proc = run_cli("sample", trained_run, "--prompt", "a" * 40, "--length", "20", "--no-progress")
    assert_clean_error(proc, "leaves nothing to generate")
    proc = run_cli("sample", trained_run, "--sampler", "first-hitting", "--grid", "cosine", "--no-progress")
    assert_clean_error(proc, "no time grid")


def test_unknown_sampler_and_split(trained_run):
    assert_clean_error(run_cli("sample", trained_run, "--sampler", "magic"), "unknown sampler 'magic'", "ancestral", "cached")
    assert_clean_error(run_cli("eval", trained_run, "--split", "dev"), "unknown split 'dev'", "validation")


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


def test_truncated_checkpoint(trained_run, tmp_path):
    """A truncated checkpoint is named as such; automatic choice falls back to the previous one."""
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    before = _digest(run)
    proc = run_cli("eval", run, "--checkpoint", newest, "--limit", "4", "--no-progress")
    assert_clean_error(proc, "truncated or corrupted")
    proc = run_cli("eval", run, "--limit", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "truncated or corrupted" in proc.stdout and "step 2" in proc.stdout
    assert _digest(run) == before  # nothing on disk changed


def test_pickle_checkpoint_refused(trained_run, tmp_path):
    """A pickle file in place of safetensors is refused, never unpickled."""
    import pickle
    import shutil

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
def test_bad_input_matrix_leaves_the_run_intact(trained_run, args, needles):
    """Every case: non-zero exit, one clear line, no traceback, and the run directory byte for byte unchanged."""
    before = _digest(trained_run)
    proc = run_cli(*[a.format(run=trained_run) for a in args])
    assert_clean_error(proc, *needles)
    assert _digest(trained_run) == before


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


def test_wrong_architecture_checkpoint(trained_run, tmp_path):
    """A checkpoint of another architecture is named as not fitting, and nothing on disk changes."""
    other = tmp_path / "wide"
    cfg = micro_config(steps=1)
    cfg.model.width = 64
    train(cfg, other, progress=False)
    ckpt = sorted((other / "checkpoints").glob("step_*"))[-1]
    before = _digest(trained_run)
    proc = run_cli("eval", trained_run, "--checkpoint", ckpt, "--limit", "2", "--no-progress")
    assert_clean_error(proc, "does not fit this model's architecture")
    assert _digest(trained_run) == before
