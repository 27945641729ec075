"""benchmarks/gpu_check.sh, the one prepared GPU check (issue 15), kept working on the CPU: its
--smoke run goes through every code path with tiny sizes and must pass."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
CHECKS = ("transform_device_vs_host", "freezer_device_vs_cpu", "frozen_run_no_violations",
          "xor_device_vs_cpu")
MEASURES = ("host_syncs", "reset_cost", "train_throughput", "paper_epoch", "paper_gpu_hours")


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", mod)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["gpu_check"])
    return sys.modules["gpu_check"]


def _env(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.mark.slow
def test_smoke_run_passes_and_reports_every_part(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke"], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (tmp_path / "gpu_check.jsonl").read_text().splitlines()
    assert lines == proc.stdout.splitlines()  # the same lines to $OUT and to stdout
    recs = {r["check"]: r for r in map(json.loads, lines)}
    assert list(recs) == ["env", *CHECKS, *MEASURES, "summary"]
    assert recs["env"]["smoke"] is True and recs["env"]["device"] == "cpu"
    for name in CHECKS:
        assert recs[name]["ok"] is True, recs[name]
    assert recs["summary"] == {**recs["summary"], "ok": True, "failed": [], "skipped": []}
    # what each part reports
    fz = recs["freezer_device_vs_cpu"]["cases"]
    assert {(c["dtype"], c["method"]) for c in fz} == {(d, m) for d in ("float32", "bfloat16")
                                                        for m in ("posCon", "posRand", "zero", "flip")}
    assert all(c["entries_differing"] == 0 and c["reset_entries"] > 0 for c in fz)
    for mode in ("fp32", "bf16-cl"):
        run = recs["frozen_run_no_violations"][mode]
        assert set(run["violations_after_each_step"]) == {0} and sum(run["resets_per_step"]) > 0
    xor = recs["xor_device_vs_cpu"]
    assert xor["float64_vs_cpu-torch"]["max_param_diff"] == 0.0
    assert recs["reset_cost"]["reset_over_copy"] > 0 and recs["reset_cost"]["reset_over_fused_adam"] > 0
    thr = recs["train_throughput"]
    assert set(thr) >= {"fp32", "bf16-cl", "tf32"}
    assert thr["fp32"]["freezer_slowdown"] > 0 and thr["fp32"]["images_per_s_fluid"] > 0
    ep = recs["paper_epoch"]
    assert "synthetic" in ep["data"] and set(ep["fp32"]["epoch_s"]) == {"fluid-rand", "frozen-rand"}
    hours = recs["paper_gpu_hours"]
    for mode in ("fp32", "bf16-cl"):
        for ds, trainings in (("cifar10", 9 * 6 * 20), ("fmnist", 13 * 6 * 20)):
            assert hours[mode][ds]["trainings"] == trainings and hours[mode][ds]["gpu_hours"] > 0
    assert hours["smoke"] is True


def test_without_a_gpu_and_without_smoke_it_says_so(tmp_path, capsys, monkeypatch):
    """gpu_check.py's main in-process (the smoke test above runs it through the shell script, whose
    exit status is main's)."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    monkeypatch.setenv("OUT", str(tmp_path))
    threads = torch.get_num_threads()
    try:
        assert _module().main([]) == 2
    finally:
        torch.set_num_threads(threads)  # main sets the GPU run's threads before it looks for one
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["check"] == "summary" and last["ok"] is False and "--smoke" in last["error"]


def test_step_time_interpolation():
    interp = _module()._interp
    times = {100: 1.0, 500: 3.0, 1000: 5.0}
    assert interp(times, 100) == 1.0 and interp(times, 300) == 2.0 and interp(times, 750) == 4.0
    assert interp(times, 50) == 1.0  # below the smallest measured batch: no cheaper than it
    assert interp(times, 2000) == 10.0


def test_a_part_that_raises_is_a_failed_check_and_the_budget_skips(tmp_path, capsys):
    mod = _module()
    run = mod.Run(tmp_path / "x.jsonl", budget_s=10.0)
    run.part("breaks", lambda: 1 / 0)
    run.part("too_long", lambda: {"ok": True}, need_s=60)
    run.part("fine", lambda: {"ok": True, "value": 3})
    recs = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [r["check"] for r in recs] == ["breaks", "too_long", "fine"]
    assert recs[0]["ok"] is False and "ZeroDivisionError" in recs[0]["error"]
    assert recs[1]["ok"] is None and "budget" in recs[1]["skipped"]
    assert run.failed == ["breaks"] and run.skipped == ["too_long"]
