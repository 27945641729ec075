"""``polarity report DIR``: DIR/report/report.md (a header on the run, then the experiment's own
section) and DIR/report/epochs.csv (the tidy export the figures are computed from).  Reads only
the store and spec.json, once they are found to agree (``runner.open_run``); takes no lock."""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

from ..experiments.base import MAX_GRID_TRIALS
from ..files import atomic_write
from .hardware import describe
from .rundir import RunDirError, refuse_links
from .runner import open_run, plan
from .spec import overrides


def shell_quote(s: str) -> str:
    """``s`` for a POSIX shell, as ``shlex.quote``; a path whose name is not UTF-8 (its bytes
    held as surrogates) as bash's ``$'...'`` with ``\\xHH`` escapes, so the report stays UTF-8
    and the command still names that directory."""
    try:
        s.encode("utf-8")
        return shlex.quote(s)
    except UnicodeEncodeError:
        return "$'" + "".join(chr(c) if 32 <= c < 127 and c not in (39, 92) else f"\\x{c:02x}"
                              for c in os.fsencode(s)) + "'"


def reproduce_command(exp, spec, out: Path) -> str:
    parts = ["polarity", "run", spec.experiment, "--preset", spec.preset]
    for ov in overrides(exp, spec.preset, spec.hp):
        parts += ["--set", ov]
    parts += ["--out", str(out)]
    return " ".join(shell_quote(p) for p in parts)


def _seconds(v: Any) -> float:
    """A duration from the run's metadata; NaN (shown as n/a) when it is not a number."""
    try:
        return float(v or 0.0)
    except (TypeError, ValueError):
        return float("nan")


def _fmt_seconds(s: float) -> str:
    if s != s:  # NaN
        return "n/a"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def header(exp, spec, out: Path, epochs, trials, meta: dict[str, Any]) -> str:
    try:  # the grid is counted before it is built: a hand-edited spec.json cannot make it huge
        n_expected = len(plan(exp, spec.hp)[0]) if exp.grid_size(spec.hp) <= MAX_GRID_TRIALS else None
    except Exception:  # noqa: BLE001 - a header must not fail on a broken grid
        n_expected = None
    n_done = int((trials["status"] == "complete").sum()) if len(trials) else 0
    hw = sorted({describe(h) for h in trials["hardware"]}) if len(trials) else []
    wall = float(trials["wall_s"].sum()) if len(trials) else 0.0
    lines = [
        f"# {exp.name} — {spec.preset}",
        "",
        f"{exp.description}",
        "",
        "| | |",
        "|---|---|",
        f"| experiment | `{exp.name}` |",
        f"| preset | `{spec.preset}` |",
        f"| spec hash | `{spec.hash}` |",
        f"| trials complete | {n_done}" + (f" of {n_expected}" if n_expected is not None else "") + " |",
        f"| conditions | {', '.join(spec.hp.conditions)} |",
        f"| compute time (sum over trials) | {_fmt_seconds(wall)} |",
        f"| elapsed (all invocations) | {_fmt_seconds(_seconds(meta.get('elapsed_s')))} |",
        f"| hardware | {'; '.join(hw) if hw else 'n/a'} |",
        f"| polarity version | {', '.join(sorted(set(trials['version']))) if len(trials) else meta.get('polarity_version', '?')} |",
        "",
    ]
    if len(trials):
        per = trials.groupby("condition").size()
        lines += ["Trials per condition: " + ", ".join(f"{c}: {int(k)}" for c, k in per.items()), ""]
    lines += ["Reproduce:", "", "```", reproduce_command(exp, spec, out), f"polarity report {shell_quote(str(out))}",
              "```", "", "Hyper-parameters:", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | `{json.dumps(v)}` |" for k, v in spec.hparams.items()]
    lines.append("")
    return "\n".join(lines)


EPOCHS_CSV_MAX_ROWS = 1_000_000  # larger tidy tables: ``polarity export`` (a 5M-row CSV takes a minute)


def write_report(out: str | Path) -> Path:
    """Write DIR/report/report.md and DIR/report/epochs.csv (up to ``EPOCHS_CSV_MAX_ROWS`` rows);
    returns the report path."""
    out = Path(out)
    exp, spec, store = open_run(out)
    with store:
        epochs = store.epochs_frame()
        trials = store.trials_frame()
        meta = store.meta()
    rdir = out / "report"
    refuse_links(out, rdir)  # the report, its table and the experiment's figures: never through a link
    try:
        rdir.mkdir(parents=True, exist_ok=True)
        tidy = rdir / "epochs.csv"
        if len(epochs) <= EPOCHS_CSV_MAX_ROWS:
            atomic_write(tidy, lambda tmp: epochs.to_csv(tmp, index=False))
            data = "Data: [epochs.csv](epochs.csv) (one row per trial and epoch).\n"
        else:
            tidy.unlink(missing_ok=True)  # never leave a stale table from an earlier report
            data = (f"Data: {len(epochs):,} epoch rows, too many for a CSV written at every report: "
                    f"`polarity export {shell_quote(str(out))} --csv FILE` writes them; each figure's "
                    "CSV is beside it.\n")
    except OSError as e:
        raise RunDirError(f"cannot write report into {rdir}: {e.strerror or e}") from None
    text = header(exp, spec, out, epochs, trials, meta)
    if len(epochs):
        section = exp.report(spec.hp, epochs, trials, rdir) or ""
    else:
        section = "_No finished trials yet._\n"
    text += "\n" + section.strip() + "\n\n" + data
    path = rdir / "report.md"
    try:
        atomic_write(path, text)
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None
    return path
