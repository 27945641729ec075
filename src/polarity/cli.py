"""The ``polarity`` command line (also ``python -m polarity``).

    polarity run EXP [--preset P] [--out DIR] [--set FIELD=VALUE ...] [--conditions a,b]
                 [--workers N] [--executor local|ray] [--address ADDR] [--retries N]
                 [--device cpu|cuda] [--progress-every SECONDS] [--quiet] [--no-report]
    polarity export DIR --csv FILE [--trials-csv FILE]
    polarity report DIR
    polarity store upgrade DIR
    polarity list

Plugin modules (``PLUGINS``) add their own subcommands through ``add_parser(subparsers)``.
User errors print one line on stderr and exit with status 2; failed jobs exit with status 1;
Ctrl-C prints one line and exits with status 130.  This module imports only the standard library
at module level, so an interrupt during start-up (torch and numpy load later) is one line too.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any, Sequence

PLUGINS = ("polarity.theory.cli", "polarity.template_cli", "polarity.sources.cli")
EXIT_USAGE = 2
EXIT_FAILED = 1


def _experiments() -> list[Any]:
    from . import experiments

    return [experiments.get(n) for n in experiments.names()]


def catalogue(exps: Sequence[Any] | None = None) -> str:
    """Experiments, their presets and conditions (for --help epilogs and `polarity list`)."""
    exps = _experiments() if exps is None else exps
    lines = ["experiments:"]
    for e in exps:
        lines.append(f"  {e.name:<10} {e.description}")
        lines.append(f"  {'':<10} presets: {', '.join(e.presets)}")
        lines.append(f"  {'':<10} conditions: {', '.join(e.conditions)}")
        if e.cli_fields:
            lines.append(f"  {'':<10} flags: " + ", ".join(f"--{f.replace('_', '-')}" for f in e.cli_fields))
    return "\n".join(lines)


def _cli_fields(exps: Sequence[Any]) -> dict[str, tuple[str, list[str]]]:
    out: dict[str, tuple[str, list[str]]] = {}
    for e in exps:
        for f, help_ in dict(e.cli_fields).items():
            h, owners = out.get(f, (help_, []))
            owners.append(e.name)
            out[f] = (h, owners)
    return out


def build_parser() -> argparse.ArgumentParser:
    exps = _experiments()
    cat = catalogue(exps)
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="polarity", formatter_class=fmt,
        description="Weight-polarity templates, Freeze-SGD and the experiments of 'Polarity is all "
                    "you need to learn and transfer faster'.",
        epilog=cat)
    from ._version import __version__

    p.add_argument("--version", action="version", version=f"polarity {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    names = [e.name for e in exps]
    r = sub.add_parser("run", help="run (or resume) an experiment's sweep into a run directory",
                       formatter_class=fmt, epilog=cat,
                       description="Run an experiment preset with overrides. Rerunning the same command "
                                   "resumes: finished trials are skipped.")
    r.add_argument("experiment", metavar="EXP", help=f"experiment: {', '.join(names)}")
    r.add_argument("--preset", help="named preset (default: 'quick' when the experiment has one)")
    r.add_argument("--out", type=Path, help="run directory (default: runs/<experiment>-<preset>-<hash[:10]>)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one hparam, typed by the field (tuples: comma separated, ints may be "
                        "ranges lo..hi; bools: true/false); repeatable")
    r.add_argument("--conditions", help="comma-separated conditions to run (default: the preset's)")
    for f, (help_, owners) in _cli_fields(exps).items():
        r.add_argument(f"--{f.replace('_', '-')}", dest=f"field_{f}", default=None, metavar=f.upper(),
                       help=f"{help_} [{', '.join(owners)}]")
    r.add_argument("--workers", type=int, default=1, help="parallel worker processes (local: a spawn "
                   "process pool when > 1; ray: CPUs of a local instance) (default 1)")
    r.add_argument("--executor", choices=("local", "ray"), default="local", help="where jobs run (default local)")
    r.add_argument("--address", help="Ray cluster address, e.g. HEAD_IP:6379 (--executor ray; the jobs "
                   "ship the polarity package; default: start a local instance)")
    r.add_argument("--retries", type=int, default=3, metavar="N",
                   help="--executor ray: run a job again up to N times when its worker or node is lost "
                        "(an exception in the job is not retried) (default 3)")
    r.add_argument("--device", default="cpu", help="torch device passed to every job: cpu or cuda[:i] (default cpu)")
    r.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                   help="when stderr is not a terminal (a log, nohup, CI): one progress line every SECONDS "
                        "(done/total trials, rate, ETA) (default 30)")
    r.add_argument("--quiet", action="store_true", help="no progress (bar or lines) and no messages but errors")
    r.add_argument("--no-report", action="store_true", help="do not write DIR/report at the end")
    r.set_defaults(func=cmd_run)

    e = sub.add_parser("export", help="write the tidy per-epoch CSV of a run", formatter_class=fmt, epilog=cat,
                       description="One row per (trial, epoch): experiment, condition, n, width, trial, epoch, "
                                   "train_loss, train_acc, val_loss, val_acc, then per-epoch extras.")
    e.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    e.add_argument("--csv", type=Path, required=True, metavar="FILE", help="output CSV ('-' for stdout)")
    e.add_argument("--trials-csv", type=Path, metavar="FILE", help="also write one row per trial here")
    e.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="write DIR/report/report.md (and figures) for a run",
                        formatter_class=fmt, epilog=cat)
    rp.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("store", help="maintain a run's results database", formatter_class=fmt, epilog=cat)
    st_sub = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    up = st_sub.add_parser("upgrade", formatter_class=fmt, epilog=cat,
                           help="convert a run's results database to the current schema, in place",
                           description="Convert DIR/results.sqlite, written by an older polarity, to the "
                                       "current schema in one transaction (an interruption leaves it as it "
                                       "was), then compact it. Older stores are read and exported without "
                                       "it; only adding results to them needs it. Holds the run's lock.")
    up.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    up.set_defaults(func=cmd_store_upgrade)

    ls = sub.add_parser("list", help="list experiments, presets and conditions", formatter_class=fmt, epilog=cat)
    ls.set_defaults(func=cmd_list)

    for mod in PLUGINS:
        plugin = importlib.import_module(mod)
        before = set(sub.choices)
        plugin.add_parser(sub)
        for name in set(sub.choices) - before:
            _add_epilog(sub.choices[name], cat)
    return p


def _add_epilog(parser: argparse.ArgumentParser, text: str) -> None:
    """Give a plugin's parser (and its nested subcommands) the experiments catalogue."""
    if parser.epilog is None:
        parser.epilog = text
        if parser.formatter_class is argparse.HelpFormatter:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                _add_epilog(child, text)


