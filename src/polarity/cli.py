"""The ``polarity`` command line (also ``python -m polarity``).

    polarity run EXP [--preset P] [--config FILE] [--out DIR] [--set FIELD=VALUE ...] [--conditions a,b]
                 [--workers N] [--executor local|ray] [--address ADDR] [--retries N]
                 [--device cpu|cuda] [--progress-every SECONDS] [--quiet] [--no-report]
    polarity show EXP [--preset P] [--config FILE] [--set FIELD=VALUE ...] [--toml FILE]
    polarity export DIR [--csv FILE] [--trials-csv FILE] [--tensorboard LOGDIR] [--mlflow URI]
    polarity report DIR
    polarity store upgrade DIR
    polarity store repair DIR
    polarity list

Plugin modules (``PLUGINS``) add their own subcommands through ``add_parser(subparsers)``.
User errors print one line on stderr and exit with status 2 (``polarity.cli_errors``: the one
convention of every sub-command); failed jobs exit with status 1; Ctrl-C prints one line and
exits with status 130.  This module imports only the standard library at module level, so an
interrupt during start-up (torch and numpy load later) is one line too.
"""
from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from .cli_errors import EXIT_USAGE, ArgumentParser, UsageError, error, unknown

PLUGINS = ("polarity.theory.cli", "polarity.template_cli", "polarity.sources.cli")
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


#: other names of a field's flag: --model is what a user of a model zoo types for the network
FLAG_ALIASES = {"--model": "arch"}


def _cli_fields(exps: Sequence[Any]) -> dict[str, tuple[str, list[str]]]:
    from .engine.spec import field_help

    out: dict[str, tuple[str, list[str]]] = {}
    for e in exps:
        for f, help_ in field_help(e.Hparams, e.cli_fields).items():
            if f not in e.cli_fields:
                continue
            h, owners = out.get(f, (help_, []))
            owners.append(e.name)
            out[f] = (h, owners)
    return out


def _spec_arguments(r: argparse.ArgumentParser, exps: Sequence[Any]) -> None:
    """The arguments that choose a spec, shared by ``run`` and ``show``."""
    names = [e.name for e in exps]
    r.add_argument("experiment", metavar="EXP", nargs="?",
                   help=f"experiment: {', '.join(names)} (or the config file's)")
    r.add_argument("--preset", help="named preset (default: the config file's, else 'quick' when the "
                   "experiment has one)")
    r.add_argument("--config", type=Path, metavar="FILE",
                   help="a TOML study config (experiment, preset, [hparams]; 'polarity show EXP --toml FILE' "
                        "writes one); --set flags apply on top of it")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one hparam, typed by the field (tuples: comma separated, ints may be "
                        "ranges lo..hi; bools: true/false); repeatable, each field once; 'polarity show EXP' "
                        "lists the fields with their help")
    r.add_argument("--conditions", help="comma-separated conditions to run (default: the preset's)")
    for f, (help_, owners) in _cli_fields(exps).items():
        flags = [f"--{f.replace('_', '-')}"] + [a for a, field in FLAG_ALIASES.items() if field == f]
        r.add_argument(*flags, dest=f"field_{f}", default=None, metavar=f.upper(),
                       help=f"{help_} [{', '.join(owners)}]")


