"""The image reproduction's hyper-parameters, its six conditions and its presets (SPEC §5)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ...data.images import DatasetCorruptError, DatasetNotFoundError, SplitSizes
from ...data.subsets import SubsetError, sizes as dataset_sizes
from ...sources.directory import SourceError, read_manifest
from ...transfer import SourceSpec, TransferError, check_source_dir
from ..base import ExperimentError, Range, positive
from ..hparams import FrozenHparams

CONDITIONS = ("fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity",
              "fluid-weight", "frozen-weight")
# the controls (SPEC §5, docs/images.md), never in a preset's conditions unless it says so:
# the transferred template shuffled within each tensor / levelled to 50/50 by the fewest flips
# (polarity.template.controls), and the polarity of a source trained on the target's own
# training images (``oracle_source``), an upper bound
CONTROLS = ("frozen-shuffled", "frozen-balanced")
# the shipped source of each dataset that the ``transfer`` presets take their polarity from: the
# init-erasing recipe's networks (docs/sources.md; init agreement <= 0.55)
TRANSFER_SOURCES = {"cifar10": "cifar10-compact-w0.5-s4", "fmnist": "fmnist-compact-w0.5-s2"}
ORACLE_CONDITIONS = ("frozen-oracle", "fluid-oracle")
ALL_CONDITIONS = CONDITIONS + CONTROLS + ORACLE_CONDITIONS
NEEDS_SOURCE = ("fluid-polarity", "frozen-polarity", "fluid-weight", "frozen-weight") + CONTROLS
ORACLE_LABEL = "oracle (upper bound)"  # in every label of an oracle arm
REFERENCE = "frozen-polarity"  # every condition is compared against it (SPEC §6)

FMNIST_PAPER_N = (100, 250, 500, 750, 1000, 2000, 3000, 4000, 5000, 6000, 10000, 30000, 60000)
CIFAR_PAPER_N = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)


@dataclass(frozen=True)
class ImageHparams(FrozenHparams):
    # every number's range, checked before a run directory is created (``trials``, ``threads``,
    # ``seed``: the engine's common limits); the upper ends are sanity bounds far above any use
    limits: ClassVar[Mapping[str, Range]] = {
        "in_size": Range(8, 1024), "model_width": positive(16), "sample_sizes": Range(1, 10_000_000),
        "epochs": Range(1, 100_000), "batch_size": Range(1, 1_000_000), "lr": positive(1e3),
        "val_size": Range(1, 10_000_000), "cutoff": Range(0, 1, open_lo=True),
        "cutoffs": Range(0, 1, open_lo=True), "switch_epochs": Range(0, 100_000),
        "min_steps": Range(0, 1_000_000), "eval_points": Range(0, 100_000),
        "pretrain_n": Range(1, 10_000_000), "pretrain_epochs": Range(1, 100_000)}

    dataset: str = "fmnist"  # the target: fmnist | cifar10 | <dataset>:<subset> | folder:/path (train/ with test/ or val/)
    arch: str = "compact"  # "compact" (small inputs, CPU) | "alexnet" (torchvision, 227x227)
    in_size: int = 32  # input side after resizing
    model_width: float = 1.0  # compact network channel multiplier
    head: str = "append"  # alexnet: "append" a 10-way head after the 1000-way layer | "replace" it
    source: str = "pretrained:cifar10"  # where transferred signs/weights come from: a shipped name (polarity source list) | a source directory | pretrained:<dataset>[,field=value] | imagenet[:ckpt]
    # the oracle arms' source: trained on the target dataset's own training images (an upper
    # bound; the only way a same-dataset source enters a run); None = no oracle arm allowed
    oracle_source: str | None = None
    conditions: tuple[str, ...] = CONDITIONS
    sample_sizes: tuple[int, ...] = (250, 1000, 4000)
    trials: int = 3
    epochs: int = 12
    batch_size: int = 128
    lr: float = 1e-3
    reset: str = "posRand"
    val_size: int | None = 2000  # the first val_size test images; None = the whole test split
    cutoff: float = 0.8  # the figure's cut-off (SPEC §6)
    cutoffs: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85)  # supplement (C.3/C.4)
    switch_epochs: int = 50  # Figure C.5: sign-switch fractions over the first epochs
    # the training budget (docs/images.md): every n trains for at least min_steps optimizer steps
    # per started 1000 training images (the paper's batch-1000, 100-epoch schedule gives exactly
    # 100 * ceil(n / 1000)), raising ``epochs`` where needed; 0 = exactly ``epochs``
    min_steps: int = 0
    eval_points: int = 0  # validate at most this many evenly spaced epochs (the last included); 0 = every epoch
    pretrain_n: int = 10000  # pretrained:<dataset> sources: first n source images
    pretrain_epochs: int = 4  # pretrained:<dataset> sources: epochs of the source recipe
    data_root: str | None = None  # a folder holding the datasets (torchvision layout or the offline files); None: $POLARITY_DATA / the defaults
    data_source: str = "auto"  # auto (offline files, else torchvision) | offline | torchvision (downloads with internet)
    seed: int = 0
    threads: int = 1  # torch threads per job (the engine sets them); 1 is robust on a shared CPU
    # throughput options (polarity.training.compute_mode), recorded with the run; the defaults
    # are the paper's float32 and give the CPU numbers of before bit for bit
    precision: str = "fp32"  # fp32 (TF32 off on CUDA) | tf32 (CUDA tensor cores) | bf16 (autocast)
    channels_last: bool = False  # NHWC parameters and batches (faster convolutions on GPUs)


def epochs_for(hp: ImageHparams, n: int) -> int:
    """The epochs a sample size ``n`` trains for: ``hp.epochs``, raised until ``n`` gets at least
    ``hp.min_steps * ceil(n / 1000)`` optimizer steps at ``hp.batch_size``."""
    per_epoch = -(-int(n) // int(hp.batch_size))
    need = int(hp.min_steps) * -(-int(n) // 1000)
    return max(int(hp.epochs), -(-need // per_epoch))


def eval_epochs(hp: ImageHparams, n: int) -> list[int]:
    """The epochs at which a trial of size ``n`` is validated (and recorded): every epoch, or
    ``hp.eval_points`` evenly spaced ones ending with the last."""
    e, p = epochs_for(hp, n), int(hp.eval_points)
    if p <= 0 or p >= e:
        return list(range(1, e + 1))
    return sorted({(e * k + p // 2) // p for k in range(1, p + 1)})


def model_kwargs(hp: ImageHparams) -> dict[str, Any]:
    """The options of ``polarity.models.build_model`` for ``hp.arch``."""
    if hp.arch == "compact":
        return {"in_size": int(hp.in_size), "width": float(hp.model_width)}
    if hp.arch == "alexnet":
        return {"head": hp.head}
    return {"in_size": int(hp.in_size)}  # a factory's: the input side its output is checked at


def example_seconds(hp: ImageHparams, steps: int = 3) -> float:
    """Process seconds per training example of ``hp``'s network on this machine with one torch
    thread: the fastest of a few SGD steps on random images after one to warm up; measured, never
    assumed, so ``polarity show``'s estimate follows the machine (``engine/show.py`` has the model)."""
    import time

    import torch

    from ...models import build_model
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(hp.arch, num_classes=10, **model_kwargs(hp))
        side = 227 if hp.arch == "alexnet" else int(hp.in_size)
        batch = max(1, min(int(hp.batch_size), 32 if side <= 64 else 4))
        x, y = torch.randn(batch, 3, side, side), torch.randint(0, 10, (batch,))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        times = []
        for _ in range(steps + 1):  # the fastest step: the least disturbed by other processes
            t0 = time.process_time()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            times.append(time.process_time() - t0)
        return min(times[1:]) / batch
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------- fitting a preset to the data
# (docs/images.md, "Your own images")

