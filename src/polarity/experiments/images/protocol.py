"""One job of the image reproduction: every condition of one (n, trial), the controlled comparison.

Within a trial (seed ``trial_seed(hp.seed, trial)``) every condition starts from one random
initialisation, sees the same training images in the same batch order, draws the same dropout
masks and is evaluated on the same validation images; only the polarity handling differs
(``start_condition``).  The controls take the transferred template and shuffle it within each
tensor or level its signs (``polarity.template.controls``, with the trial's seed); the oracle arms
take the signs of ``hp.oracle_source``.  ``docs/images.md`` explains the design and what is
recorded.

On an accelerator the trial's uint8 images stay on the device when they fit (``trial_data``),
every batch is normalised and resized there, and training runs in ``hp.precision`` /
``hp.channels_last`` (``polarity.training.compute_mode``); on the CPU, with the defaults, the
numbers are those of the host pipeline bit for bit (tests/test_device_pipeline.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ...cli_errors import unknown
from ...data.images import ImageData, first_n, fits_on_device, to_device
from ...data.subsets import load as load_dataset, sizes as dataset_sizes
from ...engine import progress
from ...freeze import Freezer, impose, switch_fraction
from ...models import MODELS, ModelError, head_names, initialised, is_factory, load_factory
from ...template import Template
from ...template.controls import balance_signs, shuffle_signs
from ...template.diagnostics import diagnose
from ...training import compute_mode, evaluate, fit, make_optimizer
from ...transfer import PretrainConfig, Source, load_source
from ..base import EpochRecord, ExperimentError, TrialKey, TrialResult, trial_seed
from .presets import (NEEDS_SOURCE, ORACLE_CONDITIONS, ImageHparams, condition_label, epochs_for,
                      eval_epochs, model_kwargs)

# log10 |w| histogram bins for Figure C.6 (fixed so histograms add up across trials)
HIST_LO, HIST_HI, HIST_BINS = -6.0, 1.0, 70
PRETRANSFORM_BYTES = 256 * 2**20  # below this, a job transforms its training set once

_DATA: dict[tuple, ImageData] = {}


def load_data(hp: ImageHparams) -> ImageData:
    """The dataset of ``hp``, loaded once per process."""
    key = (hp.dataset, hp.data_root, hp.data_source)
    if key not in _DATA:
        _DATA[key] = load_dataset(hp.dataset, root=hp.data_root, source=hp.data_source)
    return _DATA[key]


def get_source(hp: ImageHparams, num_classes: int | None, device: str = "cpu", log=None,
               source: str | None = None, oracle: bool = False) -> Source:
    """The transfer source of ``hp`` (pretrained and cached on first use), or ``source`` for the
    same target; a source trained on the target dataset is refused unless it is the ``oracle``
    (:func:`get_oracle`)."""
    pre = PretrainConfig(n=hp.pretrain_n, epochs=hp.pretrain_epochs, batch_size=hp.batch_size,
                         lr=hp.lr, seed=hp.seed, data_root=hp.data_root, data_source=hp.data_source)
    return load_source(hp.source if source is None else source, hp.arch, num_classes=num_classes,
                       model_kwargs=model_kwargs(hp), pretrain=pre, device=device, log=log,
                       target_dataset=hp.dataset, allow_same_dataset=oracle)


def get_oracle(hp: ImageHparams, device: str = "cpu", log=None) -> Source:
    """The oracle arms' source ``hp.oracle_source``: trained on the target dataset's own training
    images (validation checked that, and that it was asked for)."""
    if hp.oracle_source is None:
        raise ExperimentError("the oracle conditions need oracle_source (--oracle-source)")
    return get_source(hp, None, device=device, log=log, source=hp.oracle_source, oracle=True)


def check_network(hp: ImageHparams) -> None:
    """The network ``hp.arch`` checked before any run directory exists: a built-in name, or a
    factory (``package.module:factory``) imported, built for the dataset's class count and run
    on one batch; a :class:`ModelError` says what is wrong.  (Every job builds it again for the
    classes of the data it loads, and checks it the same way.)"""
    if not is_factory(hp.arch):
        if hp.arch not in MODELS:
            raise ModelError(unknown("arch", hp.arch, [*MODELS, "package.module:factory"]))
        return
    try:
        known = dataset_sizes(hp.dataset)
    except (ValueError, OSError):  # a dataset that cannot be listed: the dataset check names it
        known = None
    if known is None:
        load_factory(hp.arch)
    else:
        initialised(hp.arch, known.num_classes, hp.seed, **model_kwargs(hp))


# ---------------------------------------------------------------------- what the conditions share

@dataclass
class TrialData:
    """Training and validation tensors (on the device, or in page-locked host memory when the
    uint8 images do not fit there); ``*_tf`` is None when already transformed."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_tf: Any
    val_x: torch.Tensor
    val_y: torch.Tensor
    val_tf: Any


