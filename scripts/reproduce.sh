#!/usr/bin/env bash
# Sets everything up, then runs the main job: a reduced but real reproduction on a CPU.
#   1. XOR-5D, paper Figure 1 at full scale (11 sample sizes x 50 trials x 3 conditions, 100 epochs):
#      polarity frozen to a sufficient template learns faster and from fewer samples;
#   2. Fashion-MNIST, the `transfer` study: all six conditions and the structure-free control
#      (frozen-shuffled: the transferred template permuted within each tensor) at n = 100, the
#      paper's headline sample size, with 12 paired trials (add --set sample_sizes=100,250,1000 to
#      grow the same run to the whole preset: about 35 more minutes on 2 cores), polarity and weights transferred from the compact network shipped in
#      the repository (trained on CIFAR-10, the offline JPEG copy; `polarity source list`).
# Results, reports and figures land in runs/ (rerunning resumes; finished trials are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1
.venv/bin/polarity run xor5d --preset fig1 --out runs/xor5d-fig1 "$@"
.venv/bin/polarity run fmnist --preset transfer --set sample_sizes=100 --workers 2 --out runs/fmnist-transfer "$@"
echo
echo "reports: runs/xor5d-fig1/report/report.md  runs/fmnist-transfer/report/report.md"