def build_parser() -> argparse.ArgumentParser:
    exps = _experiments()
    cat = catalogue(exps)
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(
        prog="polarity", formatter_class=fmt,
        description="Weight-polarity templates, Freeze-SGD and the experiments of 'Polarity is all "
                    "you need to learn and transfer faster'.",
        epilog=cat)
    from ._version import __version__

    p.add_argument("--version", action="version", version=f"polarity {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run (or resume) an experiment's sweep into a run directory",
                       formatter_class=fmt, epilog=cat,
                       description="Run an experiment preset with overrides. Rerunning the same command "
                                   "resumes: finished trials are skipped.")
    _spec_arguments(r, exps)
    r.add_argument("--out", type=Path, help="run directory (default: runs/<experiment>-<preset>-<identity[:10]>, "
                                            "the same as the run grows)")
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
                        "(done/total trials, best validation error so far, rate, ETA) (default 30)")
    r.add_argument("--quiet", action="store_true", help="no progress (bar or lines) and no messages but errors")
    r.add_argument("--no-report", action="store_true", help="do not write DIR/report at the end")
    r.set_defaults(func=cmd_run)

    sh = sub.add_parser("show", help="what a run would compute: hyper-parameters with their help, "
                        "conditions, trial and job counts, an estimated time", formatter_class=fmt, epilog=cat,
                        description="Resolve EXP's preset with the same arguments as 'polarity run' and "
                                    "describe it without running anything. --toml FILE writes it as a "
                                    "config file that 'polarity run --config FILE' reads back to the same "
                                    "spec hash.")
    _spec_arguments(sh, exps)
    sh.add_argument("--workers", type=int, default=1, help="workers the wall-time estimate assumes (default 1)")
    sh.add_argument("--toml", type=Path, metavar="FILE", help="write the spec as a TOML config ('-' for stdout)")
    sh.set_defaults(func=cmd_show)

    e = sub.add_parser("export", help="write a run's curves: tidy CSV, TensorBoard event files, MLflow",
                       formatter_class=fmt,
                       description="--csv: one row per (trial, epoch): experiment, condition, n, width, trial, "
                                   "epoch, train_loss, train_acc, val_loss, val_acc, then per-epoch extras. "
                                   "--tensorboard: one event-file run per trial. --mlflow: one MLflow run per "
                                   "trial (hyper-parameters as params, series as metrics).")
    e.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    e.add_argument("--csv", type=Path, metavar="FILE", help="output CSV ('-' for stdout)")
    e.add_argument("--trials-csv", type=Path, metavar="FILE", help="also write one row per trial here")
    e.add_argument("--tensorboard", type=Path, metavar="LOGDIR",
                   help="write every trial's curves as TensorBoard event files under LOGDIR "
                        "(pip install 'polarity[tensorboard]')")
    e.add_argument("--mlflow", metavar="URI", help="log every trial as an MLflow run to the tracking URI, "
                   "e.g. sqlite:///mlflow.db or a server (pip install 'polarity[mlflow]')")
    e.add_argument("--mlflow-experiment", metavar="NAME",
                   help="MLflow experiment name (default: the run directory's name)")
    e.set_defaults(func=cmd_export)

    rp = sub.add_parser("report", help="write DIR/report/report.md (and figures) for a run")
    rp.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("store", help="maintain a run's results database")
    st_sub = st.add_subparsers(dest="store_command", metavar="ACTION", required=True)
    up = st_sub.add_parser("upgrade", formatter_class=fmt,
                           help="convert a run's results database to the current schema, in place",
                           description="Convert DIR/results.sqlite, written by an older polarity, to the "
                                       "current schema in one transaction (an interruption leaves it as it "
                                       "was), then compact it. Older stores are read and exported without "
                                       "it; only adding results to them needs it. Holds the run's lock.")
    up.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    up.set_defaults(func=cmd_store_upgrade)
    rep = st_sub.add_parser("repair", formatter_class=fmt,
                            help="remove the damaged trials of a run's results database, so a rerun recomputes them",
                            description="Check every trial of DIR/results.sqlite (its digest, its epochs row, the "
                                        "count of committed trials, the spec's grid), list those that fail and "
                                        "remove them in one transaction; rerunning the run's command then "
                                        "recomputes exactly those trials. Holds the run's lock.")
    rep.add_argument("dir", type=Path, metavar="DIR", help="run directory")
    rep.set_defaults(func=cmd_store_repair)

    ls = sub.add_parser("list", help="list experiments, presets and conditions")
    ls.set_defaults(func=cmd_list)

    for mod in PLUGINS:
        importlib.import_module(mod).add_parser(sub)
    for parser in _walk(p):
        parser.description = _plain(parser.description)
        parser.epilog = _plain(parser.epilog)
    return p


