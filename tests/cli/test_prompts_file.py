"""``maskdiff sample RUN --prompts-file in.jsonl --out out.jsonl``: JSON lines in, JSON lines out in input order
(the input fields kept, the rows the library's), and a bad line refused with its line number, nothing written."""
import json

import maskdiff
from helpers import assert_clean_error, run_main
from maskdiff.sampling.rows import Row, RowsRequest


def test_prompts_file_in_and_out(served_run, tmp_path):
    lines = [{"prompt": "to be", "length": 20, "id": "a"}, {"template": "the [5] is"}, {"prompt": "or not", "seed": 3}]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(l) for l in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n", encoding="utf-8")
    proc = run_main("sample", served_run, "--prompts-file", src, "--out", out, "--steps", "8", "--batch-size", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "3 rows" in proc.stdout and str(out) in proc.stdout
    written = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    rows = maskdiff.load(served_run).run_rows(RowsRequest([Row(prompt="to be", length=20), Row(template="the [5] is"),
                                                           Row(prompt="or not", seed=3)], steps=8))
    for line, got, want in zip(lines, written, rows):
        assert got == dict(line, text=want.text, tokens=want.tokens, network_calls=want.network_calls, seconds=got["seconds"],
                           eos=False)
    assert len(written[0]["tokens"]) == 20 and len(written[2]["tokens"]) == 32


def test_a_bad_line_is_named_and_nothing_is_written(served_run, tmp_path):
    out = tmp_path / "out.jsonl"
    for body, needle in [('{"prompt": "to be"}\n{"prompt": "to be", "length": 3}', "line 2: the prompt has 5 tokens"),
                         ('{"prompt": "to be"}\n\n{"template": "no span"}', "line 3: the template has no [N] span"),
                         ('{"prompt": ""}', "line 1: the prompt is empty"),
                         ('{"id": 1}', 'line 1: give exactly one of "prompt"'),
                         ('{"prompt": "a"}\n{"prompt": "b",', "line 2: not valid JSON")]:
        src = tmp_path / "in.jsonl"
        src.write_text(body, encoding="utf-8")
        assert_clean_error(run_main("sample", served_run, "--prompts-file", src, "--out", out, "--no-progress"), needle)
        assert not out.exists() and list(tmp_path.iterdir()) == [src]
    assert_clean_error(run_main("sample", served_run, "--prompts-file", src, "--prompt", "x"), "leave out --prompt")


def test_help_mentions_the_prompts_file(capsys):
    proc = run_main("sample", "--help")
    assert proc.returncode == 0 and "--prompts-file" in proc.stdout and "--batch-size" in proc.stdout and "--stop-at-eos" in proc.stdout
