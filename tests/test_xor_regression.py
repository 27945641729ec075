"""XOR-5D numbers do not change: a small grid against a reference CSV.

The reference (tests/data/xor_regression.csv) was rewritten once when the fused kernels became
bit-reproducible across CPUs (no fastmath, fixed-order sums; docs/xor5d.md), with::

    python tests/test_xor_regression.py --write

It covers every base condition and the reset methods (``frozen-rand@flip``,
``frozen-sufficient@posCon``, ``frozen-rand@zero``, posRand by default), the experiment's own path
(``run_job``: jobs, fused kernels, float32) and one mixed job (padding and masked steps) through
``train_batched`` on both the fused and the torch path.  The fused rows (``run_job``, ``fused``)
must agree bit for bit on any machine; the torch rows (torch's matmul kernels are chosen per
instruction set) bit for bit on the machine that wrote the reference
(tests/data/xor_regression.json names its CPU and libraries), with a tolerance elsewhere.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"
CSV, META = DATA / "xor_regression.csv", DATA / "xor_regression.json"
CONDITIONS = ("frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient", "frozen-rand@flip",
              "frozen-sufficient@posCon", "frozen-rand@zero")
FIELDS = ("path", "condition", "n", "width", "trial", "epoch", "train_loss", "train_acc", "val_loss",
          "val_acc", "switch1", "switch2")


def _hp():
    from polarity.experiments import get

    quick = get("xor5d").presets["quick"]
    return dataclasses.replace(quick, conditions=CONDITIONS, sample_sizes=(8, 40, 100), widths=(3, 8),
                               trials=2, epochs=5, lr=0.1, merge_ratio=1.25, sign_switch=True)


def _fmt(v) -> str:
    return repr(float(v))


def experiment_rows() -> list[dict]:
    """Every network of the grid through ``Xor5D.jobs`` and ``run_job`` (fused, float32)."""
    from polarity.experiments import get

    xor, hp = get("xor5d"), _hp()
    rows = []
    for job in xor.jobs(hp):
        for r in xor.run_job(hp, job):
            k = r.key
            for e in r.epochs:
                rows.append(dict(path="run_job", condition=k.condition, n=k.n, width=k.width, trial=k.trial,
                                 epoch=e.epoch, train_loss=_fmt(e.train_loss), train_acc=_fmt(e.train_acc),
                                 val_loss=_fmt(e.val_loss), val_acc=_fmt(e.val_acc),
                                 switch1=_fmt(e.extra["switch/fc1.weight"]),
                                 switch2=_fmt(e.extra["switch/fc2.weight"])))
    return rows


def batched_rows() -> list[dict]:
    """One job mixing widths 3 and 8 (padding) and 1 and 4 batches per epoch (masked steps),
    through ``train_batched`` on the fused and the torch path."""
    from polarity.experiments.xor5d import prepare_job, train_batched

    hp = _hp()
    groups = [(0, 20), (1, 100)]
    cols = [(c, 3 if i % 2 else 8) for i, c in enumerate(CONDITIONS)]
    job, _, _ = prepare_job(hp, groups, cols)
    rows = []
    for fused in (True, False):
        res = train_batched(job, fused=fused)
        for gi, (t, n) in enumerate(groups):
            for ci, (c, w) in enumerate(cols):
                for e in range(hp.epochs):
                    rows.append(dict(path="fused" if fused else "torch", condition=c, n=n, width=w, trial=t,
                                     epoch=e + 1, train_loss=_fmt(res.train_loss[e, gi, ci]),
                                     train_acc=_fmt(res.train_acc[e, gi, ci]),
                                     val_loss=_fmt(res.val_loss[e, gi, ci]), val_acc=_fmt(res.val_acc[e, gi, ci]),
                                     switch1=_fmt(res.switch[e, 0, gi, ci]), switch2=_fmt(res.switch[e, 1, gi, ci])))
    return rows


def all_rows() -> list[dict]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = experiment_rows() + batched_rows()
    finally:
        torch.set_num_threads(old)
    key = lambda r: (r["path"], r["condition"], int(r["n"]), int(r["width"]), int(r["trial"]), int(r["epoch"]))  # noqa: E731
    return sorted(rows, key=key)


def environment() -> dict:
    import llvmlite.binding as llvm
    import numba

    return {"cpu": llvm.get_host_cpu_name(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "numba": numba.__version__, "numpy": np.__version__}


def test_numbers_equal_the_reference():
    with CSV.open(newline="") as f:
        want = list(csv.DictReader(f))
    got = all_rows()
    key_fields = FIELDS[:6]
    assert [tuple(str(r[k]) for k in key_fields) for r in got] == [tuple(r[k] for k in key_fields) for r in want]
    values = FIELDS[6:]
    same_machine = json.loads(META.read_text()) == environment()

    def changed(rows):
        return [(r["path"], r["condition"], r["n"], r["width"], r["trial"], r["epoch"], k)
                for r, w in rows for k in values if r[k] != w[k]]

    fused = [(r, w) for r, w in zip(got, want) if r["path"] != "torch"]
    torch_rows = [(r, w) for r, w in zip(got, want) if r["path"] == "torch"]
    diff = changed(fused)
    assert not diff, f"{len(diff)} values of the fused kernels changed, first: {diff[:5]}"
    if same_machine:
        diff = changed(torch_rows)
        assert not diff, f"{len(diff)} values of the torch path changed, first: {diff[:5]}"
    else:
        a = np.array([[float(r[k]) for k in values] for r, _ in torch_rows])
        b = np.array([[float(w[k]) for k in values] for _, w in torch_rows])
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-3)
        pytest.skip(f"another machine or library versions than the reference's ({environment()}): the "
                    "fused rows matched bit for bit, the torch rows with a tolerance")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_xor_regression.py --write   (rewrites the reference)")
    DATA.mkdir(exist_ok=True)
    rows = all_rows()
    with CSV.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    META.write_text(json.dumps(environment(), indent=1) + "\n")
    print(f"wrote {len(rows)} rows to {CSV}")
