"""Progress that reads in a log (issue 14): when stderr is not a terminal, a line when the run
starts, one every ``--progress-every`` seconds (done/total trials, rate, ETA) and one at the end;
source pretraining reports its epochs; ``--quiet`` silences both."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from polarity.engine.progress import Progress, fmt_duration

STATUS = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] toy/quick: (\d+)/(\d+) trials \(\d+%\), \S+ elapsed, "
                    r"(?:[\d.e+]+ trials/(?:s|min), ETA \S+|ETA unknown)$")


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.pop("COLUMNS", None)
    return env


def test_lines_every_period_with_done_total_rate_eta():
    out = io.StringIO()
    with Progress(12, 2, desc="toy/quick", stream=out, every=0.15) as p:
        for _ in range(5):
            time.sleep(0.1)
            p.update(2)
        p.log("pretraining 'pretrained:fmnist': epoch 1/1, train loss 2.3000, train acc 0.100 (1s)")
        time.sleep(0.35)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("toy/quick: 10 of 12 trials to compute, 2 done before")
    status = [ln for ln in lines[1:-1] if STATUS.match(ln)]
    assert len(status) >= 2, lines
    assert any("trials/s, ETA" in ln for ln in status)
    assert any(ln.endswith("epoch 1/1, train loss 2.3000, train acc 0.100 (1s)") for ln in lines)
    assert re.search(r"toy/quick: 12/12 trials \(100%\), \S+ elapsed, [\d.]+ trials/s$", lines[-1]), lines[-1]


def test_a_quiet_log_stays_quiet_and_lines_keep_their_period():
    out = io.StringIO()
    with Progress(4, stream=out, every=0.2, desc="toy/quick") as p:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:
            p.log("a message")  # a phase that talks: no status line needed meanwhile
            time.sleep(0.02)
    lines = out.getvalue().splitlines()
    assert not any(STATUS.match(ln) for ln in lines[1:-1]), lines
    assert fmt_duration(42) == "42s" and fmt_duration(425) == "7m05s" and fmt_duration(3 * 3600 + 720) == "3h12m"


def _polarity(*args) -> list[str]:
    return [sys.executable, "-m", "polarity", *map(str, args)]


@pytest.mark.skipif(shutil.which("nohup") is None, reason="no nohup here")
def test_a_run_under_nohup_writes_progress_lines_to_its_log(tmp_path):
    log = tmp_path / "run.log"

    def argv(out, *more):
        return ["nohup", *_polarity("run", "toy", "--set", "ns=8,16,24,32", "--set", "sleep_s=0.4",
                                    "--progress-every", "0.25", "--out", out, "--no-report", *more)]

    with open(log, "w") as f:
        r = subprocess.run(argv(tmp_path / "run"), stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=_env(),
                           timeout=300, cwd=tmp_path)
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    assert any(ln.endswith("toy/quick: 16 of 16 trials to compute") for ln in lines), text
    status = [STATUS.match(ln) for ln in lines]
    counts = [(int(m[1]), int(m[2])) for m in status if m]
    assert len(counts) >= 3 and all(t == 16 for _, t in counts), text
    assert re.search(r"toy/quick: 16/16 trials \(100%\), \S+ elapsed, [\d.]+ trials/s$", lines[-3]), text
    assert "\r" not in text  # no bar redraws in a log
    assert "16/16 trials complete" in text

    quiet = tmp_path / "quiet.log"
    with open(quiet, "w") as f:
        r = subprocess.run(argv(tmp_path / "run2", "--quiet"), stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, env=_env(), timeout=300, cwd=tmp_path)
    assert r.returncode == 0
    assert not any(STATUS.match(ln) for ln in quiet.read_text().splitlines()), quiet.read_text()


@pytest.mark.slow
def test_source_is_pretrained_once_by_the_driver_and_reports_its_epochs(tmp_path):
    """--workers 2 with a pretrained: source: the driver trains it before any job (its epochs in the
    log, before the first trial), the workers read it from the cache; --quiet hides it."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for split, count in (("train", 8), ("test", 4)):
        for k, name in enumerate(("red", "green", "blue")):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
                img[..., k] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    cache = tmp_path / "cache"

    def argv(pretrain_epochs):
        return _polarity("run", "images", "--preset", "tiny", "--dataset", f"folder:{root}", "--source",
                         "pretrained:fmnist", "--set", "sample_sizes=12,18", "--set", "epochs=2", "--set",
                         "batch_size=6", "--set", "in_size=16", "--set", "pretrain_n=48", "--set",
                         f"pretrain_epochs={pretrain_epochs}", "--workers", "2", "--progress-every", "0.5",
                         "--no-report")

    log = tmp_path / "run.log"
    with open(log, "w") as f:
        r = subprocess.run([*argv(2), "--out", tmp_path / "run"], stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, env=_env(POLARITY_CACHE=str(cache)), timeout=600)
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    epochs = [i for i, ln in enumerate(lines) if re.search(
        r"pretraining 'pretrained:fmnist': epoch \d/2, train loss [\d.]+, train acc [\d.]+ \(\d+s\)$", ln)]
    assert len(epochs) == 2, text  # once, by the driver (workers never print)
    assert "images/tiny: 12 of 12 trials to compute" in lines[0]
    first_trial = next(i for i, ln in enumerate(lines) if re.search(r"images/tiny: ([1-9]\d*)/12 trials", ln))
    assert epochs[-1] < first_trial
    assert len(list((cache / "sources").iterdir())) == 1
    # --quiet: another source is pretrained, silently
    with open(tmp_path / "quiet.log", "w") as f:
        r = subprocess.run([*argv(1), "--out", tmp_path / "run2", "--quiet"],
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                           env=_env(POLARITY_CACHE=str(cache)), timeout=600)
    quiet = (tmp_path / "quiet.log").read_text()
    assert r.returncode == 0, quiet
    assert "pretraining" not in quiet and "trials (" not in quiet, quiet
    assert len(list((cache / "sources").iterdir())) == 2
