#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite on two pytest-xdist workers (one per core).
# loadgroup keeps each test module that marks itself xdist_group on one worker (its module-scoped
# fixtures are built once); arguments are passed on: `bash scripts/test.sh -n 0` runs it serially.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n 2 --dist loadgroup "$@"
