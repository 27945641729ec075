#!/usr/bin/env bash
# Creates .venv at the repository root and installs polarity with everything it needs,
# including Debian's Fashion-MNIST files when they are missing. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.polarity-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[dev]"
  touch "$stamp"
fi
# Fashion-MNIST: skipped when Debian's copy is installed or $POLARITY_FMNIST_DIR holds the four IDX
# files (your own copy, e.g. torchvision's FashionMNIST/raw); POLARITY_SKIP_APT=1 never calls apt.
have_fmnist() {
  for d in /usr/share/datasets/fashion-mnist "${POLARITY_FMNIST_DIR:-}"; do
    [ -n "$d" ] && { [ -f "$d/train-images-idx3-ubyte.gz" ] || [ -f "$d/train-images-idx3-ubyte" ]; } && return 0
  done
  return 1
}
if ! have_fmnist && [ "${POLARITY_SKIP_APT:-0}" != 1 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian's dataset-fashion-mnist ..." >&2
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null || {
    echo "setup: could not install Debian's dataset-fashion-mnist; install it, or set" \
         "POLARITY_FMNIST_DIR to a folder with the four Fashion-MNIST IDX files" \
         "(and POLARITY_SKIP_APT=1 to skip this step)" >&2; exit 1; }
fi
