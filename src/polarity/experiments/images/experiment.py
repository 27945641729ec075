"""The image experiments as the engine sees them: validation, the grid (one job per (n, trial)),
a ``pretrained:`` source trained once before the jobs (``prepare``), and the registered ``fmnist``, ``cifar10`` and ``images`` (any dataset) experiments."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ...freeze import ResetError, check_method
from ...data.subsets import SubsetError, split_name, subset_classes
from ...training import PRECISIONS
from ...transfer import TransferError, parse_source, same_dataset
from .. import register
from ..base import Experiment, ExperimentError, Job, TrialKey, TrialResult
from .presets import (ALL_CONDITIONS, CIFAR_PAPER_N, FMNIST_PAPER_N, NEEDS_SOURCE,
                      ORACLE_CONDITIONS, ORACLE_LABEL, ImageHparams, check_data_sizes,
                      check_source, fit_to_data, make_presets, model_kwargs, transfer_preset)
from .protocol import check_network, get_oracle, get_source, run_trial


def trained_dataset(spec, hp: ImageHparams, what: str) -> str | None:
    """The dataset a parsed source was trained on: a ``pretrained:`` source's own, a source
    directory's (checked against ``hp``'s network), None for other kinds; a bad directory is an
    ExperimentError prefixed with ``what``."""
    if spec.kind == "pretrained":
        return spec.dataset
    if spec.kind == "directory":
        try:
            return check_source(spec, hp)["dataset"]
        except TransferError as e:
            raise ExperimentError(f"{what}: {e}") from None
    return None

class ImageExperiment(Experiment):
    """The shared implementation; subclasses set the dataset."""

    dataset: str | None = "fmnist"
    Hparams = ImageHparams
    conditions = ALL_CONDITIONS
    cli_fields = {"arch": "the network: compact (AlexNet-style, small inputs) | alexnet (torchvision, "
                          "227px) | package.module:factory, your own (a callable num_classes -> "
                          "nn.Module; docs/models.md)",
                  "source": "transfer source: a shipped source name ('polarity source list') | a "
                            "source directory | imagenet | imagenet:/path/ckpt.pth | pretrained:<dataset>",
                  "oracle_source": "the oracle arms' source (frozen-oracle, fluid-oracle; an upper "
                                   "bound): a source trained on the target dataset's own training "
                                   "images, e.g. pretrained:<target> or a source directory"}

    def validate(self, hp: ImageHparams) -> None:
        super().validate(hp)
        self._validate_dataset(hp)   # numbers: their ranges (ImageHparams.limits), checked by super()
        check_data_sizes(hp)         # sample and validation sizes within the data, before any run
        if not hp.sample_sizes:
            raise ExperimentError("sample_sizes needs at least one value")
        try:
            check_network(hp)  # the built-in names, or a factory imported, built and run once
        except ValueError as e:
            raise ExperimentError(str(e)) from None
        if hp.head not in ("append", "replace"):
            raise ExperimentError(f"unknown head {hp.head!r}; known: append, replace")
        if (hp.eval_points > 0 and hp.switch_epochs > 0
                and any(c.startswith("fluid-") for c in hp.conditions)):
            raise ExperimentError("sign-switch fractions (switch_epochs > 0, Figure C.5) are measured "
                                  "between consecutive epochs and need validation at every epoch: set "
                                  "eval_points=0 or switch_epochs=0")
        try:
            check_method(hp.reset)
        except ResetError as e:
            raise ExperimentError(str(e)) from None
        if hp.precision not in PRECISIONS:
            raise ExperimentError(f"unknown precision {hp.precision!r}; choose one of "
                                  f"{', '.join(PRECISIONS)} (fp32 is the paper's)")
        if not isinstance(hp.channels_last, bool):
            raise ExperimentError(f"channels_last must be true or false, got {hp.channels_last!r}")
        self._validate_source(hp)

    def _validate_dataset(self, hp: ImageHparams) -> None:
        if self.dataset is not None:
            if hp.dataset != self.dataset:
                raise ExperimentError(f"experiment {self.name!r} trains on {self.dataset!r}, "
                                      f"hparams say dataset={hp.dataset!r}")
            return
        # the generic experiment: any dataset the loaders know, or a class subset of one
        base, subset = split_name(hp.dataset)
        if not (base in ("fmnist", "cifar10")
                or (base.startswith("folder:") and len(base) > len("folder:"))):
            raise ExperimentError(
                f"experiment {self.name!r} needs a dataset: --dataset fmnist | cifar10 | "
                f"<fmnist|cifar10>:<subset> (e.g. cifar10:vehicles) | "
                f"folder:/path/to/images (train/ and test/ or val/, one sub-folder per class); "
                f"got {hp.dataset!r}")
        if subset is not None:
            try:
                subset_classes(base, subset)
            except SubsetError as e:
                raise ExperimentError(str(e)) from None

    def fit_to_data(self, hp: ImageHparams, given: frozenset[str]) -> ImageHparams:
        return fit_to_data(hp, given)   # sizes within the data, cut-offs from chance (presets)

    def _validate_source(self, hp: ImageHparams) -> None:
        try:
            spec = parse_source(hp.source)
        except TransferError as e:
            raise ExperimentError(str(e)) from None
        needs = [c for c in hp.conditions if c in NEEDS_SOURCE]
        if needs and spec.kind == "none":
            raise ExperimentError(f"conditions {needs} need a transfer source; got source={hp.source!r}")
        if spec.kind == "imagenet" and hp.arch != "alexnet":
            raise ExperimentError(f"source {hp.source!r} holds torchvision AlexNet weights: it needs "
                                  f"arch=alexnet (got {hp.arch!r}); the compact network takes "
                                  "pretrained:<dataset>")
        if spec.kind == "pretrained" and same_dataset(spec.dataset, hp.dataset):
            raise ExperimentError(f"source {hp.source!r} is the target dataset itself (or holds "
                                  "its training images); transfer from another dataset")
        if spec.kind == "directory":
            try:
                m = check_source(spec, hp)
            except TransferError as e:
                raise ExperimentError(str(e)) from None
            if same_dataset(m["dataset"], hp.dataset):
                raise ExperimentError(f"source {hp.source!r} was trained on the target dataset "
                                      f"{hp.dataset!r} itself; transfer from another dataset (a "
                                      "source of the target's own images is the oracle: "
                                      "oracle_source, conditions frozen-oracle / fluid-oracle)")
        self._validate_oracle(hp)

    def _validate_oracle(self, hp: ImageHparams) -> None:
        """The oracle arms need ``oracle_source``, and it must be a source of the target dataset's
        own training images (a source recipe trains on the training split only)."""
        wanted = [c for c in hp.conditions if c in ORACLE_CONDITIONS]
        if hp.oracle_source is None:
            if wanted:
                raise ExperimentError(
                    f"conditions {wanted} need an oracle source: set oracle_source (--oracle-source) "
                    f"to a source trained on {hp.dataset!r}'s own training images, e.g. "
                    f"pretrained:{hp.dataset} or a source directory; it is an upper bound, labelled "
                    f"'{ORACLE_LABEL}'")
            return
        try:
            spec = parse_source(hp.oracle_source)
        except TransferError as e:
            raise ExperimentError(f"oracle_source: {e}") from None
        trained_on = trained_dataset(spec, hp, "oracle_source")
        if trained_on != hp.dataset:
            what = f"was trained on {trained_on!r}" if trained_on else f"is a {spec.kind!r} source"
            raise ExperimentError(f"oracle_source {hp.oracle_source!r} {what}; the oracle is a "
                                  f"source trained on the target dataset {hp.dataset!r}'s own "
                                  "training images")

    def trials(self, hp: ImageHparams) -> list[TrialKey]:
        return [TrialKey(c, int(n), 0, t) for n in hp.sample_sizes for t in range(hp.trials)
                for c in hp.conditions]

    def jobs(self, hp: ImageHparams) -> list[Job]:
        out = []
        for n in hp.sample_sizes:
            for t in range(hp.trials):
                keys = tuple(TrialKey(c, int(n), 0, t) for c in hp.conditions)
                out.append(Job(f"n{int(n)}-t{t}", keys))
        return out

    def prepare(self, hp: ImageHparams, device: str = "cpu", log=None) -> tuple[Path, ...]:
        """A ``pretrained:<dataset>`` source (and oracle source) is trained here, once, before
        any job (the jobs read it from the cache); a source directory is read and verified here
        (its weights, template and manifest agree), so one that does not is one error before
        the run, not a failed job per trial."""
        out = []
        for needs, text, get in ((NEEDS_SOURCE, hp.source, lambda: get_source(hp, None, device=device, log=log)),
                                 (ORACLE_CONDITIONS, hp.oracle_source, lambda: get_oracle(hp, device=device, log=log))):
            kind = parse_source(text).kind if any(c in needs for c in hp.conditions) else None
            if kind in ("pretrained", "directory"):
                src = get()
                if kind == "pretrained":
                    out.append(Path(src.info["cache_dir"]))
        return tuple(out)

    def run_job(self, hp: ImageHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        ns = {k.n for k in job.trials}
        ts = {k.trial for k in job.trials}
        if len(ns) != 1 or len(ts) != 1:
            raise ExperimentError(f"job {job.key}: an image job holds one (n, trial), got {ns} x {ts}")
        n, trial = ns.pop(), ts.pop()
        return run_trial(hp, n, trial, [k.condition for k in job.trials], device=device)

    def report(self, hp: ImageHparams, epochs, trials, outdir: Path) -> str:
        from .report import report  # matplotlib and pandas load only when a report is written

        return report(hp, epochs, trials, outdir)


class DatasetExperiment(ImageExperiment):
    """The reproduction on one of the paper's datasets, with the other one as the source."""

    label: str
    other: str                                  # the source dataset of quick / transfer
    cutoff_range: tuple[float, float, float]    # the figure's cut-off, supplement from .. to
    paper_n: tuple[int, ...]
    quick_n = (100, 400, 1600)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.name = cls.dataset
        cls.description = (f"{cls.label} image reproduction (paper Figs. 2, 3, C.3-C.6): polarity "
                           "transfer vs weight transfer, six conditions")
        cls.presets = make_presets(cls.dataset, cls.other, *cls.cutoff_range, cls.paper_n, cls.quick_n)


