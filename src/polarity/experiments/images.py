"""Image reproduction (paper Figures 2, 3, C.3-C.6): polarity transfer against weight transfer.

Two experiments share this implementation: ``fmnist`` (Fashion-MNIST, cut-off 0.8) and
``cifar10`` (CIFAR-10, cut-off 0.5).  Six conditions (SPEC §5):

========================  ==========================================================
``fluid-rand``            random Glorot init, ordinary training
``frozen-rand``           the same init, its own signs frozen (RAND template)
``fluid-polarity``        the init flipped onto the source's signs, then trained freely
``frozen-polarity``       the same start, the source's signs frozen (Freeze-SGD)
``fluid-weight``          the source's weights (new head random), ordinary fine-tuning
``frozen-weight``         the source's weights, their signs frozen
========================  ==========================================================

The controlled comparison: within one trial (seed ``trial_seed(hp.seed, trial)``) every condition
starts from the same random initialisation (the polarity arms flip it onto their template with
``polarity.impose(..., "flip")``, so their sorted |w| are exactly the random init's: the
magnitude control), sees the same training images in the same batch order, draws the same dropout
masks, and is evaluated on the same validation subset.  The classification head has no source
counterpart: it keeps its random weights and signs in every condition.  One job = one (n, trial)
computing all conditions, so the shared pieces are built once.

Sources (``hp.source``, also the ``--source`` flag): ``imagenet`` (torchvision AlexNet
IMAGENET1K_V1, or ``imagenet:/path/ckpt.pth``) or ``pretrained:<dataset>`` (the same architecture
trained here on the other dataset, cached; see :mod:`polarity.transfer`).

Recorded per epoch: train/val loss and accuracy; for fluid conditions during the first
``hp.switch_epochs`` epochs the per-layer fraction of weights whose sign changed since the previous
epoch (extras ``switch/<param>``, Figure C.5).  Per trial: a fixed-bin histogram of log10 |w| at
initialisation (Figure C.6), whether the sorted |w| equal the shared random init's, template
violations at start and end (frozen arms), and the sign agreement with the source.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .base import EpochRecord, Experiment, ExperimentError, Job, TrialKey, TrialResult, trial_seed

CONDITIONS = ("fluid-rand", "frozen-rand", "fluid-polarity", "frozen-polarity",
              "fluid-weight", "frozen-weight")
NEEDS_SOURCE = ("fluid-polarity", "frozen-polarity", "fluid-weight", "frozen-weight")
REFERENCE = "frozen-polarity"
# log10 |w| histogram bins for Figure C.6 (fixed so histograms add up across trials)
HIST_LO, HIST_HI, HIST_BINS = -6.0, 1.0, 70
PRETRANSFORM_BYTES = 256 * 2**20  # below this, a job transforms its training set once


@dataclass(frozen=True)
class ImageHparams:
    dataset: str = "fmnist"
    arch: str = "compact"  # "compact" (small inputs, CPU) | "alexnet" (torchvision, 227x227)
    in_size: int = 32  # input side after resizing
    model_width: float = 1.0  # compact network channel multiplier
    head: str = "append"  # alexnet: "append" a 10-way head after the 1000-way layer | "replace" it
    source: str = "pretrained:cifar10"
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
    pretrain_n: int = 10000  # pretrained:<dataset> sources: first n source images
    pretrain_epochs: int = 4
    data_root: str | None = None
    data_source: str = "auto"
    seed: int = 0
    threads: int = 1  # torch threads per job (the engine sets them); 1 is robust on a shared CPU


def _cutoffs_for(primary: float, lo: float, hi: float) -> tuple[float, ...]:
    vals = sorted(set([round(v, 2) for v in np.arange(lo, hi + 1e-9, 0.05)] + [primary]))
    return tuple(float(v) for v in vals)


FMNIST_PAPER_N = (100, 250, 500, 750, 1000, 2000, 3000, 4000, 5000, 6000, 10000, 30000, 60000)
CIFAR_PAPER_N = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000)


def _presets(dataset: str, other: str, cutoff: float, cut_lo: float, cut_hi: float,
             paper_n: Sequence[int], quick_n: Sequence[int]) -> dict[str, ImageHparams]:
    cuts = _cutoffs_for(cutoff, cut_lo, cut_hi)
    paper = ImageHparams(dataset=dataset, arch="alexnet", in_size=227, head="append",
                         source="imagenet", sample_sizes=tuple(paper_n), trials=20, epochs=100,
                         batch_size=1000, lr=1e-3, val_size=None, cutoff=cutoff, cutoffs=cuts,
                         threads=4)
    quick = ImageHparams(dataset=dataset, arch="compact", in_size=32, model_width=0.5,
                         source=f"pretrained:{other}", sample_sizes=tuple(quick_n), trials=6,
                         epochs=10, batch_size=50, lr=1e-3, val_size=600, cutoff=cutoff,
                         cutoffs=cuts, pretrain_n=10000, pretrain_epochs=4, threads=1)
    tiny = dataclasses.replace(quick, sample_sizes=(40,), trials=1, epochs=2, batch_size=20,
                               val_size=60, model_width=0.25, pretrain_n=100, pretrain_epochs=1)
    return {"quick": quick, "paper": paper, "tiny": tiny}


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused where this build supports it for the model's device and dtype."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def fit(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None, perms: Sequence[torch.Tensor],
        batch_size: int, device: str = "cpu",
        on_epoch: Callable[[int, float, float], None] | None = None) -> list[tuple[float, float]]:
    """Train one epoch per permutation; returns (train loss, train acc) per epoch.

    ``x`` is uint8 (transformed per batch by ``transform``) or already float (``transform=None``).
    The running loss/accuracy are accumulated on the device: one host sync per epoch.
    """
    n = len(y)
    out = []
    for e, perm in enumerate(perms, 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        perm = perm.to(x.device)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            if transform is not None:
                xb = transform(xb)
            yb = y[idx]
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
        tl, ta = float(loss_sum) / n, int(correct) / n
        out.append((tl, ta))
        if on_epoch is not None:
            on_epoch(e, tl, ta)
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             transform: Callable[[torch.Tensor], torch.Tensor] | None, device: str = "cpu",
             batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y) in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(y), batch_size):
        xb = x[i:i + batch_size]
        if transform is not None:
            xb = transform(xb)
        xb, yb = xb.to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
    n = max(len(y), 1)
    return float(loss_sum) / n, int(correct) / n


def _constrained(model: torch.nn.Module, names) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {k: params[k] for k in names}


def _abs_sorted(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().abs().flatten().sort().values for k, v in params.items()}


def _hist(params: dict[str, torch.Tensor]) -> list[int]:
    a = torch.cat([v.detach().abs().flatten().float().cpu() for v in params.values()])
    la = torch.log10(a.clamp_min(1e-30))
    inside = torch.histc(la.clamp(HIST_LO, HIST_HI - 1e-9), bins=HIST_BINS, min=HIST_LO, max=HIST_HI)
    return [int(v) for v in inside.tolist()]


def _quantiles(params: dict[str, torch.Tensor]) -> list[float]:
    a = torch.cat([v.detach().abs().flatten().float().cpu() for v in params.values()])
    if a.numel() > 2_000_000:
        a = a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
    q = torch.quantile(a, torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]))
    return [float(v) for v in q.tolist()]


class ImageExperiment(Experiment):
    """The shared implementation; subclasses set the dataset."""

    dataset: str = "fmnist"
    Hparams = ImageHparams
    conditions = CONDITIONS
    cli_fields = {"source": "transfer source: imagenet | imagenet:/path/ckpt.pth | pretrained:<dataset>"}

    # ------------------------------------------------------------------ grid
    def validate(self, hp: ImageHparams) -> None:
        super().validate(hp)
        from ..transfer import TransferError, parse_source

        if self.dataset is None:  # the generic experiment: any dataset the loaders know
            if not (hp.dataset in ("fmnist", "cifar10")
                    or (hp.dataset.startswith("folder:") and len(hp.dataset) > len("folder:"))):
                raise ExperimentError(
                    f"experiment {self.name!r} needs a dataset: --dataset fmnist | cifar10 | "
                    f"folder:/path/to/images (train/ and test/ with one sub-folder per class); "
                    f"got {hp.dataset!r}")
            folder = Path(hp.dataset[len("folder:"):]).expanduser() if hp.dataset.startswith("folder:") else None
            if folder is not None and not (folder / "train").is_dir():
                raise ExperimentError(f"folder dataset {folder} has no train/ sub-folder (expected "
                                      f"{folder}/{{train,test}}/<class>/<image>)")
        elif hp.dataset != self.dataset:
            raise ExperimentError(f"experiment {self.name!r} trains on {self.dataset!r}, "
                                  f"hparams say dataset={hp.dataset!r}")
        if hp.arch not in ("compact", "alexnet"):
            raise ExperimentError(f"unknown arch {hp.arch!r}; known: compact, alexnet")
        if hp.head not in ("append", "replace"):
            raise ExperimentError(f"unknown head {hp.head!r}; known: append, replace")
        if not hp.sample_sizes or any(int(n) < 1 for n in hp.sample_sizes):
            raise ExperimentError(f"sample_sizes must be positive integers, got {hp.sample_sizes}")
        if hp.trials < 1 or hp.epochs < 1 or hp.batch_size < 1:
            raise ExperimentError("trials, epochs and batch_size must be >= 1")
        if hp.val_size is not None and hp.val_size < 1:
            raise ExperimentError(f"val_size must be >= 1 or none (the whole test split), got {hp.val_size}")
        if hp.in_size < 8:
            raise ExperimentError(f"in_size must be >= 8, got {hp.in_size}")
        bad = [c for c in (hp.cutoff, *hp.cutoffs) if not 0.0 < c <= 1.0]
        if bad:
            raise ExperimentError(f"cut-offs are validation accuracies in (0, 1]; got {bad}")
        from .. import RESET_METHODS

        if hp.reset not in RESET_METHODS:
            raise ExperimentError(f"unknown reset {hp.reset!r}; known: {', '.join(RESET_METHODS)}")
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
        if spec.kind == "pretrained" and spec.dataset == hp.dataset:
            raise ExperimentError(f"source {hp.source!r} is the target dataset itself; "
                                  "transfer from another dataset")

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

    # ------------------------------------------------------------------ run
    def run_job(self, hp: ImageHparams, job: Job, device: str = "cpu") -> list[TrialResult]:
        ns = {k.n for k in job.trials}
        ts = {k.trial for k in job.trials}
        if len(ns) != 1 or len(ts) != 1:
            raise ExperimentError(f"job {job.key}: an image job holds one (n, trial), got {ns} x {ts}")
        n, trial = ns.pop(), ts.pop()
        return run_trial(hp, n, trial, [k.condition for k in job.trials], device=device)

    def report(self, hp: ImageHparams, epochs, trials, outdir: Path) -> str:
        return report(hp, epochs, trials, outdir)


# ---------------------------------------------------------------------- one trial, all conditions

_DATA: dict[tuple, Any] = {}


def load_data(hp: ImageHparams):
    from ..data.images import load_dataset

    key = (hp.dataset, hp.data_root, hp.data_source)
    if key not in _DATA:
        _DATA[key] = load_dataset(hp.dataset, root=hp.data_root, source=hp.data_source)
    return _DATA[key]


def model_kwargs(hp: ImageHparams) -> dict[str, Any]:
    if hp.arch == "compact":
        return {"in_size": int(hp.in_size), "width": float(hp.model_width)}
    return {"head": hp.head}


def get_source(hp: ImageHparams, num_classes: int | None, device: str = "cpu", log=None):
    from ..transfer import PretrainConfig, load_source

    pre = PretrainConfig(n=hp.pretrain_n, epochs=hp.pretrain_epochs, batch_size=hp.batch_size,
                         lr=hp.lr, seed=hp.seed, val_size=2000,
                         data_root=hp.data_root, data_source=hp.data_source)
    return load_source(hp.source, hp.arch, num_classes=num_classes, model_kwargs=model_kwargs(hp),
                       pretrain=pre, device=device, log=log)


def condition_label(condition: str, source_label: str) -> str:
    """Figure label, e.g. 'Frozen IN-Polarity' (imagenet) or 'Frozen transferred polarity (CIFAR-10)'."""
    state, kind = condition.split("-", 1)
    state = state.capitalize()
    if kind == "rand":
        return f"{state} RAND"
    if source_label == "IN":
        return f"{state} IN-{kind.capitalize()}"
    return f"{state} transferred {kind} ({source_label})"


def run_trial(hp: ImageHparams, n: int, trial: int, conditions: Sequence[str],
              device: str = "cpu") -> list[TrialResult]:
    """Run every condition of one (n, trial); see the module docstring for what is shared."""
    from .. import Freezer, Template, impose, switch_fraction
    from ..data.images import BatchTransform, first_n
    from ..models import build_model, head_names, init_glorot_

    seed = trial_seed(hp.seed, trial)
    data = load_data(hp)
    if n > len(data.train_y):
        raise ExperimentError(f"n={n} exceeds the {len(data.train_y)} training images of {data.label}")
    num_classes = data.num_classes
    x, y = first_n(data.train_x, data.train_y, n)
    nval = len(data.test_y) if hp.val_size is None else min(int(hp.val_size), len(data.test_y))
    vx, vy = first_n(data.test_x, data.test_y, nval)
    transform = BatchTransform(data.mean, data.std, size=hp.in_size, rgb=True)

    # pre-transform once per job when small (all conditions see identical float batches)
    per_img = 3 * hp.in_size * hp.in_size * 4
    dev_x = x.to(device)
    if n * per_img <= PRETRANSFORM_BYTES:
        train_x, train_tf = transform(dev_x), None
    else:
        train_x, train_tf = dev_x, transform
    train_y = y.to(device)
    if nval * per_img <= PRETRANSFORM_BYTES:
        val_x, val_tf = transform(vx.to(device)), None
    else:
        val_x, val_tf = vx.to(device), transform
    val_y = vy.to(device)
    eval_bs = 1000 if hp.arch == "compact" else 250

    # the shared random initialisation and data order
    model = build_model(hp.arch, num_classes, **model_kwargs(hp))
    init_glorot_(model, seed)
    model.to(device)
    heads = set(head_names(model))
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t_init = Template.from_module(model)
    cnames = list(t_init.keys())
    init_sorted = _abs_sorted(_constrained(model, cnames))
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n, generator=g) for _ in range(hp.epochs)]

    source = None
    if any(c in NEEDS_SOURCE for c in conditions):
        source = get_source(hp, None, device=device)
    source_label = source.label if source is not None else "none"
    src_template = None
    src_names: list[str] = []
    if source is not None:
        src_template = source.polarity_template(model, head=heads)
        src_names = [k for k in cnames if k not in heads and k in source.template]

    results = []
    for cond in conditions:
        t0 = time.perf_counter()
        model.load_state_dict(init_state)
        template = None
        if cond in ("fluid-rand", "frozen-rand"):
            template = t_init
        elif cond in ("fluid-polarity", "frozen-polarity"):
            template = src_template
            impose(model, template, "flip")
        elif cond in ("fluid-weight", "frozen-weight"):
            source.transfer_weights(model, head=heads)
            template = Template.from_module(model)
        else:  # validate() guards this
            raise ExperimentError(f"unknown condition {cond!r}")
        frozen = cond.startswith("frozen-")
        params = _constrained(model, cnames)
        extra: dict[str, Any] = {
            "dataset_label": data.label, "source": hp.source, "source_label": source_label,
            "condition_label": condition_label(cond, source_label),
            "absw_hist": _hist(params), "absw_hist_range": [HIST_LO, HIST_HI, HIST_BINS],
            "absw_quantiles": _quantiles(params),
            "magnitude_equal_rand": bool(all(torch.equal(a, init_sorted[k])
                                             for k, a in _abs_sorted(params).items())),
            "init_violations": int(sum(template.violations(model).values())),
        }
        if source is not None and src_names:
            extra["source_sign_agreement_init"] = _agreement(source.template, model, src_names)
        if source is not None and "cache_dir" in source.info:
            extra["source_val_acc"] = source.info.get("val_acc")

        opt = make_optimizer(model, hp.lr)
        handle = None
        if frozen:
            handle = Freezer(model, template, reset=hp.reset, seed=seed).attach(opt)
        track_switch = cond.startswith("fluid-") and hp.switch_epochs > 0
        prev = {k: p.detach().clone() for k, p in params.items()} if track_switch else None
        records: list[EpochRecord] = []

        def on_epoch(e: int, tl: float, ta: float) -> None:
            nonlocal prev
            vl, va = evaluate(model, val_x, val_y, val_tf, device=device, batch_size=eval_bs)
            ex: dict[str, float] = {}
            if prev is not None and e <= hp.switch_epochs:
                cur = {k: p.detach().clone() for k, p in params.items()}
                for k, v in switch_fraction(prev, cur).items():
                    ex[f"switch/{k}"] = float(v)
                prev = cur if e < hp.switch_epochs else None
            records.append(EpochRecord(e, tl, ta, vl, va, ex))

        torch.manual_seed(seed)  # identical dropout masks across conditions
        fit(model, opt, train_x, train_y, train_tf, perms, hp.batch_size, device=device,
            on_epoch=on_epoch)
        if handle is not None:
            handle.remove()
        extra["final_violations"] = int(sum(template.violations(model).values()))
        extra["frozen"] = frozen
        if source is not None and src_names:
            extra["source_sign_agreement_final"] = _agreement(source.template, model, src_names)
        results.append(TrialResult(TrialKey(cond, n, 0, trial), seed, time.perf_counter() - t0,
                                   records, extra))
    return results


def _agreement(source_template, model, names) -> float:
    params = dict(model.named_parameters())
    agree = total = 0
    for k in names:
        t = source_template[k].to(params[k].device)
        s = torch.sign(params[k].detach()).to(torch.int8)
        agree += int((s == t).sum())
        total += t.numel()
    return agree / max(total, 1)


# ---------------------------------------------------------------------- report

COLORS = {"fluid-rand": "#7f7f7f", "frozen-rand": "#1f77b4", "fluid-polarity": "#ff7f0e",
          "frozen-polarity": "#d62728", "fluid-weight": "#2ca02c", "frozen-weight": "#9467bd"}
STYLES = {"fluid": "--", "frozen": "-"}
DEFAULT_LABELS = {"fmnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def _extras(trials) -> "Any":
    import json

    import pandas as pd

    rows = []
    if trials is None or len(trials) == 0 or "extra" not in trials:
        return pd.DataFrame(columns=["condition", "n", "trial"])
    for _, r in trials.iterrows():
        ex = r["extra"]
        if isinstance(ex, str):
            try:
                ex = json.loads(ex)
            except ValueError:
                ex = {}
        ex = ex if isinstance(ex, dict) else {}
        rows.append({"condition": r["condition"], "n": int(r["n"]), "trial": int(r["trial"]), **ex})
    return pd.DataFrame(rows)


def _order(conds) -> list[str]:
    known = [c for c in CONDITIONS if c in set(conds)]
    return known + sorted(set(conds) - set(known))


def _stars_text(p: float) -> str:
    return "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else ""


def _band_plot(ax, frame, x, med, lo, hi, label, color, ls):
    f = frame.sort_values(x)
    ax.plot(f[x], f[med], ls, color=color, marker="o", ms=3, label=label)
    if lo is not None:
        ax.fill_between(f[x], f[lo], f[hi], color=color, alpha=0.15, lw=0)


def report(hp: ImageHparams, epochs, trials, outdir: Path) -> str:
    """Figures 2, 3, C.3-C.6, a p-value table and a results table (Markdown + PNG + CSV)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..analysis.metrics import cutoff_column, per_trial, summarize

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    if epochs is None or len(epochs) == 0:
        return f"## Image reproduction ({hp.dataset})\n\nNo finished trials yet.\n"
    ex = _extras(trials)
    dlabel = (ex["dataset_label"].dropna().iloc[0] if "dataset_label" in ex and ex["dataset_label"].notna().any()
              else DEFAULT_LABELS.get(hp.dataset, hp.dataset))
    slabel = (ex["source_label"].dropna().iloc[0] if "source_label" in ex and ex["source_label"].notna().any()
              else "source")
    labels = {c: condition_label(c, slabel) for c in CONDITIONS}
    cuts = sorted(set(float(c) for c in hp.cutoffs) | {float(hp.cutoff)})
    main_col = cutoff_column(hp.cutoff)
    pt = per_trial(epochs, cuts)
    # a trial that never reaches a cut-off is ranked after every trial that does (censored at
    # epochs + 1) for the statistics; medians of epochs use the trials that reach it
    for c in cuts:
        col = cutoff_column(c)
        pt[col + "_censored"] = pt[col].fillna(pt["epochs"] + 1)
    summ = summarize(pt, cuts, by=("condition", "n"))
    pt.to_csv(outdir / "images_per_trial.csv", index=False)
    summ.to_csv(outdir / "images_summary.csv", index=False)
    conds = _order(pt["condition"].unique())
    tag = f"{dlabel}, {hp.arch} {hp.in_size}px, source {hp.source}"
    md = [f"## Image reproduction: {dlabel}", "",
          f"Architecture `{hp.arch}` at {hp.in_size}x{hp.in_size}, transfer source `{hp.source}`, "
          f"{hp.epochs} epochs, batch {hp.batch_size}, Adam lr {hp.lr}, reset `{hp.reset}`, "
          f"validation = {'the whole test split' if hp.val_size is None else f'the first {hp.val_size} test images'}; "
          f"{pt.groupby(['condition', 'n']).size().max()} trials per condition and n, n = "
          f"{', '.join(str(v) for v in sorted(pt['n'].unique()))}. Cut-off {hp.cutoff:g}.", ""]
    if "source_val_acc" in ex and ex["source_val_acc"].notna().any():
        md += [f"Source network ({slabel}) validation accuracy on its own task: "
               f"{float(ex['source_val_acc'].dropna().iloc[0]):.3f}.", ""]

    def save(fig, name):
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.savefig(outdir / name, dpi=110)
        plt.close(fig)
        md.append(f"![{name}]({name})")
        md.append("")

    def cond_lines(ax, frame, y, lo=None, hi=None):
        for c in conds:
            f = frame[frame["condition"] == c]
            if len(f):
                _band_plot(ax, f, "n", y, lo, hi, labels.get(c, c), COLORS.get(c, None),
                           STYLES.get(c.split("-")[0], "-"))
        if frame[y].notna().any():
            ax.set_xscale("log")
        ax.set_xlabel("training samples n")

    # ---- Figure 2 (shared plotting helpers; each writes its CSV next to the PNG)
    from ..analysis.figures import plot_band, plot_epochs_to_cutoff, plot_success

    lab = pt.assign(label=[labels.get(c, c) for c in pt["condition"]])
    md += [f"### Figure 2: data and time efficiency ({dlabel})", ""]
    plot_band(lab, "n", "error", outdir / "fig2a_error_images", by="label", logx=True,
              title=f"Fig. 2 error at convergence -- {dlabel}", xlabel="training samples n",
              ylabel="val error at min val loss (median, 25-75%)")
    has_ep = bool(lab[main_col].notna().any())  # a log axis of an empty plot fails
    plot_success(lab, "n", main_col, outdir / "fig2b_success_images", by="label", logx=True,
                 title=f"Fig. 2 success rate (val acc >= {hp.cutoff:g}) -- {dlabel}",
                 xlabel="training samples n")
    plot_epochs_to_cutoff(lab, "n", hp.cutoff, outdir / "fig2c_epochs_images", by="label",
                          logx=has_ep, xlabel="training samples n",
                          title=f"Fig. 2 epochs to {hp.cutoff:g} -- {dlabel}")
    md += ["![fig2a](fig2a_error_images.png) ![fig2b](fig2b_success_images.png) "
           "![fig2c](fig2c_epochs_images.png)", "",
           f"({tag}; epochs to the cut-off are over the trials that reach it.)", ""]

    # ---- statistics (Mann-Whitney per n against frozen-polarity, Holm across comparisons)
    stat_frames = {}
    if REFERENCE in conds and len(conds) > 1:
        try:
            from ..analysis.stats import compare_to_reference

            # epochs-to-cut-off: a trial that never reaches it ranks after every one that does
            # (the stats module's "inf" policy); stored under the censored column's name
            stat_frames["error"] = compare_to_reference(pt, "error", reference=REFERENCE, by="n")
            stat_frames[main_col + "_censored"] = compare_to_reference(
                pt, main_col, reference=REFERENCE, by="n", nan_policy="inf")
        except ImportError as e:  # pragma: no cover - stats module missing
            md += [f"(statistics unavailable: {e})", ""]

    # ---- Figure 3: paired differences against frozen-polarity
    if REFERENCE in conds and len(conds) > 1:
        ref = pt[pt["condition"] == REFERENCE].set_index(["n", "trial"])
        diffs = []
        for metric, nice in (("error", "error"), (main_col + "_censored", f"epochs to {hp.cutoff:g}")):
            for c in conds:
                if c == REFERENCE:
                    continue
                cur = pt[pt["condition"] == c].set_index(["n", "trial"])
                d = (cur[metric] - ref[metric]).dropna().reset_index()
                for nn, gg in d.groupby("n"):
                    v = gg[metric].to_numpy()
                    diffs.append({"metric": metric, "condition": c, "n": nn, "median": np.median(v),
                                  "q25": np.quantile(v, 0.25), "q75": np.quantile(v, 0.75),
                                  "trials": len(v)})
        diffs = pd.DataFrame(diffs)
        if len(diffs):
            diffs.to_csv(outdir / "fig3_images.csv", index=False)
            fig, axs = plt.subplots(1, 2, figsize=(12, 4.2))
            for ax, (metric, nice) in zip(axs, (("error", "validation error"),
                                                (main_col + "_censored", f"epochs to {hp.cutoff:g}"))):
                dm = diffs[diffs["metric"] == metric]
                cond_lines(ax, dm, "median", "q25", "q75")
                ax.axhline(0, color=COLORS[REFERENCE], lw=1)
                st = stat_frames.get(metric)
                if st is not None and len(st):
                    for _, r in st.iterrows():
                        row = dm[(dm["condition"] == r["condition"]) & (dm["n"] == r["n"])]
                        if len(row) and r.get("stars"):
                            ax.annotate(str(r["stars"]), (r["n"], float(row["median"].iloc[0])),
                                        color=COLORS.get(r["condition"]), fontsize=9,
                                        ha="center", va="bottom")
                ax.set_ylabel(f"{nice}: condition - reference")
                ax.set_title(f"reference: {labels[REFERENCE]} (paired by trial)", fontsize=9)
            axs[0].legend(fontsize=7)
            fig.suptitle(f"Figure 3 -- {tag}; * p<0.05, ** p<0.01, *** p<0.001 (Mann-Whitney, Holm)",
                         fontsize=9)
            md.append(f"### Figure 3: differences against {labels[REFERENCE]} ({dlabel})")
            md.append("")
            save(fig, "fig3_images.png")

    # ---- p-value table
    if stat_frames:
        md += [f"### Significance against {labels[REFERENCE]} ({dlabel})", "",
               "Two-sided Mann-Whitney U per n; Holm-Bonferroni across all comparisons of a metric "
               "(alpha 0.05). Epochs-to-cut-off: a trial that never reaches it ranks last.", "",
               "| metric | n | condition | p | p (Holm) | |", "|---|---|---|---|---|---|"]
        allst = []
        for metric, st in stat_frames.items():
            st = st.copy()
            st["metric"] = metric.replace("_censored", "")
            allst.append(st)
            st["_o"] = [conds.index(c) if c in conds else len(conds) for c in st["condition"]]
            for _, r in st.sort_values(["n", "_o"]).iterrows():
                md.append(f"| {metric.replace('_censored', '')} | {r['n']} | {labels.get(r['condition'], r['condition'])} "
                          f"| {r['p']:.3g} | {r['p_holm']:.3g} | {r.get('stars', '')} |")
        pd.concat(allst).drop(columns=["_o"]).to_csv(outdir / "pvalues_images.csv", index=False)
        md.append("")
        k = int(pt.groupby(["condition", "n"]).size().min())
        p_min = 2.0 / math.comb(2 * k, k)
        if p_min > 0.05:
            md += [f"Note: with {k} trials per condition the smallest two-sided Mann-Whitney p-value "
                   f"possible is {p_min:.3g}, so no comparison can be significant at this scale "
                   "(the paper uses 20 trials).", ""]

    # ---- results table
    md += [f"### Results ({dlabel})", "",
           f"| n | condition | error median [25%, 75%] | success @{hp.cutoff:g} | epochs to {hp.cutoff:g} (median) |",
           "|---|---|---|---|---|"]
    summ["_o"] = [conds.index(c) for c in summ["condition"]]
    for _, r in summ.sort_values(["n", "_o"]).iterrows():
        md.append(f"| {r['n']} | {labels.get(r['condition'], r['condition'])} | {r['error_median']:.3f} "
                  f"[{r['error_q25']:.3f}, {r['error_q75']:.3f}] | {r[f'success_{hp.cutoff:g}']:.2f} "
                  f"| {r[f'{main_col}_median']:.1f} |")
    md.append("")

    # ---- C.3 / C.4: several cut-offs
    ncol = min(len(cuts), 4)
    nrow = math.ceil(len(cuts) / ncol)
    for fig_name, what, col_fn, ylab in (
            ("figC3_images.png", "C.3: success rate across cut-offs", lambda c: f"success_{c:g}", "success rate"),
            ("figC4_images.png", "C.4: epochs to cut-off across cut-offs",
             lambda c: f"{cutoff_column(c)}_median", "epochs (median of trials reaching it)")):
        fig, axs = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.3 * nrow), squeeze=False)
        for ax, c in zip(axs.flat, cuts):
            cond_lines(ax, summ, col_fn(c))
            ax.set_title(f"cut-off {c:g}", fontsize=9)
            ax.set_ylabel(ylab, fontsize=8)
        for ax in list(axs.flat)[len(cuts):]:
            ax.axis("off")
        axs.flat[0].legend(fontsize=6)
        fig.suptitle(f"Figure {what} -- {tag}", fontsize=10)
        md += [f"### Figure {what} ({dlabel})", ""]
        save(fig, fig_name)

    # ---- learning curves
    lc = epochs.groupby(["condition", "n", "epoch"])["val_acc"].median().reset_index()
    lc.to_csv(outdir / "learning_curves_images.csv", index=False)
    ns = sorted(lc["n"].unique())
    fig, axs = plt.subplots(1, len(ns), figsize=(4 * len(ns), 3.3), squeeze=False)
    for ax, nn in zip(axs.flat, ns):
        for c in conds:
            f = lc[(lc["condition"] == c) & (lc["n"] == nn)]
            ax.plot(f["epoch"], f["val_acc"], STYLES.get(c.split("-")[0], "-"), color=COLORS.get(c),
                    label=labels.get(c, c))
        ax.axhline(hp.cutoff, color="k", lw=0.5, ls=":")
        ax.set_title(f"n = {nn}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val acc (median)")
    axs.flat[0].legend(fontsize=6)
    fig.suptitle(f"Learning curves -- {tag}", fontsize=10)
    md += [f"### Learning curves ({dlabel})", ""]
    save(fig, "learning_curves_images.png")

    # ---- C.5: sign switches of fluid-rand
    def layer_key(col):  # network order: features.* before classifier.*, numeric indices
        parts = str(col)[len("switch/"):].split(".")
        return (parts[0] == "classifier", [int(q) if q.isdigit() else -1 for q in parts])

    sw_cols = sorted((c for c in epochs.columns if str(c).startswith("switch/")), key=layer_key)
    fr = epochs[epochs["condition"] == "fluid-rand"]
    if sw_cols and len(fr):
        sw = fr.groupby(["n", "epoch"])[sw_cols].median().reset_index()
        sw.to_csv(outdir / "figC5_images.csv", index=False)
        ns = sorted(sw["n"].unique())
        fig, axs = plt.subplots(1, len(ns), figsize=(4 * len(ns), 3.3), squeeze=False)
        cmap = plt.get_cmap("viridis")
        for ax, nn in zip(axs.flat, ns):
            f = sw[sw["n"] == nn].dropna(subset=sw_cols, how="all")
            for i, col in enumerate(sw_cols):
                ax.plot(f["epoch"], f[col], color=cmap(i / max(len(sw_cols) - 1, 1)),
                        label=col[len("switch/"):])
            ax.set_yscale("log", nonpositive="mask")
            ax.set_title(f"n = {nn}", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("fraction of signs switched")
        axs.flat[0].legend(fontsize=6)
        fig.suptitle(f"Figure C.5: {labels['fluid-rand']} sign switches per layer between epochs -- {tag}",
                     fontsize=9)
        md += [f"### Figure C.5: polarity switches in {labels['fluid-rand']} ({dlabel})", ""]
        save(fig, "figC5_images.png")

    # ---- C.6: |w| at initialisation per condition + magnitude control
    if "absw_hist" in ex and ex["absw_hist"].notna().any():
        lo, hi, bins = HIST_LO, HIST_HI, HIST_BINS
        rng = ex["absw_hist_range"].dropna()
        if len(rng):
            lo, hi, bins = rng.iloc[0]
        edges = np.linspace(lo, hi, int(bins) + 1)
        n0 = ex["n"].min()  # the init does not depend on n: one panel from the smallest n
        fig, ax = plt.subplots(figsize=(7, 4))
        rows = []
        for c in conds:
            f = ex[(ex["condition"] == c) & (ex["n"] == n0)]
            h = [np.asarray(v, dtype=float) for v in f["absw_hist"] if isinstance(v, (list, tuple))]
            if not h:
                continue
            tot = np.sum(h, axis=0)
            ax.stairs(tot / max(tot.sum(), 1), edges, color=COLORS.get(c), ls=STYLES.get(c.split("-")[0], "-"),
                      label=labels.get(c, c))
            rows.append({"condition": c, **{f"bin_{i}": v for i, v in enumerate(tot)}})
        ax.set_xlabel("log10 |w| at initialisation (constrained weights)")
        ax.set_ylabel("fraction")
        ax.legend(fontsize=7)
        ax.set_title(f"Figure C.6: |w| at initialisation (n = {n0}) -- {tag}", fontsize=9)
        pd.DataFrame(rows).to_csv(outdir / "figC6_images.csv", index=False)
        md += [f"### Figure C.6: magnitude control ({dlabel})", ""]
        save(fig, "figC6_images.png")
        if "magnitude_equal_rand" in ex:
            md += ["| condition | trials whose sorted abs(w) at init equal the random init's | "
                   "violations at start / end (frozen) |", "|---|---|---|"]
            for c in conds:
                f = ex[ex["condition"] == c]
                if not len(f):
                    continue
                eq = f["magnitude_equal_rand"].astype(bool)
                viol = ""
                if c.startswith("frozen") and "final_violations" in f:
                    viol = f"{int(f['init_violations'].sum())} / {int(f['final_violations'].sum())}"
                md.append(f"| {labels.get(c, c)} | {int(eq.sum())}/{len(f)} | {viol} |")
            md.append("")
    return "\n".join(md) + "\n"


from . import register  # noqa: E402


@register
class FashionMNISTExperiment(ImageExperiment):
    name = "fmnist"
    dataset = "fmnist"
    description = ("Fashion-MNIST image reproduction (paper Figs. 2, 3, C.3-C.6): polarity transfer "
                   "vs weight transfer, six conditions")
    presets = _presets("fmnist", "cifar10", 0.8, 0.6, 0.9, FMNIST_PAPER_N, (100, 400, 1600))


@register
class CIFAR10Experiment(ImageExperiment):
    name = "cifar10"
    dataset = "cifar10"
    description = ("CIFAR-10 image reproduction (paper Figs. 2, 3, C.3-C.6): polarity transfer vs "
                   "weight transfer, six conditions")
    presets = _presets("cifar10", "fmnist", 0.5, 0.3, 0.6, CIFAR_PAPER_N, (100, 400, 1600))


@register
class ImageFolderExperiment(ImageExperiment):
    """The same protocol on any dataset: a user's image folder, or fmnist / cifar10."""

    name = "images"
    dataset = None
    description = ("Polarity vs weight transfer on any image dataset (--dataset folder:/path | fmnist "
                   "| cifar10), six conditions; presets as the fmnist/cifar10 experiments")
    cli_fields = {**ImageExperiment.cli_fields,
                  "dataset": "folder:/path/to/images (train/, test/, one sub-folder per class) | "
                             "fmnist | cifar10"}
    presets = {k: dataclasses.replace(v, dataset="folder:")
               for k, v in _presets("folder:", "cifar10", 0.5, 0.3, 0.9, CIFAR_PAPER_N,
                                    (100, 400, 1600)).items()}