# ----------------------------------------------------------------------------- commands

_RUNNING: list[Path] = []  # the run directory a `run` command is writing, once it started


def cmd_run(args: argparse.Namespace) -> int:
    from . import engine
    from .experiments.base import ExperimentError

    exp = engine.get_experiment(args.experiment)
    fields = {k[len("field_"):]: v for k, v in vars(args).items() if k.startswith("field_") and v is not None}
    for f in fields:
        if f not in exp.cli_fields:
            raise ExperimentError(f"--{f.replace('_', '-')} does not apply to experiment {exp.name!r}")
    if args.workers < 1:
        raise ExperimentError(f"--workers must be >= 1, got {args.workers}")
    spec = engine.resolve(exp, args.preset, args.sets, args.conditions, fields)
    out = args.out if args.out is not None else engine.default_run_dir(spec)
    command = ["polarity", "run", *sys.argv[2:]] if sys.argv[1:2] == ["run"] else None
    _RUNNING.append(Path(out))
    summary = engine.run_spec(spec, out, executor=args.executor, workers=args.workers, address=args.address,
                              device=args.device, quiet=args.quiet, progress_every=args.progress_every,
                              retries=args.retries, command=command)
    done = summary.skipped_trials + summary.computed_trials
    print(f"{done}/{summary.total_trials} trials complete in {out} "
          f"({summary.computed_trials} computed now, {summary.skipped_trials} already there; "
          f"{summary.elapsed_s:.1f} s)", flush=True)
    print(f"results: {Path(out) / 'results.sqlite'}", flush=True)
    code = 0
    if not args.no_report:
        try:
            print(f"report:  {engine.write_report(out)}", flush=True)
        except ExperimentError:
            raise
        except Exception:  # noqa: BLE001 - a broken report must not hide that the results are safe
            import traceback

            traceback.print_exc()
            print(f"polarity: error: writing the report failed (above); the results are saved in {out}; "
                  f"retry with `polarity report {out}`", file=sys.stderr)
            code = EXIT_FAILED
    if summary.failures:
        print(f"error: {len(summary.failures)} job(s) failed (details in {Path(out) / 'errors.log'}); "
              "their trials were not recorded, rerun the same command to retry them:", file=sys.stderr)
        for f in summary.failures:
            print(f"  job {f.job}: {f.error}", file=sys.stderr)
        code = EXIT_FAILED
    return code


