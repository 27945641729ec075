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


def _start(tmp_path, cpu_name) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(NUMBA_CACHE_DIR=str(tmp_path / (cpu_name or "native")), NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    if cpu_name:
        env["NUMBA_CPU_NAME"] = cpu_name
    return subprocess.Popen([sys.executable, "-c", CHILD], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return out.split()


def test_generic_and_native_targets_give_identical_numbers(tmp_path):
    # both compile at once, each in its own process and cache (each compiles on one thread)
    procs = [_start(tmp_path, "generic"), _start(tmp_path, None)]
    try:
        (generic_cpu, generic), (native_cpu, native) = [_result(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert generic_cpu == "generic" and native_cpu != "generic"
    assert generic == native, f"{generic_cpu} and {native_cpu} kernels disagree"
