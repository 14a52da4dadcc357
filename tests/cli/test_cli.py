"""The command line, in this process through ``main(argv)``: the help of every command and every flag,
and a tiny end-to-end train / eval / sample run whose printed figures are checked against the library's."""
import argparse
import json
import math

import pytest

from helpers import MICRO_FLAGS, run_main
from maskdiff.cli.main import build_parser


def _commands(parser=None, path=()):
    """(command path, parser) for ``maskdiff`` and every subcommand, nested ones (data list / fetch) included."""
    parser = parser or build_parser()
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + (name,))


COMMANDS = dict(_commands())
IDS = [" ".join(path) or "maskdiff" for path in COMMANDS]


def test_every_command_is_walked():
    """The walk reaches every command that main.py registers (a command left out would go untested)."""
    names = {path[0] for path in COMMANDS if path}
    assert names == {"train", "eval", "sample", "experiment", "exponents", "data", "zero-shot", "export", "convert", "serve", "demo", "plan", "plot", "distill"}
    assert ("data", "fetch") in COMMANDS and ("data", "list") in COMMANDS


@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_every_flag_and_subcommand_has_help(path):
    """Every option and positional of every command, and every subcommand, says what it is for."""
    for action in COMMANDS[path]._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                assert choice.help and choice.help.strip(), (path, choice.dest)
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip() and action.help is not argparse.SUPPRESS, (path, name)


@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_help_exits_0_and_shows_every_flag(path, capsys):
    """``maskdiff CMD --help`` exits 0 and prints every flag (help strings formatted: no stray %)."""
    with pytest.raises(SystemExit) as exit_:
        from maskdiff.cli.main import main

        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: maskdiff" + "".join(f" {p}" for p in path))
    assert "%%" not in out  # argparse formats help strings but prints descriptions as written
    for action in COMMANDS[path]._actions:
        for flag in action.option_strings:
            assert flag in out, (path, flag)
    text = " ".join(out.split())
    if path == ("train",):
        assert "linear, loglinear, polynomial, geometric, cosine, mdlm-cosine" in text
    if path == ("experiment",):
        for name in ["schedules", "time-conditioning", "subs", "discrete-time", "genmd4", "sedd", "ar", "samplers", "sudoku", "distill"]:
            assert f"\n  {name} " in out, name


def test_no_command_prints_help_and_fails(capsys):
    proc = run_main()
    assert proc.returncode == 2 and proc.stdout.startswith("usage: maskdiff") and "COMMAND" in proc.stdout


def _independent_bits(pipe, limit, seed=0, batch_size=64):
    """(bits per character, low, high) of the first ``limit`` validation sequences, computed here from
    the per-sequence NELBOs: the ratio of sums and a delta-method 95% interval (MDLM's reporting)."""
    from maskdiff.modalities import eval_chunks

    tokens, valid = eval_chunks(pipe.config, pipe.tokenizer, "validation")
    result = pipe.evaluate(tokens[:limit], valid[:limit], passes=1, batch_size=batch_size, seed=seed)
    y, n = result.nelbo.double(), result.tokens.double()
    assert y.numel() == limit
    r = float(y.sum() / n.sum())
    k = y.numel()
    se = math.sqrt(k / (k - 1) * float(((y - r * n) ** 2).sum())) / float(n.sum())
    z = 1.959963984540054
    ln2 = math.log(2)
    return r / ln2, (r - z * se) / ln2, (r + z * se) / ln2


