#!/usr/bin/env bash
# Sets everything up, then runs the main job: a reduced but real reproduction on a CPU.
#   1. XOR-5D, paper Figure 1 at full scale (11 sample sizes x 50 trials x 3 conditions, 100 epochs);
#   2. Fashion-MNIST, the `quick` image protocol, polarity transferred from a compact AlexNet that
#      the project pretrains on CIFAR-10 (the offline JPEG copy) — all six conditions.
# Results, reports and figures land in runs/ (rerunning resumes; finished trials are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
.venv/bin/polarity run xor5d --preset fig1 --out runs/xor5d-fig1 "$@"
.venv/bin/polarity run fmnist --preset quick --source pretrained:cifar10 --workers 2 --out runs/fmnist-quick "$@"
echo
echo "reports: runs/xor5d-fig1/report/report.md  runs/fmnist-quick/report/report.md"
