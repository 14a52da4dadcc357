"""Digests of what maskdiff computes for fixed seeds: weights after short trainings of every objective,
NELBOs, and samples of every sampler (plain, prompt, template). Run before and after a refactor and
compare: every entry must be identical.

    PYTHONPATH=src python benchmarks/digests.py --out after.json [--work DIR]
    python benchmarks/digests.py --compare before.json after.json
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def sha(t):
    import torch
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


RUNS = {
    # name: extra train flags (all on the tiny preset, shrunk)
    "masked": [],
    "masked-tc": ["--time-conditioned"],
    "genmd4": ["--objective", "genmd4", "--time-conditioned"],
    "sedd": ["--objective", "sedd"],
    "ar": ["--objective", "ar"],
    "block": ["--objective", "block", "--block-size", "4"],
    "subs-ablation": ["--no-carry-over", "--discrete-steps", "100", "--time-sampler", "uniform"],
    "mdlm-dit": ["--backbone", "mdlm-dit", "--local-mixing", "0"],
}
COMMON = ["--steps", "12", "--batch-size", "8", "--length", "32", "--width", "32", "--depth", "2", "--heads", "2",
          "--checkpoint-every", "6", "--log-every", "6", "--no-progress", "--threads", "1", "--warmup-steps", "2"]
SAMPLERS = ["ancestral", "cached", "mean", "greedy", "first-hitting", "confidence", "remdm-cap", "remdm-rescale",
            "remdm-conf", "remdm-loop", "threshold"]


def train(work, name, flags):
    run = Path(work) / name
    if not run.exists():
        cmd = [sys.executable, "-m", "maskdiff.cli", "train", "--preset", "tiny", "--run-dir", str(run)] + COMMON + flags
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if r.returncode:
            raise SystemExit(f"training {name} failed:\n{r.stderr[-2000:]}")
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--work", default=None)
    ap.add_argument("--compare", nargs=2)
    a = ap.parse_args()
    if a.compare:
        x, y = (json.loads(Path(p).read_text()) for p in a.compare)
        keys = sorted(set(x) | set(y))
        bad = [k for k in keys if x.get(k) != y.get(k)]
        for k in bad:
            print(f"DIFF {k}: {x.get(k)} != {y.get(k)}")
        print(f"{len(keys) - len(bad)} of {len(keys)} identical")
        sys.exit(1 if bad else 0)
    import torch
    import maskdiff
    from safetensors.torch import load_file
    torch.set_num_threads(1)
    work = a.work or str(Path(a.out).with_suffix("")) + "-runs"
    out = {}
    for name, flags in RUNS.items():
        run = train(work, name, flags)
        ck = sorted((run / "checkpoints").iterdir())[-1]
        w = load_file(str(ck / "model.safetensors"))
        out[f"weights/{name}"] = hashlib.sha256(b"".join(sha(w[k]).encode() + k.encode() for k in sorted(w))).hexdigest()[:16]
        model = maskdiff.load(run)
        nel = model.nelbo(["to be or not to be that is the q", "and so the king did go to france"], passes=4, seed=3)
        out[f"nelbo/{name}"] = [round(float(v), 10) for v in nel]
        if name in ("masked", "masked-tc", "mdlm-dit"):
            names = SAMPLERS if name == "masked" else ["ancestral", "cached", "first-hitting"]
            for s in names:
                for seed in (0, 1):
                    cases = {"plain": {}, "prompt": {"prompt": "to be or"}, "template": {"template": "to be [6] not [5] be"}}
                    for cname, kw in cases.items():
                        try:
                            o = model.sample(3, steps=16, sampler=s, seed=seed, **kw)
                            out[f"sample/{name}/{s}/{seed}/{cname}"] = [sha(o.tokens), [int(n) for n in o.nfe.flatten().tolist()]]
                        except Exception as err:  # noqa
                            out[f"sample/{name}/{s}/{seed}/{cname}"] = f"error: {type(err).__name__}: {err}"
            o = model.sample(2, steps=16, sampler="ancestral", seed=0, length=48)
            out[f"sample/{name}/semi-ar"] = sha(o.tokens)
        else:
            for seed in (0, 1):
                try:
                    kw = {"length": 40} if name == "block" else {}
                    o = model.sample(3, steps=16, seed=seed, **kw) if name != "sedd" else model.sample(3, steps=16, seed=seed, sampler="ancestral")
                    out[f"sample/{name}/own/{seed}"] = sha(o.tokens)
                    o = model.sample(3, steps=16, seed=seed, prompt="to be or", **kw) if name != "sedd" else model.sample(3, steps=16, seed=seed, prompt="to be or", sampler="ancestral")
                    out[f"sample/{name}/own-prompt/{seed}"] = sha(o.tokens)
                except Exception as err:  # noqa
                    out[f"sample/{name}/own/{seed}"] = f"error: {type(err).__name__}: {err}"
    Path(a.out).write_text(json.dumps(out, indent=1, sort_keys=True))
    print(f"{len(out)} digests -> {a.out}")


if __name__ == "__main__":
    main()
