"""The dose-response study (experiment ``dose``): how the benefit of a transferred polarity grows
with how much its source learned.

Several sources of one target (a ladder of training budgets, independently seeded networks and,
through ``oracle_source``, a source of the target's own training images: an upper bound) run in
one job per (n, trial) of the image protocol.  Every source shares the trial's random
initialisation, data order, dropout masks and validation images, and the shared arms
(``fluid-rand``, ``frozen-rand``) are trained once per trial, so every source is paired with the
same RAND run and with the others.  Each source gets the per-source arms asked for (default: its
frozen transferred polarity and its own shuffled template), stored as ``<arm>@<source>``.

A source string names its whole recipe: a ``pretrained:`` rung is trained with the source
recipe's defaults and the string's own fields (``pretrained:cifar10,epochs=2,seed=5``), never
with the target's training settings, so every rung is the shipped sources' recipe with a
smaller budget.  Each trial records, per source, its init agreement, test accuracy (from the
manifest) and the negative fraction of its template.  docs/images.md has the design; the report
is :mod:`.dose_report`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...template import Template
from ...template.controls import balance_signs, shuffle_signs
from ...template.diagnostics import diagnose
from ...transfer import TransferError, load_source, parse_source, same_dataset
from .. import register
from ..base import ExperimentError, Job, TrialKey, TrialResult
from .experiment import FashionMNISTExperiment, ImageExperiment, trained_dataset
from .presets import ORACLE_LABEL, ImageHparams, condition_label, dose_key, model_kwargs, split_key
from .protocol import run_condition, setup_trial

SHARED_ARMS = ("fluid-rand", "frozen-rand")  # trained once per trial, shared by every source
SOURCE_ARMS = ("frozen-polarity", "fluid-polarity", "frozen-shuffled", "frozen-balanced")
DOSE_ARMS = SHARED_ARMS + SOURCE_ARMS


@dataclass(frozen=True)
class DoseHparams(ImageHparams):
    """The image protocol's fields (``source`` unused: "none"), the arms in ``conditions`` and the
    sources in ``sources`` (each trained on another dataset) plus ``oracle_source``."""

    source: str = "none"  # unused by the dose study: its sources are in `sources`
    conditions: tuple[str, ...] = ("fluid-rand", "frozen-polarity", "frozen-shuffled")
    sources: tuple[str, ...] = ()  # the ladder: sources trained on other datasets, each paired with fluid RAND and its own shuffled template


def dose_sources(hp: DoseHparams) -> list[str]:
    """Every source of the study in order: the ladder, then the oracle."""
    return list(hp.sources) + ([hp.oracle_source] if hp.oracle_source is not None else [])


def load_dose_source(hp: DoseHparams, text: str, log=None):
    """One source of the study for ``hp``'s target: a ``pretrained:`` rung with its recipe's
    defaults and its own fields only (the target's settings never leak into a source); a source of
    the target's own data only as ``oracle_source``."""
    return load_source(text, hp.arch, model_kwargs=model_kwargs(hp), log=log,
                       target_dataset=hp.dataset, allow_same_dataset=text == hp.oracle_source)


def source_facts(src, names: list[str]) -> dict[str, Any]:
    """What the study records of a source: its name, its init agreement and test accuracy (as its
    manifest says) and its template's negative fraction over the parameters it gives."""
    d = diagnose(Template({k: src.template[k] for k in names})).overall
    agree = src.info.get("init_agreement")
    return {"source_name": src.info.get("name") if src.spec.kind == "directory" else src.spec.text,
            "source_init_agreement": None if agree is None else float(agree),
            "source_test_accuracy": src.info.get("val_acc"),
            "source_negative_fraction": d.negative_fraction,
            "source_dead_unit_fraction": d.dead_unit_fraction}


def run_dose_trial(hp: DoseHparams, n: int, trial: int, keys: list[str],
                   device: str = "cpu") -> list[TrialResult]:
    """Every key of one (n, trial): the shared arms once, then each source's arms, all from the
    trial's one start (see the module docstring)."""
    shared = [k for k in keys if split_key(k)[1] is None]
    t = setup_trial(hp, n, trial, shared, device)
    results = [run_condition(hp, t, k) for k in shared]
    base = t.start
    for text in dose_sources(hp):
        arms = [split_key(k)[0] for k in keys if split_key(k)[1] == text]
        if not arms:
            continue
        src = load_dose_source(hp, text)
        polarity = src.polarity_template(t.model, head=base.heads)
        names = [k for k in base.constrained if k not in base.heads and k in src.template]
        t.start = dataclasses.replace(base, source=src, polarity=polarity, source_names=names,
                                      controls={"shuffled": shuffle_signs(polarity, t.seed, names),
                                                "balanced": balance_signs(polarity, t.seed, names)})
        oracle = text == hp.oracle_source
        facts = {**source_facts(src, names), "dose_source": text, "oracle": oracle}
        for arm in arms:
            label = dose_label(arm, src.label, facts["source_name"], oracle)
            r = run_condition(hp, t, arm, key=dose_key(arm, text), label=label)
            r.extra.update({**facts, "arm": arm})
            results.append(r)
    t.start = base
    return results


def dose_label(arm: str, source_label: str, name: str, oracle: bool) -> str:
    """'Frozen transferred polarity (CIFAR-10 (JPEG copy): cifar10-compact-w0.5-s4)', or for the
    oracle 'Frozen oracle (upper bound) polarity (...)' / 'Frozen shuffled oracle (upper bound)
    polarity (...)'."""
    what = f"{source_label}: {name}" if name and name != source_label else source_label
    if not oracle:
        return condition_label(arm, what)
    state, kind = arm.split("-", 1)
    base = condition_label(f"{state}-oracle", "", what)
    return base if kind == "polarity" else base.replace(" oracle", f" {kind} oracle", 1)


@register
class DoseExperiment(ImageExperiment):
    """Experiment ``dose``: sources of increasing quality against the same RAND and their own
    shuffled templates (docs/images.md)."""

    name = "dose"
    dataset = None
    Hparams = DoseHparams
    conditions = DOSE_ARMS
    description = ("Dose-response: the benefit of transferred polarity against how much its source "
                   "learned (a ladder of sources + the oracle, each against fluid RAND and its own "
                   "shuffled template)")
    cli_fields = {"dataset": "the target: fmnist | cifar10 | <dataset>:<subset>",
                  "oracle_source": ImageExperiment.cli_fields["oracle_source"]}

    def validate(self, hp: DoseHparams) -> None:
        super().validate(hp)
        if not dose_sources(hp):
            raise ExperimentError("dose: list the sources in sources (and/or set oracle_source)")
        if not any(c in SOURCE_ARMS for c in hp.conditions):
            raise ExperimentError(f"dose: conditions need at least one per-source arm "
                                  f"({', '.join(SOURCE_ARMS)})")

    def _validate_source(self, hp: DoseHparams) -> None:
        if parse_source(hp.source).kind != "none":
            raise ExperimentError(f"dose: list every source in sources, not source={hp.source!r}")
        for text in hp.sources:
            if text == hp.oracle_source:
                raise ExperimentError(f"dose: {text!r} is both a source and the oracle_source")
            try:
                spec = parse_source(text)
            except TransferError as e:
                raise ExperimentError(f"dose: {e}") from None
            if spec.kind in ("none", "imagenet"):
                raise ExperimentError(f"dose: source {text!r}: the study takes source directories, "
                                      "shipped names and pretrained:<dataset>[,field=value...]")
            trained_on = trained_dataset(spec, hp, "dose")
            if same_dataset(trained_on, hp.dataset):
                raise ExperimentError(f"dose: source {text!r} was trained on {trained_on!r}, the "
                                      f"target's own data; that is the oracle ({ORACLE_LABEL}): "
                                      "give it as oracle_source")
        self._validate_oracle(hp)

    def grid_size(self, hp: DoseHparams) -> int:
        per_trial = (sum(c in SHARED_ARMS for c in hp.conditions)
                     + sum(c in SOURCE_ARMS for c in hp.conditions) * len(dose_sources(hp)))
        return per_trial * int(hp.trials) * len(hp.sample_sizes)

    def keys(self, hp: DoseHparams) -> list[str]:
        """The conditions of one (n, trial): shared arms, then each source's arms."""
        return ([c for c in hp.conditions if c in SHARED_ARMS]
                + [dose_key(c, s) for s in dose_sources(hp) for c in hp.conditions if c in SOURCE_ARMS])

    def is_condition(self, condition: str) -> bool:
        return split_key(condition)[0] in DOSE_ARMS

    def trials(self, hp: DoseHparams) -> list[TrialKey]:
        return [TrialKey(c, int(n), 0, t) for n in hp.sample_sizes for t in range(hp.trials)
                for c in self.keys(hp)]

    def jobs(self, hp: DoseHparams) -> list[Job]:
        return [Job(f"n{int(n)}-t{t}", tuple(TrialKey(c, int(n), 0, t) for c in self.keys(hp)))
                for n in hp.sample_sizes for t in range(hp.trials)]

    def prepare(self, hp: DoseHparams, device: str = "cpu", log=None) -> tuple[Path, ...]:
        """Every ``pretrained:`` source is trained here, once, before any job."""
        out = []
        for text in dose_sources(hp):
            if parse_source(text).kind == "pretrained":
                out.append(Path(load_dose_source(hp, text, log=log).info["cache_dir"]))
        return tuple(out)

    def run_job(self, hp: DoseHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        ns, ts = {k.n for k in job.trials}, {k.trial for k in job.trials}
        if len(ns) != 1 or len(ts) != 1:
            raise ExperimentError(f"job {job.key}: a dose job holds one (n, trial), got {ns} x {ts}")
        return run_dose_trial(hp, ns.pop(), ts.pop(), [k.condition for k in job.trials], device)

    def report(self, hp: DoseHparams, epochs, trials, outdir: Path) -> str:
        from .dose_report import report  # matplotlib and pandas load only when a report is written

        return report(hp, epochs, trials, outdir)


def _preset(**kw) -> DoseHparams:
    """The main job's transfer protocol (``fmnist --preset transfer``) at n = 100 and 250."""
    base = dataclasses.asdict(FashionMNISTExperiment.presets["transfer"])
    base.update(source="none", conditions=DoseHparams.conditions, sample_sizes=(100, 250))
    base.update(kw)
    return DoseHparams(**base)


# the ladder's lower rungs: the shipped CIFAR-10 sources' recipe (SGD, peak lr 0.05, cosine, weight
# decay 0.005 throughout: every epoch in its early, init-erasing phase) compressed to 2, 4 and 8
# epochs; shipped in the zoo, each manifest naming its `polarity source train` command (init
# agreement 0.926, 0.778, 0.567; docs/images.md).  The same rung as a source string, trained on
# first use: pretrained:cifar10,epochs=2,early_weight_decay=0.005,early_epochs=2,seed=6
RUNGS = ("cifar10-compact-w0.5-e2-s6", "cifar10-compact-w0.5-e4-s7", "cifar10-compact-w0.5-e8-s8")
# three independently seeded sources that learned their signs at the top: the 30-epoch recipe
# (seed 4) and the 40-epoch one (seeds 5, 9), all <= 0.525 init agreement, 76.8-77.5% (docs/sources.md)
LADDER = RUNGS + ("cifar10-compact-w0.5-s4", "cifar10-compact-w0.5-e40-s5", "cifar10-compact-w0.5-e40-s9")

DoseExperiment.presets = {
    # CIFAR-10 (JPEG copy) -> Fashion-MNIST, the main job's pair: three short rungs, three
    # independently seeded shipped sources at the top, and the Fashion-MNIST oracle
    "fmnist": _preset(sources=LADDER, oracle_source="fmnist-compact-w0.5-s2"),
    "tiny": _preset(sources=("pretrained:cifar10,epochs=1,train_n=40,batch_size=20",),
                    oracle_source="pretrained:fmnist,epochs=1,train_n=40,batch_size=20",
                    model_width=0.25, in_size=16, sample_sizes=(20,), trials=2, epochs=2,
                    batch_size=10, val_size=30, min_steps=0, eval_points=0),
}

__all__ = ["DoseHparams", "DoseExperiment", "RUNGS", "LADDER", "SHARED_ARMS", "SOURCE_ARMS", "DOSE_ARMS",
           "dose_sources", "dose_key", "split_key", "run_dose_trial", "source_facts", "dose_label"]