@pytest.mark.slow
def test_train_eval_sample_end_to_end(tmp_path, capsys):
    """train -> eval -> sample on a micro model; a second train resumes, a third finds nothing to do; the
    BPC that eval prints and writes is the bound of the same sequences computed here, with its interval."""
    import maskdiff

    run = tmp_path / "run"
    proc = run_main("train", "--run-dir", run, "--steps", "3", *MICRO_FLAGS)
    assert proc.returncode == 0, proc.stderr
    assert "from scratch" in proc.stdout
    for name in ["config.json", "tokenizer.json", "log.jsonl"]:
        assert (run / name).exists()
    assert len(list((run / "checkpoints").glob("step_*"))) == 1

    proc = run_main("train", "--run-dir", run, "--steps", "5", *MICRO_FLAGS)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from step 3" in proc.stdout
    proc = run_main("train", "--run-dir", run, "--steps", "5", *MICRO_FLAGS)
    assert "nothing to do" in proc.stdout

    out = tmp_path / "eval.json"
    proc = run_main("eval", run, "--limit", "20", "--no-progress", "--json", out)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["sequences"] == 20 and record["step"] == 5 and record["weights"] == "ema"
    bpc, lo, hi = _independent_bits(maskdiff.load(run), 20)
    assert f"shakespeare validation: BPC <= {bpc:.4f} (95% CI {lo:.4f}-{hi:.4f})" in proc.stdout, proc.stdout
    assert record["bits_per_token"] == pytest.approx(bpc, rel=1e-12)
    assert record["bits_per_token_ci95"] == pytest.approx([lo, hi], rel=1e-12)
    assert "640 characters in 20 sequences" in proc.stdout  # 20 rows of L = 32
    # the raw weights are another model: the same command with --raw-weights prints another bound
    proc = run_main("eval", run, "--limit", "20", "--no-progress", "--raw-weights")
    assert proc.returncode == 0 and f"BPC <= {bpc:.4f} " not in proc.stdout and "model weights of step 5" in proc.stdout

    proc = run_main("sample", run, "--num", "2", "--steps", "16", "--no-progress", "--out", tmp_path / "s.txt")
    assert proc.returncode == 0, proc.stderr
    texts = (tmp_path / "s.txt").read_text().strip().split("\n\n")
    assert len(texts) == 2 and all(len(t) == 32 for t in texts)
    assert all(set(t) <= set(" abcdefghijklmnopqrstuvwxyz") for t in texts)
    expected = maskdiff.load(run).sample(2, steps=16, sampler="cached", seed=0)
    assert texts == expected.texts  # the command draws what the library draws for the same seed

    proc = run_main("sample", run, "--num", "2", "--steps", "16", "--sampler", "ancestral", "--length", "16", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "ancestral sampler" in proc.stdout


@pytest.mark.slow
def test_sample_options(tmp_path, capsys):
    """Prompts, [N] templates, lengths beyond L, every sampler, and the unmasking pictures."""
    run = tmp_path / "run"
    assert run_main("train", "--run-dir", run, "--steps", "2", *MICRO_FLAGS).returncode == 0
    common = ["--num", "2", "--steps", "8", "--no-progress"]
    proc = run_main("sample", run, "--prompt", "to be or", *common, "--out", tmp_path / "p.txt")
    assert proc.returncode == 0, proc.stderr
    assert all(t.startswith("to be or") for t in (tmp_path / "p.txt").read_text().strip().split("\n\n"))
    proc = run_main("sample", run, "--template", "to be [5] not [3] be", *common, "--out", tmp_path / "t.txt")
    assert proc.returncode == 0, proc.stderr
    for text in (tmp_path / "t.txt").read_text().strip().split("\n\n"):
        assert text[:6] == "to be " and text[11:16] == " not " and text.endswith(" be") and len(text) == 22
    proc = run_main("sample", run, "--length", "100", "--sampler", "first-hitting", *common, "--out", tmp_path / "l.txt")
    assert proc.returncode == 0, proc.stderr
    assert [len(t) for t in (tmp_path / "l.txt").read_text().strip().split("\n\n")] == [100, 100]
    assert "(100 network calls)" in proc.stdout
    for sampler in ["ancestral", "mean", "greedy", "confidence"]:
        proc = run_main("sample", run, "--sampler", sampler, "--top-p", "0.9", "--temperature", "0.8", *common)
        assert proc.returncode == 0, (sampler, proc.stderr)
        assert f"2 samples, {sampler} sampler, 8 steps" in proc.stdout
    proc = run_main("sample", run, "--visualize", tmp_path / "viz", "--num", "1", "--steps", "8", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    assert Image.open(tmp_path / "viz" / "unmasking.png").size[0] > 100
    gif = Image.open(tmp_path / "viz" / "unmasking.gif")
    assert gif.n_frames >= 2
    proc = run_main("sample", run, "--show", "--num", "1", "--steps", "8")
    assert proc.returncode == 0 and "\033[" in proc.stdout


def test_sampler_options_go_to_the_sampler_they_name():
    """The sampler flags come from the registry's declarations: each flag reaches its sampler under the
    sampler's own keyword, a flag left out is not passed, and a flag given to a sampler that does not take
    it is an error naming the flag, the samplers that take it and the sampler asked for."""
    from maskdiff import MaskdiffError
    from maskdiff.cli.sample import sampler_options
    from maskdiff.sampling.registry import REGISTRY, cli_options

    def options(sampler, *argv):
        return sampler_options(build_parser().parse_args(["sample", "run", *argv]), sampler)

    flags = {a.option_strings[0] for a in build_parser()._subparsers._group_actions[0].choices["sample"]._actions if a.option_strings}
    assert set(cli_options()) <= flags  # every declared option has its flag
    assert options("cached") == {}
    assert options("remdm-loop", "--eta", "0.1", "--t-on", "0.6", "--t-off", "0.1", "--alpha-on", "0.95") == {
        "eta": 0.1, "t_on": 0.6, "t_off": 0.1, "alpha_on": 0.95}
    assert options("threshold", "--threshold", "0.5", "--decode-block", "8", "--kv-cache", "dual") == {
        "threshold": 0.5, "block_size": 8, "cache": "dual"}
    assert options("ancestral", "--grid", "cosine", "--temperature", "0.5") == {"grid": "cosine", "temperature": 0.5}
    assert options("block", "--no-kv-cache") == {"kv_cache": False}
    for name, entry in REGISTRY.items():  # every option of every sampler reaches it from its flag
        for option in entry.options:
            value = {bool: None, str: (option.choices or ("x",))[-1], int: 3, float: 0.05}[option.kind]
            argv = [option.cli_flag] + ([] if value is None else [str(value)])
            got = options(name, *argv)
            assert list(got) == [option.name], (name, argv, got)
    for sampler, argv, needles in [("ancestral", ["--eta", "0.1"], ["--eta", "remdm-cap", "ancestral"]),
                                   ("remdm-cap", ["--t-off", "0.1"], ["--t-off", "remdm-loop", "remdm-cap"]),
                                   ("cached", ["--decode-block", "4"], ["--decode-block", "threshold", "cached"]),
                                   ("first-hitting", ["--grid", "cosine"], ["--grid", "first-hitting", "no time grid"]),
                                   ("remdm-loop", ["--alpha-on", "1.5"], ["alpha_on", "(0, 1]"])]:
        with pytest.raises(MaskdiffError) as err:
            options(sampler, *argv)
        assert all(n in str(err.value) for n in needles), (argv, str(err.value))
