"""CLI plugin: ``polarity template export | info | compare``.

    polarity template export --source pretrained:cifar10 --arch compact --dataset fmnist --out t.pol
    polarity template info t.pol
    polarity template compare cifar10-compact-w0.5 t.pol

``export`` loads (or pretrains and caches, see :mod:`polarity.transfer`) the source network and
writes its sign template, about one bit per sign, with :meth:`polarity.Template.save`.
``--dataset`` is the *target* dataset: with ``--map`` the template is mapped onto a freshly
initialised target model (the head keeps that model's own random signs, exactly what the
``*-polarity`` conditions impose); without it the file holds the source network's own template
(all its layers, source names).  The architecture settings (``--in-size``, ``--width``,
``--head``) and the pretraining schedule default to the target experiment's ``quick`` preset
(``paper`` for ``--arch alexnet``).

``info`` prints the file's format, its size in bits per sign (whole file and payload only), the
template's metadata and, per parameter, the fractions of +1 / -1 / free entries and how the free
entries are stored, then the template's diagnostics (:func:`polarity.template.diagnose`: per
parameter and overall, the negative fraction of the constrained signs, the output units whose
signs are nearly all negative, and, fan-in aware, the expected fraction of units active behind a
ReLU on a fresh magnitude draw under these signs and the units almost never active).  ``compare A B`` prints the sign agreement of two templates per
parameter and overall.  Both take a template file (.polarity or .safetensors), a shipped source's
name (``polarity source list``) or a source directory; a source stands for its template file.
User errors are one line, ``polarity: error: ...``, status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("template", help="export or inspect polarity templates",
                              description="Export a transfer source's polarity template as a file "
                                          "(about one bit per sign) or describe a template file.")
    sub = p.add_subparsers(dest="template_cmd", metavar="{export,info,compare}")
    sub.required = True
    ex = sub.add_parser("export", help="write a transfer source's sign template to a file",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("--source", required=True,
                    help="imagenet | imagenet:/path/ckpt.pth | pretrained:<dataset>")
    ex.add_argument("--arch", "--model", default="compact", metavar="ARCH",
                    help="compact | alexnet | package.module:factory, your own network (docs/models.md)")
    ex.add_argument("--dataset", required=True, help="the target dataset (fmnist, cifar10)")
    ex.add_argument("--out", required=True, help="output file")
    ex.add_argument("--map", action="store_true",
                    help="map the template onto a fresh target model (new head keeps random signs)")
    ex.add_argument("--in-size", type=int, default=None, help="input side (compact; default 32)")
    ex.add_argument("--width", type=float, default=None, help="compact width multiplier")
    ex.add_argument("--head", choices=("append", "replace"), default=None, help="alexnet head")
    ex.add_argument("--seed", type=int, default=0, help="seed of the target init (with --map)")
    ex.set_defaults(func=_export)
    info = sub.add_parser("info", help="describe a template file (size in bits per sign, signs, "
                                       "negative fraction, dead-leaning and silent units)")
    info.add_argument("file", metavar="FILE_OR_SOURCE",
                      help="a template file, a shipped source's name or a source directory")
    _threshold_option(info)
    _activity_options(info)
    info.set_defaults(func=_info)
    cmp = sub.add_parser("compare", help="sign agreement of two templates, per parameter and overall")
    cmp.add_argument("a", metavar="A", help="a template file, a shipped source's name or a source "
                                            "directory")
    cmp.add_argument("b", metavar="B", help="the same for the other template (same parameter "
                                            "names and shapes)")
    _threshold_option(cmp)
    _activity_options(cmp)
    cmp.set_defaults(func=_compare)
    return p


def _threshold_option(p) -> None:
    # no default here: the library's (polarity.template.DEAD_THRESHOLD) is read when the command
    # runs, so building the parser imports no torch; the table's header shows the value used
    p.add_argument("--dead-threshold", type=float, default=None, metavar="F",
                   help="a unit counts as dead-leaning when at least this fraction of its "
                        "constrained incoming signs is -1 (default 90%%, shown in the table)")


def _activity_options(p) -> None:
    # defaults as for --dead-threshold: the library's, read when the command runs
    p.add_argument("--silent-below", type=float, default=None, metavar="P",
                   help="a unit counts as silent when its expected probability of being active "
                        "behind a ReLU on a fresh magnitude draw is below P (default 5%%)")
    p.add_argument("--magnitudes", default=None, metavar="DRAW",
                   help="the magnitude draw: glorot (default: the library's init, truncated "
                        "normal for conv kernels, uniform for linear weights), half-normal, "
                        "uniform, or E|w|/sqrt(E w^2) as a number")
    p.add_argument("--zero-mean-inputs", default=None, metavar="NAMES",
                   help="comma-separated parameters whose inputs are zero-mean (a first layer "
                        "reading standardised pixels): their units count as active half the "
                        "time; the others read a ReLU's output")


def _threshold(args) -> dict:
    """diagnose's keyword arguments from the options given (the library's defaults otherwise)."""
    kw = {} if args.dead_threshold is None else {"dead_threshold": args.dead_threshold}
    if args.silent_below is not None:
        kw["silent_below"] = args.silent_below
    if args.magnitudes is not None:
        try:
            kw["magnitudes"] = float(args.magnitudes)
        except ValueError:
            kw["magnitudes"] = args.magnitudes
    if args.zero_mean_inputs is not None:
        kw["input_ratio"] = {k.strip(): 0.0 for k in args.zero_mean_inputs.split(",") if k.strip()}
    return kw


def _error(msg) -> int:
    """The CLI's user error: one line on stderr, status 2 (``polarity.cli_errors``)."""
    from .cli_errors import error

    return error(msg)


