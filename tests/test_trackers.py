"""`polarity export DIR --tensorboard LOGDIR / --mlflow URI` (issue 22, item 6): every trial's
curves read back with TensorBoard's own reader and from a real MLflow store on SQLite."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from polarity import cli
from polarity.engine import trackers
from polarity.store import epochs_frame

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_trackers")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("trk") / "run"
    assert cli.main(["run", "toy", "--set", "sample_sizes=8,16", "--set", "trials=2", "--set", "epochs=4", "--out", str(d),
                     "--quiet", "--no-report"]) == 0
    return d


def _export(capsys, *argv):
    code = cli.main(["export", *map(str, argv)])
    return code, capsys.readouterr()


def test_tensorboard_event_files_hold_every_trials_curves(run, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    code, cap = _export(capsys, run, "--tensorboard", logdir)
    assert code == 0 and "wrote 8 TensorBoard runs" in cap.err
    ep = epochs_frame(run)
    for _ in range(2):  # a second export replaces the files: no doubled points
        for key, g in ep.groupby(trackers.KEY):
            d = logdir / trackers.trial_dir(key)
            assert len(list(d.glob("events.out.tfevents.*"))) == 1
            acc = EventAccumulator(str(d))
            acc.Reload()
            assert set(acc.Tags()["scalars"]) == {"train_loss", "train_acc", "val_loss", "val_acc", "switch"}
            for tag in ("val_acc", "train_loss", "switch"):
                pts = acc.Scalars(tag)
                assert [p.step for p in pts] == g["epoch"].tolist()
                np.testing.assert_array_equal([p.value for p in pts], g[tag].to_numpy(np.float32))
        assert _export(capsys, run, "--tensorboard", logdir)[0] == 0


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory):
    """One MLflow database for the tests below, each in its own experiment (a new database runs
    MLflow's schema migrations: seconds), in a folder that is their working directory."""
    pytest.importorskip("mlflow")
    d = tmp_path_factory.mktemp("mlflow")
    return d, f"sqlite:///{d / 'mlflow.db'}"


def test_mlflow_runs_hold_params_and_metric_series(run, mlflow_dir, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    where, uri = mlflow_dir
    monkeypatch.chdir(where)  # nothing may land in the working directory
    code, cap = _export(capsys, run, "--mlflow", uri, "--mlflow-experiment", "study")
    assert code == 0 and "logged 8 MLflow runs" in cap.err, cap.err
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("study")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 8
    ep = epochs_frame(run)
    import json

    spec = json.loads((run / "spec.json").read_text())
    for r in runs:
        p = r.data.params
        assert p["lr"] == "0.5" and p["sample_sizes"] == "[8, 16]" and p["trial.seed"].isdigit()
        assert r.data.tags["polarity.spec_hash"] == spec["hash"] and r.info.status == "FINISHED"
        g = ep[(ep.condition == p["trial.condition"]) & (ep.n == int(p["trial.n"]))
               & (ep.trial == int(p["trial.trial"]))]
        hist = sorted(client.get_metric_history(r.info.run_id, "val_acc"), key=lambda m: m.step)
        assert [m.step for m in hist] == g["epoch"].tolist()
        np.testing.assert_allclose([m.value for m in hist], g["val_acc"].to_numpy())
    assert list(where.iterdir()) == [where / "mlflow.db"]
    # again: nothing new; a trial whose logging was interrupted is logged again, once
    victim = runs[0]
    client.set_tag(victim.info.run_id, "polarity.complete", "false")
    code, cap = _export(capsys, run, "--mlflow", uri, "--mlflow-experiment", "study")
    assert code == 0 and "logged 1 MLflow runs" in cap.err
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == 8


def test_a_grown_run_logs_only_its_new_trials_to_mlflow(tmp_path, mlflow_dir, capsys, monkeypatch):
    where, uri = mlflow_dir
    monkeypatch.chdir(where)
    d = tmp_path / "run"
    argv = ["run", "toy", "--set", "sample_sizes=8", "--set", "epochs=2", "--out", str(d), "--quiet", "--no-report"]
    assert cli.main([*argv, "--set", "trials=2"]) == 0
    code, cap = _export(capsys, d, "--mlflow", uri, "--mlflow-experiment", "grown")
    assert code == 0 and "logged 4 MLflow runs" in cap.err, cap.err
    assert cli.main([*argv, "--set", "trials=3"]) == 0  # grown: one more trial per condition
    code, cap = _export(capsys, d, "--mlflow", uri, "--mlflow-experiment", "grown")
    assert code == 0 and "logged 2 MLflow runs" in cap.err, cap.err


def test_a_missing_tracker_package_is_a_one_line_error_before_anything_is_read(run, tmp_path, capsys,
                                                                               monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mlflow", "tensorboard") else real(name, *a))
    for flag, value in (("--mlflow", "sqlite:///x.db"), ("--tensorboard", tmp_path / "tb")):
        code, cap = _export(capsys, run, flag, value)
        assert code == 2 and cap.err.count("\n") == 1
        assert f"pip install 'polarity[{flag[2:]}]'" in cap.err
    assert not (tmp_path / "tb").exists()