def trial_data(hp: ImageHparams, data: ImageData, n: int, device: str) -> TrialData:
    """The first ``n`` training images and the validation images.  Only uint8 crosses to the
    device: the images of the whole trial stay there when they fit (``fits_on_device``), else in
    page-locked host memory, each batch sent before its transform.  A set small enough
    (``PRETRANSFORM_BYTES`` as float32) is transformed once, on the device, so all conditions
    see identical float batches."""
    x, y = first_n(data.train_x, data.train_y, n)
    nval = len(data.test_y) if hp.val_size is None else min(int(hp.val_size), len(data.test_y))
    vx, vy = first_n(data.test_x, data.test_y, nval)
    memory_format = torch.channels_last if hp.channels_last else torch.contiguous_format
    transform = data.transform(size=hp.in_size, rgb=True, memory_format=memory_format)
    per_img = 3 * hp.in_size * hp.in_size * 4
    resident = fits_on_device(x.nbytes + y.nbytes + vx.nbytes + vy.nbytes, device)
    on_cuda = torch.device(device).type == "cuda"

    def prepared(images: torch.Tensor, labels: torch.Tensor, count: int):
        if count * per_img <= PRETRANSFORM_BYTES:  # transformed once, on the device
            return transform(to_device(images, device)), to_device(labels, device), None
        if resident or not on_cuda:
            return to_device(images, device), to_device(labels, device), transform
        return images.pin_memory(), labels.pin_memory(), transform  # batches travel one by one

    train_x, train_y, train_tf = prepared(x, y, n)
    val_x, val_y, val_tf = prepared(vx, vy, nval)
    return TrialData(train_x, train_y, train_tf, val_x, val_y=val_y, val_tf=val_tf)


@dataclass
class SharedStart:
    """The trial's random initialisation, data order and source, shared by every condition."""

    init_state: dict[str, torch.Tensor]
    rand: Template  # the signs of the random initialisation (RAND)
    constrained: list[str]  # the parameters a template constrains
    init_sorted: dict[str, torch.Tensor]  # sorted |w| of the random initialisation
    heads: set[str]
    perms: list[torch.Tensor]  # one permutation of the training set per epoch
    source: Source | None
    polarity: Template | None  # the source's signs mapped onto the model (head: own signs)
    source_names: list[str]  # constrained, non-head parameters the source has
    # the templates the conditions need beyond RAND and the source's: "shuffled" and "balanced"
    # (the source's, within source_names, with the trial's seed), "oracle" (the oracle's signs)
    controls: dict[str, Template] = field(default_factory=dict)
    oracle: Source | None = None
    oracle_names: list[str] = field(default_factory=list)


def shared_start(hp: ImageHparams, model: torch.nn.Module, n: int, seed: int,
                 conditions: Sequence[str], device: str) -> SharedStart:
    """What every condition of the trial shares, from ``model`` initialised for ``seed``
    (:func:`polarity.models.initialised`)."""
    model.to(device)
    heads = set(head_names(model))
    init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rand = Template.from_module(model)
    constrained = list(rand.keys())
    init_sorted = _abs_sorted(_params(model, constrained))
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(n, generator=g) for _ in range(epochs_for(hp, n))]
    source = polarity = None
    source_names: list[str] = []
    if any(c in NEEDS_SOURCE for c in conditions):
        source = get_source(hp, None, device=device)
        polarity = source.polarity_template(model, head=heads)
        source_names = [k for k in constrained if k not in heads and k in source.template]
    start = SharedStart(init_state, rand, constrained, init_sorted, heads, perms, source, polarity,
                        source_names)
    if "frozen-shuffled" in conditions:
        start.controls["shuffled"] = shuffle_signs(polarity, seed, source_names)
    if "frozen-balanced" in conditions:
        start.controls["balanced"] = balance_signs(polarity, seed, source_names)
    if any(c in ORACLE_CONDITIONS for c in conditions):
        start.oracle = get_oracle(hp, device=device)
        start.controls["oracle"] = start.oracle.polarity_template(model, head=heads)
        start.oracle_names = [k for k in constrained if k not in heads and k in start.oracle.template]
    return start


def start_condition(cond: str, model: torch.nn.Module, start: SharedStart) -> Template:
    """Put ``model`` in the condition's start state; returns the condition's template (the one a
    frozen arm keeps).  Every template arm (polarity, shuffled, balanced, oracle) takes its signs
    on the init's magnitudes by flipping: all of them start from the same |w|."""
    model.load_state_dict(start.init_state)
    kind = cond.split("-", 1)[1] if "-" in cond else cond
    if kind == "rand":
        return start.rand
    if kind == "weight":
        start.source.transfer_weights(model, head=start.heads)
        return Template.from_module(model)
    template = start.polarity if kind == "polarity" else start.controls.get(kind)
    if template is None:
        raise ExperimentError(f"unknown condition {cond!r}")  # validate() guards this
    impose(model, template, "flip")
    return template


