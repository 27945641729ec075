import os
from pathlib import Path

# scripts/test.sh runs the suite on two pytest-xdist workers (PYTEST_XDIST_WORKER is gw0, gw1),
# one per core. Set before torch and numpy load their thread pools:
# - one BLAS/OpenMP thread per worker, so that two workers do not oversubscribe two cores;
# - each worker its own numba cache: numba updates a kernel's cache index by read-modify-write
#   without a lock, so two processes saving different signatures of one kernel at the same moment
#   can leave one signature pointing at the other's compiled code. (In .cache/, which git ignores,
#   so that it persists between runs like the in-tree cache a serial run uses.)
# Session- and module-scoped fixtures are built once per worker. A test module whose module-scoped
# fixture does real work (a run, a training, spawned ranks) marks itself
# `pytestmark = pytest.mark.xdist_group("<module>")` so that --dist loadgroup keeps it on one worker;
# every test that starts Ray is in the group "ray" (one Ray at a time, the cluster started once).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    os.environ["NUMBA_CACHE_DIR"] = str(Path(os.environ.get("NUMBA_CACHE_DIR")
                                             or Path(__file__).resolve().parents[1] / ".cache" / "numba") / _WORKER)

import pytest  # noqa: E402
import torch  # noqa: E402

# Small models run fastest, and least disturbed by other processes, on one thread.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 6 * 6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4),
    )