# a folder dataset's cut-off when none is given: chance accuracy 1/classes plus this fraction of
# the way to 1, rounded to 2 places (2 classes: 0.75, 3: 0.67, 10: 0.55)
CHANCE_FRACTION = 0.5
CHANCE_FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the supplement's cut-offs (C.3/C.4), likewise
_SOURCE_FIELDS = {"in_size": "in_size", "width": "model_width", "head": "head"}  # manifest -> hparam


def data_sizes(hp: ImageHparams) -> SplitSizes | None:
    """The split sizes of ``hp.dataset`` (a folder is listed, not decoded); None when unknown."""
    try:
        return dataset_sizes(hp.dataset)
    except (DatasetNotFoundError, DatasetCorruptError, SubsetError) as e:
        raise ExperimentError(str(e)) from None


def chance_cutoff(classes: int, fraction: float = CHANCE_FRACTION) -> float:
    """An accuracy cut-off ``fraction`` of the way from chance (1/classes) to 1."""
    chance = 1.0 / int(classes)
    return round(chance + float(fraction) * (1.0 - chance), 2)


def fit_sample_sizes(ns: Sequence[int], pool: int) -> tuple[int, ...]:
    """``ns`` within a training pool of ``pool`` images: unchanged when every size fits, else
    the sizes below the pool and the whole pool; below every size, the ladder pool/4, pool/2,
    pool."""
    ns, pool = tuple(int(n) for n in ns), int(pool)
    if all(n <= pool for n in ns):
        return ns
    fit = sorted({n for n in ns if n < pool} | {pool})
    if len(fit) == 1:
        fit = sorted({max(1, pool // 4), max(1, pool // 2), pool})
    return tuple(fit)


def fit_to_data(hp: ImageHparams, given: frozenset[str] | set[str]) -> ImageHparams:
    """``hp`` with the fields not in ``given`` (those the user did not set) fitted to the data:
    sample sizes within the training pool (:func:`fit_sample_sizes`), the validation size capped
    by the validation images there are and, on a folder dataset, whose classes no preset knows,
    the cut-offs relative to chance (:func:`chance_cutoff`).  ``hp`` itself when the dataset
    cannot be counted (validation says why) or everything fits."""
    try:
        sizes = data_sizes(hp)
    except ExperimentError:
        return hp
    if sizes is None:
        return hp
    changes: dict[str, Any] = {}
    if "sample_sizes" not in given and hp.sample_sizes:
        ns = fit_sample_sizes(hp.sample_sizes, sizes.train)
        if ns != tuple(hp.sample_sizes):
            changes["sample_sizes"] = ns
    if "val_size" not in given and hp.val_size is not None and hp.val_size > sizes.val:
        changes["val_size"] = sizes.val
    if hp.dataset.startswith("folder:"):
        if "cutoff" not in given:
            changes["cutoff"] = chance_cutoff(sizes.num_classes)
        if "cutoffs" not in given:
            changes["cutoffs"] = tuple(chance_cutoff(sizes.num_classes, f) for f in CHANCE_FRACTIONS)
    return dataclasses.replace(hp, **changes) if changes else hp


def check_data_sizes(hp: ImageHparams) -> None:
    """Every sample size within the training images and the validation size within the
    validation images of ``hp.dataset``; else an ExperimentError naming the sizes, the pool and
    the ``--set`` that fits."""
    sizes = data_sizes(hp)
    if sizes is None:
        return
    of = f"{hp.dataset} ({sizes.num_classes} classes)"
    big = [int(n) for n in hp.sample_sizes if n > sizes.train]
    if big:
        fit = ",".join(str(n) for n in fit_sample_sizes(hp.sample_sizes, sizes.train))
        raise ExperimentError(f"sample_sizes {', '.join(map(str, big))} "
                              f"{'exceeds' if len(big) == 1 else 'exceed'} the {sizes.train} "
                              f"training images of {of}: --set sample_sizes={fit} (or leave "
                              "sample_sizes unset to have them fitted to the data)")
    if hp.val_size is not None and hp.val_size > sizes.val:
        raise ExperimentError(f"val_size={hp.val_size} exceeds the {sizes.val} validation images "
                              f"of {of}: --set val_size={sizes.val} (or val_size=none: all of them)")


def check_source(spec: SourceSpec, hp: ImageHparams) -> dict[str, Any]:
    """``check_source_dir`` for ``hp``'s network; a mismatch names the ``--set`` options that
    would make ``hp``'s network the source's."""
    try:
        return check_source_dir(spec, hp.arch, model_kwargs(hp))
    except TransferError as e:
        try:
            m = read_manifest(spec.path)
        except SourceError:
            raise e from None
        fix = [f"arch={m['arch']}"] if m["arch"] != hp.arch else []
        fix += [f"{_SOURCE_FIELDS[k]}={v:g}" if isinstance(v, float) else f"{_SOURCE_FIELDS[k]}={v}"
                for k, v in m["model"].items()
                if k in _SOURCE_FIELDS and getattr(hp, _SOURCE_FIELDS[k]) != v]
        if not fix:
            raise
        raise TransferError(f"{e} ({' '.join('--set ' + f for f in fix)} makes the target's network "
                            "this source's)") from None


def condition_label(condition: str, source_label: str, oracle_label: str | None = None) -> str:
    """Figure label, e.g. 'Frozen IN-Polarity' (imagenet), 'Frozen transferred polarity
    (CIFAR-10)', 'Frozen shuffled polarity (CIFAR-10)' or, whatever is known of the oracle's
    source, 'Frozen oracle (upper bound) polarity (Fashion-MNIST)'."""
    state, kind = condition.split("-", 1)
    state = state.capitalize()
    if kind == "rand":
        return f"{state} RAND"
    if kind == "oracle":
        return f"{state} {ORACLE_LABEL} polarity" + (f" ({oracle_label})" if oracle_label else "")
    if kind in ("shuffled", "balanced"):
        what = "IN-Polarity" if source_label == "IN" else f"polarity ({source_label})"
        return f"{state} {kind} {what}"
    if source_label == "IN":
        return f"{state} IN-{kind.capitalize()}"
    return f"{state} transferred {kind} ({source_label})"


def dose_key(arm: str, source: str) -> str:
    """The condition under which the dose-response study stores ``arm`` of ``source``."""
    return f"{arm}@{source}"


def split_key(condition: str) -> tuple[str, str | None]:
    """``'frozen-polarity@<source>'`` -> ``('frozen-polarity', '<source>')``; shared arms: None."""
    arm, sep, source = condition.partition("@")
    return arm, (source if sep else None)


def _cutoffs_for(primary: float, lo: float, hi: float) -> tuple[float, ...]:
    vals = sorted(set([round(v, 2) for v in np.arange(lo, hi + 1e-9, 0.05)] + [primary]))
    return tuple(float(v) for v in vals)


def make_presets(dataset: str, other: str, cutoff: float, cut_lo: float, cut_hi: float,
                 paper_n: Sequence[int], quick_n: Sequence[int]) -> dict[str, ImageHparams]:
    """``paper`` (torchvision AlexNet at 227px, ImageNet source, the paper's grid), ``transfer``
    (the transfer study: the compact network at 32px, the shipped source network trained on
    ``other``, small n, 12 paired trials), ``quick`` (the compact network, a source pretrained
    here on ``other``) and ``tiny`` (seconds)."""
    cuts = _cutoffs_for(cutoff, cut_lo, cut_hi)
    paper = ImageHparams(dataset=dataset, arch="alexnet", in_size=227, head="append",
                         source="imagenet", sample_sizes=tuple(paper_n), trials=20, epochs=100,
                         batch_size=1000, lr=1e-3, val_size=None, cutoff=cutoff, cutoffs=cuts,
                         min_steps=100, threads=4)
    quick = ImageHparams(dataset=dataset, arch="compact", in_size=32, model_width=0.5,
                         source=f"pretrained:{other}", sample_sizes=tuple(quick_n), trials=6,
                         epochs=10, batch_size=50, lr=1e-3, val_size=600, cutoff=cutoff,
                         cutoffs=cuts, pretrain_n=10000, pretrain_epochs=4, min_steps=100, threads=1)
    transfer = transfer_preset(dataset, TRANSFER_SOURCES[other], cutoff, cuts)
    tiny = dataclasses.replace(quick, sample_sizes=(40,), trials=1, epochs=2, batch_size=20,
                               val_size=60, model_width=0.25, pretrain_n=100, pretrain_epochs=1,
                               min_steps=0)
    return {"transfer": transfer, "quick": quick, "paper": paper, "tiny": tiny}


def transfer_preset(dataset: str, source: str, cutoff: float, cutoffs: Sequence[float]) -> ImageHparams:
    """The transfer study (docs/images.md): small n where transfer matters, 12 paired trials,
    every n at least 30 epochs and at least 100 optimizer steps (batch 100: n = 100 trains 100
    full-batch epochs, n = 250 34 epochs, n = 1000 30 epochs = 300 steps), validation on 1000
    test images at 10 points per trial; the six conditions and the structure-free control
    (frozen-shuffled); about 12 minutes on 2 cores."""
    return ImageHparams(dataset=dataset, arch="compact", in_size=32, model_width=0.5,
                        source=source, conditions=CONDITIONS + ("frozen-shuffled",),
                        sample_sizes=(100, 250, 1000), trials=12, epochs=30,
                        batch_size=100, lr=1e-3, val_size=1000, cutoff=cutoff,
                        cutoffs=tuple(cutoffs), switch_epochs=0, min_steps=100, eval_points=10,
                        threads=1)


__all__ = ["CONDITIONS", "CONTROLS", "ORACLE_CONDITIONS", "ALL_CONDITIONS", "ORACLE_LABEL",
           "NEEDS_SOURCE", "REFERENCE", "FMNIST_PAPER_N", "CIFAR_PAPER_N",
           "ImageHparams", "epochs_for", "eval_epochs", "model_kwargs", "condition_label",
           "make_presets", "transfer_preset", "dose_key", "split_key", "CHANCE_FRACTION",
           "CHANCE_FRACTIONS", "chance_cutoff", "check_data_sizes", "check_source", "data_sizes",
           "fit_sample_sizes", "fit_to_data", "example_seconds"]