# ---------------------------------------------------------------------- measures of a start state

def _params(model: torch.nn.Module, names) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {k: params[k] for k in names}


def _abs_sorted(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().abs().flatten().sort().values for k, v in params.items()}


def _hist(params: dict[str, torch.Tensor]) -> list[int]:
    """Computed where the parameters live: only the 70 counts cross to the host."""
    a = torch.cat([v.detach().abs().flatten().float() for v in params.values()])
    la = torch.log10(a.clamp_min(1e-30))
    inside = torch.histc(la.clamp(HIST_LO, HIST_HI - 1e-9), bins=HIST_BINS, min=HIST_LO, max=HIST_HI)
    return [int(v) for v in inside.tolist()]


def _quantiles(params: dict[str, torch.Tensor]) -> list[float]:
    a = torch.cat([v.detach().abs().flatten().float() for v in params.values()])
    if a.numel() > 2_000_000:
        pick = torch.randperm(a.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]
        a = a[to_device(pick, a.device)]
    q = torch.quantile(a, torch.tensor([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99], device=a.device))
    return [float(v) for v in q.tolist()]


def source_agreement(template: Template, model: torch.nn.Module, names: Sequence[str]) -> float:
    """The fraction of the constrained entries of ``names`` whose sign equals the source's:
    ``Template.agreement`` per parameter, weighted by each parameter's constrained entries."""
    sub = Template({k: template[k] for k in names})
    frac = sub.agreement(model)
    counts = {k: int((sub[k] != 0).sum()) for k in names}
    same = sum(round(frac[k] * counts[k]) for k in names if counts[k])
    return same / max(sum(counts.values()), 1)


# ---------------------------------------------------------------------- one trial

def run_trial(hp: ImageHparams, n: int, trial: int, conditions: Sequence[str],
              device: str = "cpu", data: ImageData | None = None) -> list[TrialResult]:
    """Run every condition of one (n, trial); see the module docstring for what is shared.
    ``data``: the dataset (default ``load_data(hp)``; benchmarks pass synthetic images)."""
    t = setup_trial(hp, n, trial, conditions, device, data)
    return [run_condition(hp, t, cond) for cond in conditions]


@dataclass
class Trial:
    """One (n, trial) set up: its seed, data, the network every condition trains and the start
    they share (:func:`setup_trial`)."""

    n: int
    trial: int
    seed: int
    dataset_label: str
    sets: TrialData
    model: torch.nn.Module
    start: SharedStart
    device: str
    # recorded with every condition (the report states them): the dataset's classes, and the
    # validation images used and available
    data_info: dict[str, int] = field(default_factory=dict)


def setup_trial(hp: ImageHparams, n: int, trial: int, conditions: Sequence[str],
                device: str = "cpu", data: ImageData | None = None) -> Trial:
    """The data, the network and the shared start of one (n, trial) for ``conditions``."""
    seed = trial_seed(hp.seed, trial)
    data = load_data(hp) if data is None else data
    if n > len(data.train_y):
        raise ExperimentError(f"n={n} exceeds the {len(data.train_y)} training images of {data.label}")
    sets = trial_data(hp, data, n, device)
    model = initialised(hp.arch, data.num_classes, seed, **model_kwargs(hp))
    start = shared_start(hp, model, n, seed, conditions, device)
    return Trial(n, trial, seed, data.label, sets, model, start, device,
                 {"num_classes": data.num_classes, "val_images": int(len(sets.val_y)),
                  "val_pool": int(len(data.test_y))})


def run_condition(hp: ImageHparams, t: Trial, cond: str, key: str | None = None,
                  label: str | None = None) -> TrialResult:
    """Train condition ``cond`` of the set-up trial ``t`` from its start state; the result is
    stored under ``key`` (default ``cond``) with ``label`` (default :func:`condition_label`)."""
    start, model = t.start, t.model
    source_label = start.source.label if start.source is not None else "none"
    oracle_label = start.oracle.label if start.oracle is not None else None
    t0 = time.perf_counter()
    template = start_condition(cond, model, start)
    extra: dict[str, Any] = {
        "dataset_label": t.dataset_label, **t.data_info,
        "source": start.source.spec.text if start.source is not None else hp.source,
        "source_label": source_label,
        "condition_label": label or condition_label(cond, source_label, oracle_label),
        **_start_measures(model, template, start)}
    if start.oracle is not None:
        extra.update({"oracle_source": hp.oracle_source, "oracle_label": oracle_label,
                      "oracle_val_acc": start.oracle.info.get("val_acc")})
        if cond in ORACLE_CONDITIONS:
            extra["oracle_sign_agreement_init"] = source_agreement(
                start.oracle.template, model, start.oracle_names)
    frozen = cond.startswith("frozen-")
    records = _train(hp, model, template, frozen, cond.startswith("fluid-"), t.sets, start,
                     t.seed, t.device)
    extra["final_violations"] = int(sum(template.violations(model).values()))
    extra["frozen"] = frozen
    if start.source is not None and start.source_names:
        extra["source_sign_agreement_final"] = source_agreement(start.source.template, model,
                                                                start.source_names)
    if cond in ORACLE_CONDITIONS:
        extra["oracle_sign_agreement_final"] = source_agreement(start.oracle.template, model,
                                                                start.oracle_names)
    result = TrialResult(TrialKey(key or cond, t.n, 0, t.trial), t.seed, time.perf_counter() - t0,
                         records, extra)
    progress.trial_finished(progress.best_val_error(result))  # the bar moves a trial at a time
    return result


