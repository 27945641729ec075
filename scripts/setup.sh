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
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian's dataset-fashion-mnist ..." >&2
  $SUDO apt-get update -q >/dev/null || true
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null
fi
