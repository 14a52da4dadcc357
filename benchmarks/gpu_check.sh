#!/usr/bin/env bash
# The GPU check, in one command from the repository root of a machine with a GPU:
#
#     bash benchmarks/gpu_check.sh            # about 7 minutes on an H100/H200 (plus set-up on a bare machine)
#
# 1. prints nvidia-smi and the torch / CUDA versions; 2. finds or makes a Python whose torch sees the GPU
# (the .venv of `make`, else a system python with CUDA torch, else `make install` and, if its torch
# still sees no GPU, `pip install torch` into .venv); 3. runs the CUDA suite (tests/gpu, what
# `make test-gpu` runs); 4. runs benchmarks/gpu.py. Each stage has a time limit and a failure does not
# stop the next. Results go to benchmarks/results/ and, with the pytest log, to $OUT when it is set.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$OUT_DIR" benchmarks/results
LOG="$OUT_DIR/gpu_check.log"
MARK="$(mktemp)"
: > "$LOG"
say() { echo "== $*" | tee -a "$LOG"; }
declare -A STATUS

say "nvidia-smi"
(timeout 30 nvidia-smi 2>&1 || echo "nvidia-smi failed") | tee -a "$LOG"

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # maskdiff from this tree, installed or not
cuda_ok() { "$1" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; }
PY=""
if [ -x .venv/bin/python ] && cuda_ok .venv/bin/python; then
  PY=.venv/bin/python
elif command -v python3 >/dev/null && cuda_ok python3; then
  PY=python3
else
  say "no Python with CUDA torch: make install (pinned torch), then plain pip install torch if needed"
  timeout 420 make install 2>&1 | tail -5 | tee -a "$LOG"
  if ! cuda_ok .venv/bin/python; then
    timeout 420 .venv/bin/pip install --quiet --disable-pip-version-check torch 2>&1 | tail -5 | tee -a "$LOG"
  fi
  PY=.venv/bin/python
fi
# maskdiff's own dependencies and pytest, when missing (needs a package index)
if ! "$PY" -c "import maskdiff.cli, pytest, scipy" >/dev/null 2>&1; then
  timeout 300 "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 | tail -5 | tee -a "$LOG"
fi
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
import torch
print("python torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
PYEOF

say "CUDA suite: pytest -q tests/gpu (limit 220 s)"
timeout 220 "$PY" -m pytest -q -p no:cacheprovider -rs tests/gpu 2>&1 | tee "$OUT_DIR/pytest_gpu.log" | tail -30 | tee -a "$LOG"
STATUS[pytest]=${PIPESTATUS[0]}

say "benchmarks/gpu.py (limit 200 s; partial results are saved as it goes)"
timeout 200 "$PY" benchmarks/gpu.py 2>&1 | tee "$OUT_DIR/benchmark_gpu.log" | tee -a "$LOG"
STATUS[benchmark]=${PIPESTATUS[0]}

for f in $(find benchmarks/results -maxdepth 1 -name 'gpu_*.json' -newer "$MARK"); do cp "$f" "$OUT_DIR/"; done
rm -f "$MARK"
say "summary"
for k in pytest benchmark; do
  s=${STATUS[$k]}
  case $s in 0) w=ok;; 124|137) w="timed out";; *) w="failed (exit $s)";; esac
  echo "$k: $w" | tee -a "$LOG"
done
grep -E "passed|failed|skipped|error" "$OUT_DIR/pytest_gpu.log" | tail -1 | tee -a "$LOG"
grep -E "^train|^sample|measured" "$OUT_DIR/benchmark_gpu.log" | tee -a "$LOG"
echo "results: $OUT_DIR and benchmarks/results/" | tee -a "$LOG"
