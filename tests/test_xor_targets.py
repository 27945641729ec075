"""XOR-5D numbers do not depend on the CPU they are computed on: the fused kernels compiled for
numba's portable target (``NUMBA_CPU_NAME=generic``: SSE2, no FMA) and for this machine's own
(AVX2/AVX-512 and FMA where it has them) give the same bits (docs/xor5d.md, "Bit-identical
numbers").  Each target compiles in its own process with its own empty numba cache."""
import os
import subprocess
import sys

import pytest

from polarity import _numba

pytestmark = pytest.mark.skipif(not _numba.NUMBA, reason="numba not installed")

# a job with padding (widths 7 and 12), masked steps (1, 2 and 4 batches per epoch), partial
# batches, every path of a step (posRand resets, fluid columns) and the validation pass
CHILD = r"""
import hashlib
import torch
torch.set_num_threads(1)
from numba.core import config
import llvmlite.binding as llvm
from polarity.experiments.xor5d import XorHparams, prepare_job, train_batched

hp = XorHparams(epochs=3, reset="posRand", lr=0.1, sign_switch=True)
cols = [("frozen-sufficient", 7), ("frozen-rand", 12), ("fluid-rand", 12)]
job, _, _ = prepare_job(hp, [(0, 20), (1, 44), (1, 100)], cols)
res = train_batched(job)
assert res.fused
h = hashlib.sha256()
for t in (res.train_loss, res.train_acc, res.val_loss, res.val_acc, res.switch, *res.params.values()):
    h.update(t.numpy().tobytes())
print(config.CPU_NAME or llvm.get_host_cpu_name(), h.hexdigest())
"""


def _run(tmp_path, cpu_name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(NUMBA_CACHE_DIR=str(tmp_path / (cpu_name or "native")), NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    if cpu_name:
        env["NUMBA_CPU_NAME"] = cpu_name
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()


def test_generic_and_native_targets_give_identical_numbers(tmp_path):
    generic_cpu, generic = _run(tmp_path, "generic")
    native_cpu, native = _run(tmp_path, None)
    assert generic_cpu == "generic" and native_cpu != "generic"
    assert generic == native, f"{generic_cpu} and {native_cpu} kernels disagree"
