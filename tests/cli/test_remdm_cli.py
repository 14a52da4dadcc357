"""`maskdiff sample` with the remasking and threshold samplers, on a micro run trained here."""
import pytest

from helpers import MICRO_FLAGS, assert_clean_error, run_cli

pytestmark = pytest.mark.slow  # trains two runs and samples through the command line


def test_sample_with_remasking_and_threshold(tmp_path, plays):
    run = tmp_path / "run"
    # MDLM's network: the tiny preset's local mixing rules out the window caches (checked at the end)
    assert run_cli("train", "--run-dir", run, "--steps", "2", "--local-mixing", "0", "--corpus", plays, *MICRO_FLAGS).returncode == 0
    common = ["--num", "2", "--no-progress"]
    proc = run_cli("sample", run, "--sampler", "remdm-loop", "--steps", "64", "--eta", "0.1", "--t-on", "0.6", "--t-off", "0.1",
                   "--prompt", "to be", *common, "--out", tmp_path / "r.txt")
    assert proc.returncode == 0, proc.stderr
    assert "remdm-loop sampler, 64 steps" in proc.stdout
    assert all(t.startswith("to be") and len(t) == 32 for t in (tmp_path / "r.txt").read_text().strip().split("\n\n"))
    proc = run_cli("sample", run, "--sampler", "threshold", "--threshold", "0", "--decode-block", "8", "--kv-cache", "dual", *common)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("(4 network calls)") == 2  # threshold 0: one call per block of 8 of the 32 positions
    assert_clean_error(run_cli("sample", run, "--sampler", "ancestral", "--eta", "0.1", *common), "--eta", "remdm")
    assert_clean_error(run_cli("sample", run, "--sampler", "remdm-cap", "--t-on", "0.5", *common), "--t-on", "remdm-loop")
    assert_clean_error(run_cli("sample", run, "--sampler", "threshold", "--threshold", "2", *common), "[0, 1]")
    assert_clean_error(run_cli("sample", run, "--sampler", "remdm-cap", "--eta", "3", *common), "eta", "[0, 1]")
    mixing = tmp_path / "mixing"
    assert run_cli("train", "--run-dir", mixing, "--steps", "1", "--corpus", plays, *MICRO_FLAGS).returncode == 0
    assert_clean_error(run_cli("sample", mixing, "--sampler", "threshold", "--decode-block", "8", "--kv-cache", "prefix", *common),
                       "local mixing", "--kv-cache none")
    assert run_cli("sample", mixing, "--sampler", "threshold", "--decode-block", "8", *common).returncode == 0
