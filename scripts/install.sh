#!/usr/bin/env bash
# Install simsearch and everything it needs into the current Python environment.
#   bash scripts/install.sh          # runtime + test dependencies and the serve extra (simsearch serve)
#   bash scripts/install.sh --dev    # also the pinned lint and type-check tools (ruff, mypy) and the ray
#                                    # extra (simsearch index --ray; its tests, tests/test_ray.py)
# torch/torchvision are pinned to the releases this project is tested with
# (on the project's CI machines pip takes them from local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=test,serve
for arg in "$@"; do
  case "$arg" in
    --dev) EXTRAS=test,serve,dev,ray ;;
    *) echo "usage: bash scripts/install.sh [--dev]" >&2; exit 2 ;;
  esac
done

if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  echo "installing torch + torchvision (pinned) ..." >&2
  "$PY" -m pip install -q torch==2.14.1 torchvision==0.29.1
fi
"$PY" -m pip install -q -e ".[$EXTRAS]"

# Fashion-MNIST as IDX files (Debian package), for the demo and the real-data tests
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v apt-get >/dev/null \
   && [ "$(id -u)" = 0 ]; then
  echo "installing dataset-fashion-mnist ..." >&2
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || echo "note: could not install dataset-fashion-mnist; the fetch script will try torchvision's downloader" >&2
fi