def cmd_export(args: argparse.Namespace) -> int:
    from .engine.runner import RunDirError, check_output, open_run
    from .experiments.base import ExperimentError
    from .files import atomic_write

    outputs = [(f, p) for f, p in (("--csv", args.csv), ("--trials-csv", args.trials_csv))
               if p is not None and str(p) != "-"]
    for flag, path in outputs:
        check_output(args.dir, path, flag)
    if len(outputs) == 2 and Path(outputs[0][1]).resolve() == Path(outputs[1][1]).resolve():
        raise ExperimentError(f"--csv and --trials-csv name the same file {args.csv}")
    _, _, store = open_run(args.dir)
    with store:
        epochs = store.epochs_frame()
        trials = store.trials_frame() if args.trials_csv else None
    try:
        if str(args.csv) == "-":
            epochs.to_csv(sys.stdout, index=False)
        else:  # whole or not at all: a failed export never leaves a truncated table
            atomic_write(args.csv, lambda tmp: epochs.to_csv(tmp, index=False))
        if trials is not None:
            atomic_write(args.trials_csv, lambda tmp: trials.to_csv(tmp, index=False))
    except OSError as e:
        raise RunDirError(f"cannot write {e.filename or args.csv}: {e.strerror or e}") from None
    if str(args.csv) != "-":
        print(f"wrote {len(epochs)} rows to {args.csv}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .engine import write_report

    path = write_report(args.dir)
    print(f"report: {path}")
    return 0


def cmd_store_upgrade(args: argparse.Namespace) -> int:
    from .engine.runner import upgrade_run

    info = upgrade_run(args.dir, command=["polarity", "store", "upgrade", str(args.dir)])
    db = Path(args.dir) / "results.sqlite"
    if info["from"] == info["to"]:
        print(f"{db} already has schema {info['to']}; nothing to do")
    else:
        def size(b: int) -> str:
            return f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.0f} kB"

        print(f"{db}: schema {info['from']} -> {info['to']}, {info['trials']} trials, "
              f"{size(info['bytes_before'])} -> {size(info['bytes_after'])}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print(catalogue())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `polarity ... | head`: the reader left; say nothing more
        sys.stderr.close()
        return 0
    except BaseException as e:
        if not _interrupted(e):
            raise
        if _RUNNING:
            print(f"polarity: interrupted; finished jobs are saved in {_RUNNING[-1]}, rerun the same "
                  "command to resume", file=sys.stderr)
        else:
            print("polarity: interrupted", file=sys.stderr)
        return 130
    finally:
        _RUNNING.clear()


def _interrupted(e: BaseException) -> bool:
    """A Ctrl-C, also when an import wrapped it (e.g. ``RuntimeError: Error calling __set_name__``)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _main(argv: list[str]) -> int:
    from .experiments.base import ExperimentError

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except ExperimentError as e:  # SpecError, StoreError, RunDirError are ExperimentErrors
        print(f"polarity: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
