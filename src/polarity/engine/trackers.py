"""A run's curves in the trackers researchers follow runs in: TensorBoard event files and MLflow.

Both read only the store's tidy frames (``Store.epochs_frame``: one row per trial and epoch;
``Store.trials_frame``: one row per trial), so they export any finished or partial run, of any
schema, the same way; each trial is one tracker run and its epochs are the steps.

* ``to_tensorboard(epochs, logdir)``: one event file per trial under
  ``LOGDIR/<experiment>/<condition>/n=<n>/width=<width>/trial=<trial>``, one event per epoch
  holding every metric (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` and the numeric
  per-epoch extras) as scalars.  Exporting again replaces the trial's file (no doubled curves).
* ``to_mlflow(epochs, trials, hparams, uri)``: one MLflow run per trial in the experiment
  ``experiment`` (created when missing): the run's hyper-parameters and the trial's key and seed
  as params, the series as metrics with ``step = epoch``, the spec hash and trial key as tags.
  Trials already logged whole for this spec are skipped, so exporting again adds only new trials
  (a trial whose logging was interrupted is logged again).

Optional dependencies: ``pip install 'polarity[tensorboard]'`` / ``'polarity[mlflow]'``.
"""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..experiments.base import ExperimentError
from ..store import EPOCH_COLUMNS, METRICS

KEY = ["experiment", "condition", "n", "width", "trial"]
EVENT_SUFFIX = ".polarity"  # our event files end with it; a re-export replaces them
MLFLOW_PARAM_MAX = 6000  # MLflow's limit on a param value's length
MLFLOW_BATCH = 1000  # metrics per log_batch call (MLflow's limit)


class TrackerError(ExperimentError):
    """A tracker's package is missing or its destination cannot be written (a user error)."""


def check_available(*, tensorboard: bool = False, mlflow: bool = False) -> None:
    """Refuse before anything is read when a requested tracker's package is not installed."""
    for wanted, module, extra in ((tensorboard, "tensorboard", "tensorboard"), (mlflow, "mlflow", "mlflow")):
        if wanted and importlib.util.find_spec(module) is None:
            raise TrackerError(f"--{extra} needs the '{module}' package: pip install 'polarity[{extra}]'")


def metric_columns(epochs) -> list[str]:
    """The per-epoch series a tracker gets: the contract metrics, then every numeric extra."""
    extras = [c for c in epochs.columns if c not in EPOCH_COLUMNS and epochs[c].dtype.kind in "fiub"]
    return list(METRICS) + extras


def _trials(epochs) -> Iterator[tuple[tuple, Any]]:
    if len(epochs) == 0:
        return iter(())
    return iter(epochs.groupby(KEY, sort=True))


def trial_dir(key: tuple) -> str:
    experiment, condition, n, width, trial = key
    return f"{experiment}/{condition}/n={int(n)}/width={int(width)}/trial={int(trial)}"


def to_tensorboard(epochs, logdir: str | Path) -> int:
    """Write every trial's curves as TensorBoard event files under ``logdir``; returns the
    number of trials written."""
    check_available(tensorboard=True)
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    logdir = Path(logdir)
    cols = metric_columns(epochs)
    count = 0
    for key, g in _trials(epochs):
        d = logdir / trial_dir(key)
        try:
            d.mkdir(parents=True, exist_ok=True)
            for old in d.glob(f"events.out.tfevents.*{EVENT_SUFFIX}"):
                old.unlink()
        except OSError as e:
            raise TrackerError(f"--tensorboard {logdir}: cannot write {d}: {e.strerror or e}") from None
        writer = EventFileWriter(str(d), filename_suffix=EVENT_SUFFIX)
        try:
            values = {c: g[c].to_numpy(dtype="float64") for c in cols}
            for i, epoch in enumerate(g["epoch"].to_numpy()):
                summ = Summary(value=[Summary.Value(tag=c, simple_value=float(values[c][i])) for c in cols
                                      if not math.isnan(values[c][i])])
                writer.add_event(Event(step=int(epoch), wall_time=0.0, summary=summ))
        finally:
            writer.close()
        count += 1
    return count


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MLFLOW_PARAM_MAX else text[:MLFLOW_PARAM_MAX - 3] + "..."


def to_mlflow(epochs, trials, hparams: Mapping[str, Any], uri: str, *, experiment: str,
              spec_hash: str = "", identity: str = "") -> int:
    """Log every trial not yet logged for the run as an MLflow run to the tracking ``uri``
    (e.g. ``sqlite:///mlflow.db``); returns the number of runs logged now.  A run is known by its
    ``identity`` (the hash of its non-grid hyper-parameters: a grown run keeps it, so its earlier
    trials are not logged twice), else by ``spec_hash``."""
    check_available(mlflow=True)
    import logging

    for name in ("mlflow", "alembic"):  # its database set-up logs at INFO: not the user's business
        logging.getLogger(name).setLevel(logging.WARNING)
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
        done = set()
        tag, value = ("polarity.identity", identity) if identity else ("polarity.spec_hash", spec_hash)
        if value:
            for run in _search(client, exp_id, f"tags.`{tag}` = '{value}'"):
                if run.data.tags.get("polarity.complete") == "true":
                    done.add(run.data.tags.get("polarity.trial"))
                else:  # an export interrupted while logging this trial: log it again, whole
                    client.delete_run(run.info.run_id)
    except mlflow.exceptions.MlflowException as e:
        raise TrackerError(f"--mlflow {uri}: {e.message if hasattr(e, 'message') else e}") from None
    seeds = {}
    if trials is not None and len(trials):
        seeds = {tuple(r[:5]): int(r[5]) for r in trials[KEY + ["seed"]].itertuples(index=False)}
    cols = metric_columns(epochs)
    base = [Param(k, _param(v)) for k, v in sorted(hparams.items())]
    count = 0
    for key, g in _trials(epochs):
        name = trial_dir(key)
        if name in done:
            continue
        experiment_name, condition, n, width, trial = key
        run = client.create_run(exp_id, run_name=f"{condition} n={int(n)} width={int(width)} trial={int(trial)}",
                                tags={"polarity.spec_hash": spec_hash, "polarity.identity": identity,
                                      "polarity.trial": name,
                                      "polarity.experiment": str(experiment_name)})
        rid = run.info.run_id
        params = base + [Param("trial.condition", str(condition)), Param("trial.n", str(int(n))),
                         Param("trial.width", str(int(width))), Param("trial.trial", str(int(trial)))]
        if key in seeds:
            params.append(Param("trial.seed", str(seeds[key])))
        for i in range(0, len(params), 100):
            client.log_batch(rid, params=params[i:i + 100])
        steps = g["epoch"].to_numpy()
        now = int(time.time() * 1000)
        metrics = [Metric(c, float(v), now, int(s)) for c in cols
                   for s, v in zip(steps, g[c].to_numpy(dtype="float64")) if not math.isnan(v)]
        for i in range(0, len(metrics), MLFLOW_BATCH):
            client.log_batch(rid, metrics=metrics[i:i + MLFLOW_BATCH])
        client.log_batch(rid, tags=[RunTag("polarity.complete", "true")])
        client.set_terminated(rid, "FINISHED")
        count += 1
    return count


def _search(client, exp_id: str, query: str):
    token = None
    while True:
        page = client.search_runs([exp_id], filter_string=query, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return
