#!/usr/bin/env bash
# ONE command for a CUDA machine (about 10 minutes): what only a GPU can measure, written to results/perf/*_cuda.md.
#   1. every trained task's `paper` preset on a random ViT-B/16 (bf16 AMP, mini data in the real layouts, a few
#      iterations at the paper's input sizes): img/s and peak GPU memory -> results/perf/paper_cuda.md;
#   2. `benchmark plan`'s utilisation: the measured training FLOP rate over the GPU's bf16 peak
#      -> results/perf/plan_utilisation_cuda.json (plan then prints "measured" instead of "assumed");
#   3. the CUDA paths of the bench scripts (pre-training, combined, tracking, semantic), each with its own table.
# Without a CUDA device it stops at once with one line and exit 2. Not part of CI.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "error: device_check needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); run it on a GPU machine after \`make setup\`" >&2
  exit 2
fi
out=results/perf
mkdir -p "$out"
"$PY" scripts/device_check.py --out "$out" || echo "device_check: the paper-preset runs failed (see above)" >&2
# each bench script writes its own *_cuda table; a failure of one does not stop the others
timeout 120 "$PY" scripts/bench_pretrain.py --device cuda --models vit_b,swin_b --rounds 2 --tag cuda || true
timeout 120 "$PY" scripts/bench_combined.py --device cuda || true
timeout 90 "$PY" scripts/bench_tracking.py --device cuda || true
timeout 60 "$PY" scripts/bench_semantic.py --device cuda || true
ls -1 "$out"/*cuda* 2>/dev/null
