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

from polarity import cli
from polarity.engine.progress import Progress, fmt_duration

STATUS = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] toy/quick: (\d+)/(\d+) trials \(\d+%\), (?:best val error [\d.]+, )?\S+ elapsed, "
                    r"(?:[\d.,]+ trials/min, ETA \S+|ETA unknown)$")


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
    assert any("trials/min, ETA" in ln for ln in status)
    assert any(ln.endswith("epoch 1/1, train loss 2.3000, train acc 0.100 (1s)") for ln in lines)
    assert re.search(r"toy/quick: 12/12 trials \(100%\), \S+ elapsed, [\d.,]+ trials/min$", lines[-1]), lines[-1]


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
def test_a_run_under_nohup_writes_progress_lines_to_its_log(tmp_path, capsys):
    log = tmp_path / "run.log"

    def args(out, *more):
        return ["run", "toy", "--set", "sample_sizes=8,16,24,32", "--set", "sleep_s=0.4",
                "--progress-every", "0.25", "--out", str(out), "--no-report", *more]

    with open(log, "w") as f:
        r = subprocess.run(["nohup", *_polarity(*args(tmp_path / "run"))], stdin=subprocess.DEVNULL, stdout=f,
                           stderr=subprocess.STDOUT, env=_env(), timeout=300, cwd=tmp_path)
    text = log.read_text()
    assert r.returncode == 0, text
    lines = text.splitlines()
    assert any(ln.endswith("toy/quick: 16 of 16 trials to compute") for ln in lines), text
    status = [STATUS.match(ln) for ln in lines]
    counts = [(int(m[1]), int(m[2])) for m in status if m]
    assert len(counts) >= 3 and all(t == 16 for _, t in counts), text
    assert re.search(r"toy/quick: 16/16 trials \(100%\), best val error [\d.]+, \S+ elapsed, [\d.,]+ trials/min$",
                     lines[-3]), text
    assert "\r" not in text  # no bar redraws in a log
    assert "16/16 trials complete" in text

    # --quiet, in this process (stderr is not a terminal here either; one Python start less)
    capsys.readouterr()
    assert cli.main(args(tmp_path / "run2", "--quiet")) == 0
    quiet = "".join(capsys.readouterr())
    assert not any(STATUS.match(ln) for ln in quiet.splitlines()), quiet


@pytest.mark.slow
def test_source_is_pretrained_once_by_the_driver_and_reports_its_epochs(tmp_path, capsys, monkeypatch):
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

    def args(pretrain_epochs, workers, out):
        return ["run", "images", "--preset", "tiny", "--dataset", f"folder:{root}", "--source",
                "pretrained:fmnist", "--set", "sample_sizes=12,18", "--set", "epochs=2", "--set",
                "batch_size=6", "--set", "in_size=16", "--set", "pretrain_n=48", "--set",
                f"pretrain_epochs={pretrain_epochs}", "--workers", str(workers), "--progress-every", "0.5",
                "--no-report", "--out", str(out)]

    log = tmp_path / "run.log"
    with open(log, "w") as f:
        r = subprocess.run(_polarity(*args(2, 2, tmp_path / "run")), stdin=subprocess.DEVNULL, stdout=f,
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
    # --quiet: another source is pretrained, silently (in this process, by the driver's preparation
    # as above, its jobs here too: two Pythons and their pool fewer; the pool's workers never print)
    monkeypatch.setenv("POLARITY_CACHE", str(cache))
    capsys.readouterr()
    assert cli.main([*args(1, 1, tmp_path / "run2"), "--quiet"]) == 0
    quiet = "".join(capsys.readouterr())
    assert "pretraining" not in quiet and "trials (" not in quiet, quiet
    assert len(list((cache / "sources").iterdir())) == 2


# ----------------------------------------------------------------------------- issue 22, item 8

from hypothesis import given, settings, strategies as st  # noqa: E402

from polarity.engine import progress as progress_mod  # noqa: E402


def test_trials_count_when_they_finish_inside_a_job_with_the_best_validation_error():
    out = io.StringIO()
    with Progress(10, desc="toy/quick", stream=out, every=60) as p:
        progress_mod.trial_finished(0.30)  # the active progress listens in its own process
        progress_mod.trial_finished(0.25)
        assert p.shown() == 2 and p.best == 0.25
        p.update(4)  # their job (4 trials) is committed: the 2 are not counted again
        assert p.shown() == 4
        progress_mod.trial_finished(None, n=3)
        assert p.shown() == 7 and "best val error 0.2500" in p.status()
        assert re.search(r"trials/min, ETA \S+$", p.status())
    assert progress_mod._channel is None  # closed: reports go nowhere
    assert "toy/quick: 7/10 trials (70%), best val error 0.2500" in out.getvalue().splitlines()[-1]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 6)), min_size=1, max_size=6), st.randoms())
def test_shown_trials_never_overcount_never_go_back_and_end_at_the_total(jobs, rnd):
    """Jobs of any size report any number of their trials (before their result, as the executors
    guarantee) and commit, interleaved in any order."""
    jobs = [(size, min(k, size)) for size, k in jobs]
    total = sum(size for size, _ in jobs)
    events = []
    for j, (size, k) in enumerate(jobs):
        events.append([("report", j)] * k + [("commit", j)])
    p = Progress(total, quiet=True, stream=io.StringIO())
    finished, last = 0, 0
    while any(events):
        q = rnd.choice([e for e in events if e])
        kind, j = q.pop(0)
        if kind == "report":
            p.trials_finished(1, 0.5)
            finished += 1
        else:
            size, k = jobs[j]
            p.update(size)
            finished += size - k
        assert last <= p.shown() <= finished
        last = p.shown()
    assert p.shown() == total


def test_a_process_pool_reports_trials_and_their_best_error_to_the_driver(tmp_path):
    """--workers 2: trials reported by the workers reach the driver's log lines with the best
    validation error, and the count never passes the total or goes back."""
    log = tmp_path / "pool.log"
    with open(log, "w") as f:
        r = subprocess.run(_polarity("run", "toy", "--set", "sample_sizes=8,16,24,32", "--set", "sleep_s=0.3", "--workers", "2",
                                     "--progress-every", "0.2", "--out", tmp_path / "run", "--no-report"),
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT, env=_env(), timeout=300)
    text = log.read_text()
    assert r.returncode == 0, text
    counts = [int(m[1]) for m in map(STATUS.match, text.splitlines()) if m]
    assert counts == sorted(counts) and max(counts) == 16, text
    assert re.search(r"16/16 trials \(100%\), best val error 0\.\d{4}, ", text), text
