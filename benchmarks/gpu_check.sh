#!/usr/bin/env bash
# The GPU check (issue 15) in one go: correctness of every CUDA path, speed, and the paper
# preset's GPU-hours.  benchmarks/gpu_check.py says what each JSON line holds.
#
#   bash benchmarks/gpu_check.sh            # one CUDA GPU: at most 8 minutes, nothing downloaded
#   bash benchmarks/gpu_check.sh --smoke    # the same code paths on the CPU, tiny sizes (~1 min)
#
# JSON lines go to $OUT/gpu_check.jsonl when $OUT is set, and to stdout.  Exit status: 0 every
# check passed, 1 a check failed, 2 no GPU (without --smoke), 124 the 8-minute limit was hit.
# Python: $PYTHON, else the repository's .venv, else python3 (with torch); the package is taken
# from src/, so nothing needs installing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
  py="$root/.venv/bin/python"
else
  py="$(command -v python3)"
fi
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec timeout --kill-after=10 "${GPU_CHECK_LIMIT_S:-480}" "$py" "$here/gpu_check.py" "$@"