def _walk(parser: argparse.ArgumentParser):
    """A parser and every sub-command parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _walk(child)


_ROLE = re.compile(r":(?:mod|meth|func|class|attr|data|obj|exc):`~?([^`]+)`")


def _plain(text: str | None) -> str | None:
    """Help text without reStructuredText markup (a module docstring used as a description)."""
    if not text:
        return text
    return _ROLE.sub(r"\1", text).replace("``", "")


# ----------------------------------------------------------------------------- commands

_RUNNING: list[Path] = []  # the run directory a `run` command is writing, once it started


def _experiment(name: str):
    from . import experiments

    names = experiments.names()
    if name not in names:
        raise UsageError(unknown("experiment", name, names))
    return experiments.get(name)


def _resolve(args: argparse.Namespace):
    """The experiment and spec that ``run`` and ``show`` arguments (and a --config file) name."""
    from . import engine
    from .engine.spec import read_config

    config = read_config(args.config) if args.config is not None else None
    name = args.experiment
    if config is not None:
        if name is not None and name != config["experiment"]:
            raise UsageError(f"EXP {name!r} differs from the config's experiment {config['experiment']!r} "
                             f"({args.config}); give one of them")
        name = config["experiment"]
    if name is None:
        raise UsageError("give an experiment (EXP) or --config FILE; 'polarity list' shows the experiments")
    exp = _experiment(name)
    fields = {k[len("field_"):]: v for k, v in vars(args).items() if k.startswith("field_") and v is not None}
    for f in fields:
        if f not in exp.cli_fields:
            raise UsageError(f"--{f.replace('_', '-')} does not apply to experiment {exp.name!r}")
    preset = args.preset or (config or {}).get("preset")
    spec = engine.resolve(exp, preset, args.sets, args.conditions, fields,
                          config=(config or {}).get("hparams"))
    return exp, spec


def cmd_run(args: argparse.Namespace) -> int:
    from . import engine
    from .experiments.base import ExperimentError

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    exp, spec = _resolve(args)
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
            error(f"writing the report failed (above); the results are saved in {out}; "
                  f"retry with `polarity report {out}`")
            code = EXIT_FAILED
    if summary.failures:
        print(f"polarity: error: {len(summary.failures)} job(s) failed (details in {Path(out) / 'errors.log'}); "
              "their trials were not recorded, rerun the same command to retry them:", file=sys.stderr)
        for f in summary.failures:
            print(f"  job {f.job}: {f.error}", file=sys.stderr)
        code = EXIT_FAILED
    return code


def cmd_show(args: argparse.Namespace) -> int:
    from .engine.show import describe
    from .engine.spec import field_help, to_toml

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    exp, spec = _resolve(args)
    if args.toml is None:
        print(describe(exp, spec, workers=args.workers))
        return 0
    header = [f"polarity run --config FILE  (spec hash {spec.hash[:10]}; written by 'polarity show')",
              f"{exp.name}: {exp.description}", "edit any value; 'polarity show --config FILE' checks it"]
    text = to_toml(spec, field_help(type(spec.hp), dict(exp.cli_fields)), header)
    if str(args.toml) == "-":
        sys.stdout.write(text)
        return 0
    from .engine.rundir import RunDirError, refuse_overwrite
    from .files import atomic_write

    refuse_overwrite(args.toml, "--toml")
    try:
        atomic_write(args.toml, text)
    except OSError as e:
        raise RunDirError(f"cannot write {args.toml}: {e.strerror or e}") from None
    print(f"wrote {args.toml} (spec {spec.hash[:10]}); run it with: polarity run --config {args.toml}",
          file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .engine.rundir import RunDirError, check_output
    from .engine.runner import open_run
    from .experiments.base import ExperimentError
    from .files import atomic_write

    if args.csv is None and args.trials_csv is None and args.tensorboard is None and args.mlflow is None:
        raise UsageError("export: give at least one of --csv FILE, --trials-csv FILE, --tensorboard LOGDIR, "
                         "--mlflow URI")
    outputs = [(f, p) for f, p in (("--csv", args.csv), ("--trials-csv", args.trials_csv),
                                   ("--tensorboard", args.tensorboard))
               if p is not None and str(p) != "-"]
    for flag, path in outputs:
        check_output(args.dir, path, flag)
    csvs = [p for f, p in outputs if f != "--tensorboard"]
    if len(csvs) == 2 and Path(csvs[0]).resolve() == Path(csvs[1]).resolve():
        raise ExperimentError(f"--csv and --trials-csv name the same file {args.csv}")
    trackers = None
    if args.tensorboard is not None or args.mlflow is not None:
        from .engine import trackers

        trackers.check_available(tensorboard=args.tensorboard is not None, mlflow=args.mlflow is not None)
    exp, spec, store = open_run(args.dir)
    with store:
        epochs = store.epochs_frame()
        trials = store.trials_frame() if (args.trials_csv or trackers) else None
    if trials is not None:
        trials = _json_cells(trials)
    try:
        if args.csv is not None and str(args.csv) == "-":
            _json_cells(epochs).to_csv(sys.stdout, index=False)
        elif args.csv is not None:  # whole or not at all: a failed export never leaves a truncated table
            atomic_write(args.csv, lambda tmp: _json_cells(epochs).to_csv(tmp, index=False))
        if args.trials_csv is not None:
            atomic_write(args.trials_csv, lambda tmp: trials.to_csv(tmp, index=False))
    except BrokenPipeError:  # `--csv - | head`: the reader has what it wanted (main ends quietly)
        raise
    except OSError as e:
        raise RunDirError(f"cannot write {e.filename or args.csv}: {e.strerror or e}") from None
    if args.csv is not None and str(args.csv) != "-":
        print(f"wrote {len(epochs)} rows to {args.csv}", file=sys.stderr)
    if args.tensorboard is not None:
        n = trackers.to_tensorboard(epochs, args.tensorboard)
        print(f"wrote {n} TensorBoard runs under {args.tensorboard} (tensorboard --logdir {args.tensorboard})",
              file=sys.stderr)
    if args.mlflow is not None:
        name = args.mlflow_experiment or Path(args.dir).resolve().name
        n = trackers.to_mlflow(epochs, trials, spec.hparams, args.mlflow, experiment=name, spec_hash=spec.hash,
                               identity=spec.identity)
        print(f"logged {n} MLflow runs to {args.mlflow} (experiment {name!r})", file=sys.stderr)
    return 0


def _json_cells(frame):
    """A frame whose dict/list cells (the trials' ``hardware`` and ``extra``, JSON-valued extras)
    are JSON text, as the store holds them, not Python reprs: a CSV any JSON reader parses."""
    import json

    out = frame
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(lambda v: isinstance(v, (dict, list))).any():
            if out is frame:
                out = frame.copy()
            out[col] = frame[col].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
    return out


def cmd_report(args: argparse.Namespace) -> int:
    from .engine import write_report

    path = write_report(args.dir)
    print(f"report: {str(path).encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')}")  # any name
    return 0


def cmd_store_upgrade(args: argparse.Namespace) -> int:
    from .engine.runner import upgrade_run

    info = upgrade_run(args.dir, command=["polarity", "store", "upgrade", str(args.dir)])
    db = Path(args.dir) / "results.sqlite"
    def size(b: int) -> str:
        return f"{b / 1e6:.1f} MB" if b >= 1e6 else f"{b / 1e3:.0f} kB"

    if info["from"] == info["to"]:
        print(f"{db} already has schema {info['to']}; " + (
            f"compacted, {size(info['bytes_before'])} -> {size(info['bytes_after'])}" if info["compacted"]
            else "nothing to do"))
    else:
        orphans = f", {info['orphans']} epochs rows of no trial dropped" if info["orphans"] else ""
        print(f"{db}: schema {info['from']} -> {info['to']}, {info['trials']} trials{orphans}, "
              f"{size(info['bytes_before'])} -> {size(info['bytes_after'])}")
    if info.get("spec"):
        print(f"{Path(args.dir) / 'spec.json'}: spec format {info['spec'][0]} -> {info['spec'][1]} (the same "
              "hyper-parameters under their new names; the trials are unchanged); the run resumes and grows again")
    return 0


def cmd_store_repair(args: argparse.Namespace) -> int:
    from .engine.runner import repair_run

    info = repair_run(args.dir, command=["polarity", "store", "repair", str(args.dir)])
    for problem in info["removed"]:
        print(f"removed: {problem}")
    print(f"{Path(args.dir) / 'results.sqlite'}: {len(info['removed'])} problem(s) removed, {info['trials']} "
          f"trials kept" + ("; rerun the run's command (its report shows it) to recompute the removed trials"
                            if info["removed"] else ""))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    print(catalogue())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `polarity ... | head`: the reader left; say nothing more
        import os

        try:  # the interpreter's last flush of stdout must not fail (status 120) or complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
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
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:  # --help, --version, or argparse's one-line error (cli_errors)
            return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
        return int(args.func(args) or 0)
    except (ExperimentError, UsageError) as e:  # SpecError, StoreError, RunDirError are ExperimentErrors
        return error(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