@register
class FashionMNISTExperiment(DatasetExperiment):
    dataset, label, other = "fmnist", "Fashion-MNIST", "cifar10"
    cutoff_range, paper_n = (0.8, 0.6, 0.9), FMNIST_PAPER_N


@register
class CIFAR10Experiment(DatasetExperiment):
    dataset, label, other = "cifar10", "CIFAR-10", "fmnist"
    cutoff_range, paper_n = (0.5, 0.3, 0.6), CIFAR_PAPER_N


@register
class ImageFolderExperiment(ImageExperiment):
    """The same protocol on any dataset: a user's image folder, or fmnist / cifar10."""

    name = "images"
    dataset = None
    description = ("Polarity vs weight transfer on any image dataset (--dataset folder:/path | fmnist "
                   "| cifar10 | cifar10:vehicles ...), six conditions; presets as the fmnist/cifar10 "
                   "experiments, and transfer-control (CIFAR-10 animals -> vehicles)")
    cli_fields = {**ImageExperiment.cli_fields,
                  "dataset": "folder:/path/to/images (train/ and test/ or val/, one sub-folder per class) | "
                             "fmnist | cifar10 | <fmnist|cifar10>:<subset> (vehicles, animals, "
                             "tops, others, classes=i,j,...)"}
    presets = {**{k: dataclasses.replace(v, dataset="folder:")
                  for k, v in make_presets("folder:", "cifar10", 0.5, 0.3, 0.9, CIFAR_PAPER_N,
                                           (100, 400, 1600)).items() if k != "transfer"},
               # the positive control: CIFAR-10's animals transferred to its vehicles (4 classes)
               "transfer-control": transfer_preset("cifar10:vehicles", "cifar10-animals-compact-w0.5-s3",
                                                   0.7, (0.5, 0.6, 0.7, 0.75, 0.8, 0.85))}