def _start_measures(model: torch.nn.Module, template: Template, start: SharedStart) -> dict[str, Any]:
    """|w| at initialisation (Figure C.6), the magnitude control, violations and source agreement."""
    params = _params(model, start.constrained)
    out: dict[str, Any] = {
        "absw_hist": _hist(params), "absw_hist_range": [HIST_LO, HIST_HI, HIST_BINS],
        "absw_quantiles": _quantiles(params),
        "magnitude_equal_rand": bool(all(torch.equal(a, start.init_sorted[k])
                                         for k, a in _abs_sorted(params).items())),
        "init_violations": int(sum(template.violations(model).values())),
    }
    if start.source is not None and start.source_names:
        out["source_sign_agreement_init"] = source_agreement(start.source.template, model,
                                                             start.source_names)
        # the start template over the source's (non-head) parameters: how far it leans negative
        # and how many units it leaves dead-leaning (polarity.template.diagnostics)
        d = diagnose(Template({k: template[k] for k in start.source_names})).overall
        out["template_negative_fraction"] = d.negative_fraction
        out["template_dead_unit_fraction"] = d.dead_unit_fraction
    if start.source is not None and start.source.info.get("val_acc") is not None:
        out["source_val_acc"] = start.source.info["val_acc"]
    return out


def _train(hp: ImageHparams, model: torch.nn.Module, template: Template, frozen: bool,
           track_switch: bool, sets: TrialData, start: SharedStart, seed: int,
           device: str) -> list[EpochRecord]:
    """Train one condition (Freeze-SGD against ``template`` when ``frozen``); one record per
    validated epoch (``eval_epochs``) with the optimizer step and images seen so far, and the
    per-layer sign-switch fractions of the first ``hp.switch_epochs`` epochs when ``track_switch``
    (Figure C.5; validation ensures those epochs are all validated)."""
    params = _params(model, start.constrained)
    opt = make_optimizer(model, hp.lr)
    handle = Freezer(model, template, reset=hp.reset, seed=seed).attach(opt) if frozen else None
    track_switch = track_switch and hp.switch_epochs > 0
    prev = {k: p.detach().clone() for k, p in params.items()} if track_switch else None
    eval_bs = 1000 if hp.arch == "compact" else 250
    records: list[EpochRecord] = []
    n = len(sets.train_y)
    per_epoch = -(-n // hp.batch_size)
    validate_at = set(eval_epochs(hp, n))

    def on_epoch(e: int, tl: float, ta: float) -> None:
        nonlocal prev
        if e not in validate_at:
            return
        vl, va = evaluate(model, sets.val_x, sets.val_y, sets.val_tf, device=device, batch_size=eval_bs)
        ex: dict[str, float] = {"step": e * per_epoch, "images_seen": e * n}
        if prev is not None and e <= hp.switch_epochs:
            cur = {k: p.detach().clone() for k, p in params.items()}
            for k, v in switch_fraction(prev, cur).items():
                ex[f"switch/{k}"] = float(v)
            prev = cur if e < hp.switch_epochs else None
        records.append(EpochRecord(e, tl, ta, vl, va, ex))

    torch.manual_seed(seed)  # identical dropout masks across conditions
    with compute_mode(model, device, hp.precision, hp.channels_last):
        fit(model, opt, sets.train_x, sets.train_y, sets.train_tf, start.perms, hp.batch_size,
            device=device, on_epoch=on_epoch)
    if handle is not None:
        handle.remove()
    return records


__all__ = ["HIST_LO", "HIST_HI", "HIST_BINS", "PRETRANSFORM_BYTES", "load_data", "get_source",
           "get_oracle", "check_network",
           "TrialData", "trial_data", "SharedStart", "shared_start", "start_condition",
           "source_agreement", "Trial", "setup_trial", "run_condition", "run_trial"]
