"""Shared helpers for the tests: a micro configuration and a CLI runner."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import torch

from maskdiff.presets import tiny

REPO = Path(__file__).resolve().parents[1]


def micro_config(steps: int = 6, corpus=None, **train):
    """The tiny preset shrunk to seconds: 1 block of width 32, length 32, batch 4. ``corpus``: a text file
    to train on instead of the whole Shakespeare train split (the ``plays`` fixture: no 4M-character encode)."""
    cfg = tiny()
    cfg.model.width, cfg.model.depth, cfg.model.heads, cfg.model.cond_dim = 32, 1, 2, 16
    cfg.data.length = 32
    if corpus is not None:
        cfg.data.corpus = str(corpus)
    cfg.train.steps, cfg.train.batch_size, cfg.train.warmup_steps = steps, 4, 2
    cfg.train.checkpoint_every, cfg.train.log_every = 1000, 1
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


MICRO_FLAGS = ["--width", "32", "--depth", "1", "--heads", "2", "--length", "32", "--batch-size", "4", "--warmup-steps", "2", "--no-progress"]


def run_cli(*args, cwd=None, timeout=300):
    """Run ``python -m maskdiff.cli`` in a subprocess; returns CompletedProcess with text output."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "maskdiff.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env,
    )


def run_main(*args):
    """``maskdiff ARGS`` in this process (``maskdiff.cli.main.main``, the console script's function), for
    commands that fail before any work: a CompletedProcess with its exit status and captured output, so
    :func:`assert_clean_error` reads it as it reads :func:`run_cli`'s, without a fresh interpreter."""
    import contextlib
    import io

    from maskdiff.cli.main import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["maskdiff", *argv], code, out.getvalue(), err.getvalue())


def assert_clean_error(proc, *needles):
    """Non-zero exit, no traceback, exactly one line that starts the error, mentioning each needle."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if "error" in l.lower()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


class ServerThread:
    """``maskdiff serve``'s application under uvicorn in a background thread on a free loopback port:
    ``with ServerThread(app) as url: ...``. Real sockets, so disconnects and concurrency are real."""

    def __init__(self, app):
        self.app = app

    def __enter__(self) -> str:
        import threading
        import time

        import uvicorn

        from maskdiff.serve import listen

        self.sock = listen("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


# ---- synthetic genomes (the DNA modality's tests and the media commands' tests)

def write_genome(path, seq, width=60):
    body = "\n".join(seq[i : i + width] for i in range(0, len(seq), width))
    text = f">{path.stem}\n{body}\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def genome_dir(root, length=3000, seed=0):
    """train/validation/test folders, species 'at' (GC 25%) and 'gc' (GC 75%), one genome gzipped."""
    g = torch.Generator().manual_seed(seed)
    layout = {"train": [("at", "a1.fa"), ("gc", "c1.fa.gz"), ("at", "a2.fa")], "validation": [("gc", "c2.fa")], "test": [("at", "a3.fa"), ("gc", "c3.fa")]}
    for split, files in layout.items():
        for species, name in files:
            gc = 0.25 if species == "at" else 0.75
            p = torch.tensor([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
            seq = "".join("ACGT"[i] for i in torch.multinomial(p, length, replacement=True, generator=g).tolist())
            seq = seq[:100].lower() + "N" * 40 + seq[140:]
            (root / split / species).mkdir(parents=True, exist_ok=True)
            write_genome(root / split / species / name, seq)
    return root


# ---- a tiny random BERT as the network (pretrained and hf tests)

TINY_BERT = {"model_type": "bert", "vocab_size": 4, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 8, "type_vocab_size": 1, "mask_token_id": 3, "pad_token_id": 0,
             "initializer_range": 1.0, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def bert_pipeline():
    """A Pipeline over a tiny random BERT with the BERT WordPiece vocabulary (untrained)."""
    from maskdiff.modalities import build_tokenizer
    from maskdiff.objectives import build_objective
    from maskdiff.pipeline import Pipeline

    cfg = micro_config()
    cfg.model.backbone, cfg.data.tokenizer = "hf", "bert"
    cfg.model.hf_config = dict(TINY_BERT, vocab_size=30522, mask_token_id=103, initializer_range=0.5)
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    pipe = Pipeline(cfg, tok, build_objective(cfg, tok.vocab_size))
    pipe.weights, pipe.step = "ema", 3
    return pipe