def _read(text: str):
    """``(TemplateFile, label)`` for a template file, a shipped source's name or a source
    directory (its template file); a :class:`TemplateError` or ``SourceError`` otherwise."""
    from .sources.directory import TEMPLATE
    from .sources.zoo import as_path, resolve, shipped
    from .template import TemplateError, read_file

    p = as_path(text)
    if p.is_file():
        return read_file(p), str(p)
    if text in shipped() or p.is_dir():
        path = resolve(text) / TEMPLATE
        return read_file(path), f"{text} ({path})"
    raise TemplateError(f"no template file, shipped source or source directory {text!r} "
                        f"(shipped sources: {', '.join(shipped()) or 'none'})")


def _hp_for(args):
    from .experiments import get

    exp = get(args.dataset)
    preset = "paper" if args.arch == "alexnet" else "quick"
    hp = exp.presets[preset]
    changes = {"arch": args.arch, "source": args.source}
    if args.in_size is not None:
        changes["in_size"] = args.in_size
    if args.width is not None:
        changes["model_width"] = args.width
    if args.head is not None:
        changes["head"] = args.head
    hp = dataclasses.replace(hp, **changes)
    exp.validate(hp)
    return hp


def _export(args) -> int:
    from .experiments import ExperimentError
    from .experiments.images import get_source, model_kwargs
    from .template import Template, TemplateError
    from .transfer import TransferError

    if Path(args.out).is_dir():  # before any pretraining, which may take minutes
        return _error(f"--out {args.out} is a directory; give a file name")
    try:
        hp = _hp_for(args)
        num_classes = 10
        src = get_source(hp, num_classes, log=lambda m: print(m, file=sys.stderr))
        t = src.template
        if args.map:
            from .models import head_names, initialised

            model = initialised(hp.arch, num_classes, args.seed, **model_kwargs(hp))
            t = src.polarity_template(model, head=head_names(model))
        t.save(args.out)
        back = Template.load(args.out)
    except (TransferError, ExperimentError, TemplateError, ValueError, OSError) as e:
        return _error(e)
    print(f"wrote {args.out}: {len(back)} parameters, {back.numel()} signs, source {args.source!r}"
          f"{' mapped onto ' + args.dataset if args.map else ''}")
    return 0


def _info(args) -> int:
    from .sources.directory import SourceError
    from .template import TemplateError, diagnose

    try:
        f, label = _read(args.file)
        d = diagnose(f.template, **_threshold(args))
    except (TemplateError, SourceError) as e:  # the reader names what is wrong
        return _error(e)
    t = f.template
    print(f"{label}: format {f.format}, {len(t)} parameters, {t.numel():,} signs, "
          f"{f.file_bytes:,} bytes: {f.bits_per_sign:.4f} bits per sign "
          f"(payload only {f.payload_bits_per_sign:.4f})")
    for k, v in t.meta.items():
        print(f"  {k}: {v}")
    print(f"  {'parameter':40s} {'shape':>20s} {'+1':>7s} {'-1':>7s} {'free':>7s}  free entries stored as")
    for name, v in t.sign_tensors().items():
        n = max(v.numel(), 1)
        pos = int((v > 0).sum()) / n
        neg = int((v < 0).sum()) / n
        free = int((v == 0).sum())
        print(f"  {name:40s} {str(tuple(v.shape)):>20s} {pos:7.3f} {neg:7.3f} {free / n:7.3f}  "
              f"{f.encodings[name]} ({free:,})")
    print("diagnostics (constrained signs only; units: dim 0, filters and rows; P(active): "
          "expected fraction of units active behind a ReLU on a fresh magnitude draw, fan-in "
          "aware; see docs/templates.md):")
    print(_indent(d.table()))
    return 0


def _compare(args) -> int:
    from .sources.directory import SourceError
    from .template import TemplateError, diagnose

    try:
        (fa, la), (fb, lb) = _read(args.a), _read(args.b)
        da = diagnose(fa.template, fb.template, **_threshold(args))
        db = diagnose(fb.template, **_threshold(args))
    except (TemplateError, SourceError) as e:
        return _error(e)
    for tag, label, d in (("A", la, da), ("B", lb, db)):
        o = d.overall
        print(f"{tag}: {label}: {len(d.tensors)} parameters, {o.constrained:,} constrained signs, "
              f"-1 fraction {o.negative_fraction:.3f}, "
              f"dead-leaning units {o.dead_units:,}/{o.units:,}, "
              f"P(active) {o.active_fraction:.3f}, silent units {o.silent_units:,}/{o.units:,}")
    print("sign agreement (entries constrained in both):")
    print(_indent(da.table(signs=False)))
    return 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
