#!/usr/bin/env bash
# One idempotent set-up for both README commands: .venv (Python 3.11) with the pinned, verified stack,
# the project in editable mode, and the real Fashion-MNIST (Debian package). A stamp makes a repeat run a no-op;
# the slow mmcv build (~11 min on 2 cores) is cached outside the checkout, in $MIMBENCH_CACHE.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
CACHE=${MIMBENCH_CACHE:-$HOME/.cache/mimbench}
CONSTRAINTS=$ROOT/scripts/constraints.txt
STAMP=$VENV/.setup-stamp
MMCV_VERSION=2.1.0
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "setup: $*" >&2; }
want=$(cat scripts/setup.sh "$CONSTRAINTS" pyproject.toml | sha256sum | cut -d' ' -f1)

# 1. Real data for the demo and the tests.
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian package dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >&2
  else
    log "missing Fashion-MNIST: run 'sudo apt-get install dataset-fashion-mnist'"; exit 1
  fi
fi

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/benchmark" ]; then
  log "up to date ($VENV)"; exit 0
fi

# 2. The virtualenv.
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3.11 /usr/bin/python3.11; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { log "Python 3.11 not found: install it (e.g. pyenv install 3.11) or set PYTHON=/path/to/python3.11"; exit 1; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV with $PY"; "$PY" -m venv "$VENV"; }
# --no-compile: byte-compiling torch's thousands of files costs more than the lazy compile on first import.
PIP=("$VENV/bin/python" -m pip install -q --no-compile -c "$CONSTRAINTS")
STACK=(torch torchvision timm mmengine mmdet mmsegmentation mmpose pycocotools xtcocotools pandas tabulate pyyaml
       tqdm matplotlib pytest ruff import-linter ftfy regex scikit-image scikit-learn optuna scipy setuptools wheel
       ninja got10k six submitit plotly selenium tensorboard)
# xtcocotools' binary wheel breaks under numpy 2 ('dtype size changed'): always build it from source (pip caches
# the built wheel, so this costs seconds after the first time).
NO_BINARY=(--no-binary xtcocotools)

# 3. mmcv 2.1.0 with compiled ops: no cp311 wheel exists, and torch 2.14's headers need C++20. Built once, cached.
wheel=$(ls "$CACHE"/wheels/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  log "installing torch (mmcv's build needs it)"
  "${PIP[@]}" torch torchvision setuptools wheel ninja
  log "building mmcv $MMCV_VERSION from source (about 11 minutes on 2 cores; cached in $CACHE/wheels)"
  build=$(mktemp -d)
  mkdir -p "$CACHE/wheels"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
  tar xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
  sed -i 's/-std=c++17/-std=c++20/g; s/-std=c++14/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
  (cd "$build/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
     "$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps . -w "$build/out")
  cp "$build"/out/mmcv-*.whl "$CACHE/wheels/"
  rm -rf "$build"
  wheel=$(ls "$CACHE"/wheels/mmcv-$MMCV_VERSION-*.whl | head -n1)
fi

# 4. The whole stack in one resolver pass, on the cached mmcv wheel.
log "installing torch, timm, mmengine, mmcv (cached wheel), mmdet, mmsegmentation, mmpose and tools"
"${PIP[@]}" "${NO_BINARY[@]}" "$wheel" "${STACK[@]}"

# 5. The project itself. setuptools stays at the constraint (>= 81 drops pkg_resources, which mmengine and mmpose
#    import): every pip call here runs under the constraints file, so nothing upgrades it.
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" -c "import mmcv.ops, mmdet.models, mmseg.models, mmpose.models, mmpose.apis, xtcocotools.coco, skimage.data, benchmark.cli" \
  || { log "import check failed: see the messages above"; exit 1; }
echo "$want" > "$STAMP"
log "done ($VENV)"
