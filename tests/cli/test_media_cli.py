"""DNA and image runs end to end through the command line, at a tiny size."""
import json
import math

import pytest
from PIL import Image

from helpers import MICRO_FLAGS, assert_clean_error, genome_dir, run_cli, run_main

IMAGE_FLAGS = ["--width", "32", "--depth", "1", "--heads", "2", "--batch-size", "8", "--warmup-steps", "2", "--no-progress"]


@pytest.mark.slow
def test_dna_train_eval_probe_sample(tmp_path):
    corpus = genome_dir(tmp_path / "genomes")
    run = tmp_path / "run"
    proc = run_cli("train", "--preset", "dna", "--corpus", corpus, "--run-dir", run, "--steps", "4", "--threads", "1", *MICRO_FLAGS,
                   "--lr", "1e-2", "--ema-decay", "0")  # raw weights, a high rate: 4 steps visibly learn
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "eval.json"
    proc = run_cli("eval", run, "--split", "test", "--probe", "--json", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "bits/base <= " in proc.stdout and "6000 bases in 188 sequences" in proc.stdout, proc.stdout
    assert "species probe on held-out genomes (2 species" in proc.stdout
    record = json.loads(out.read_text())
    # an untrained model (zero output layer, uniform mu over A, C, G, T, N) is at log2(5) = 2.32 exactly; the
    # trained one is below it beyond its 95% interval (measured 2.12, [2.01, 2.23]), and above the data's
    # entropy, 1.81 bits per base (a bound cannot beat it; each genome's bases are i.i.d. with GC 25% or 75%)
    assert record["bits_per_token_ci95"][1] < math.log2(5) and record["bits_per_token"] > 1.75, record
    assert record["probe_kmer_accuracy"] > 0.95  # GC 25% against GC 75%: composition alone separates them
    # the model's mean-pooled features carry the base composition even after 4 steps (measured 0.996)
    assert record["probe_model_accuracy"] > 0.9 and record["probe_chance"] == 0.5
    proc = run_cli("sample", run, "--num", "2", "--steps", "8", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if len(l) == 32]
    assert len(lines) == 2 and set("".join(lines)) <= set("ACGTN"), proc.stdout


@pytest.mark.slow
def test_image_train_eval_fid_sample_grid(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("train", "--preset", "digits", "--run-dir", run, "--steps", "4", "--threads", "1", *IMAGE_FLAGS)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "eval.json"
    proc = run_cli("eval", run, "--fid", "20", "--sample-steps", "8", "--guidance", "1", "--json", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "BPD <= " in proc.stdout and "11520 pixels in 180 sequences" in proc.stdout, proc.stdout
    assert "FID-by-our-classifier (not comparable with the papers' Inception FID)" in proc.stdout
    record = json.loads(out.read_text())
    assert record["fid_classifier_accuracy"] > 0.8  # the feature map is a real digit classifier
    assert record["fid_ours"] > record["fid_ours_real_train_vs_heldout"]  # 4 training steps are far from the data
    assert (run / "fid_classifier.safetensors").exists()
    grid = tmp_path / "grid.png"
    proc = run_cli("sample", run, "--num", "20", "--steps", "8", "--guidance", "1", "--out", grid, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "20 images (class-conditional, guidance w = 1)" in proc.stdout
    assert Image.open(grid).size == ((10 * 10 + 2) * 8, (2 * 10 + 2) * 8)  # 10 columns (one per class) of 8x8 images, enlarged 8 times
    proc = run_cli("sample", run, "--num", "2", "--label", "12", "--steps", "4", "--no-progress")
    assert_clean_error(proc, "class 12 is out of range", "0..9")
    proc = run_cli("eval", run, "--probe", "--limit", "2", "--no-progress")
    assert_clean_error(proc, "--probe is for DNA runs")


def test_media_bad_input_is_one_line(tmp_path):
    proc = run_main("train", "--preset", "digits", "--length", "32", "--run-dir", tmp_path / "r", "--no-progress")
    assert_clean_error(proc, "8x8 = 64, not 32")
    proc = run_main("train", "--preset", "dna", "--corpus", tmp_path / "absent", "--run-dir", tmp_path / "r2", "--no-progress")
    assert_clean_error(proc, "unknown DNA corpus", "apt-get install ragout-examples")
    proc = run_main("train", "--preset", "tiny", "--num-classes", "10", "--run-dir", tmp_path / "r3", "--no-progress")
    assert_clean_error(proc, "class-conditional training needs labelled data")
    proc = run_main("train", "--preset", "digits", "--modality", "audio", "--run-dir", tmp_path / "r4", "--no-progress")
    assert_clean_error(proc, "unknown modality 'audio'", "text, dna, image")
