"""The `polarity` command line: run / export / report / list, help texts, plugins and user errors."""
from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from polarity import cli, experiments
from polarity.store import EPOCH_COLUMNS

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_cli_engine")


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _digest(d: Path):
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """One finished toy run (with its report), shared by the read-only tests below."""
    d = tmp_path_factory.mktemp("cli") / "run"
    assert cli.main(["run", "toy", "--set", "sample_sizes=8,16", "--set", "widths=0,3", "--out", str(d), "--quiet"]) == 0
    return d


def test_run_prints_where_results_are_and_writes_report(toy_run, capsys, tmp_path):
    d = tmp_path / "r"
    code, out, err = _run(capsys, "run", "toy", "--set", "sample_sizes=8", "--out", str(d), "--quiet")
    assert code == 0
    assert f"results: {d / 'results.sqlite'}" in out and f"report:  {d / 'report' / 'report.md'}" in out
    assert "4/4 trials complete" in out
    assert err == ""  # --quiet and not a terminal: no progress bar
    assert (d / "report" / "report.md").exists() and (d / "report" / "epochs.csv").exists()
    code, out, _ = _run(capsys, "run", "toy", "--set", "sample_sizes=8", "--out", str(d), "--quiet", "--no-report")
    assert code == 0 and "0 computed now, 4 already there" in out


def test_export_has_contract_columns(toy_run, capsys, tmp_path):
    csv = tmp_path / "e.csv"
    tcsv = tmp_path / "t.csv"
    code, _, _ = _run(capsys, "export", str(toy_run), "--csv", str(csv), "--trials-csv", str(tcsv))
    assert code == 0
    df = pd.read_csv(csv)
    assert list(df.columns[:10]) == EPOCH_COLUMNS and "switch" in df.columns
    hp = experiments.get("toy").presets["quick"]
    assert len(df) == 2 * 2 * len(hp.conditions) * hp.trials * hp.epochs  # ns x widths x ...
    assert sorted(df["width"].unique()) == [0, 3] and set(df["condition"]) == {"a", "b"}
    assert df.groupby(["condition", "n", "width", "trial"]).size().eq(hp.epochs).all()
    assert len(pd.read_csv(tcsv)) == 16
    code, out, _ = _run(capsys, "export", str(toy_run), "--csv", "-")
    assert code == 0 and out.splitlines()[0].startswith(",".join(EPOCH_COLUMNS))
    assert len(out.splitlines()) == len(df) + 1


def test_report_header_and_csv(toy_run, capsys):
    code, out, _ = _run(capsys, "report", str(toy_run))
    assert code == 0 and "report.md" in out
    text = (toy_run / "report" / "report.md").read_text()
    spec = (toy_run / "spec.json").read_text()
    import json

    h = json.loads(spec)["hash"]
    for needle in ("# toy — quick", f"`{h}`", "trials complete | 16 of 16", "compute time", "hardware",
                   f"polarity run toy --preset quick --set sample_sizes=8,16 --set widths=0,3 --out {toy_run}",
                   "## Toy experiment", "toy_val_acc.png"):
        assert needle in text, needle
    assert (toy_run / "report" / "toy_val_acc.png").stat().st_size > 1000
    ep = pd.read_csv(toy_run / "report" / "epochs.csv")
    assert list(ep.columns[:10]) == EPOCH_COLUMNS


def test_help_lists_experiments_presets_conditions(capsys):
    """The catalogue is in the top-level help and where an experiment is chosen (run, show), not
    repeated in every other sub-command's help (issue 22)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    texts = {"": parser.format_help()}
    texts.update({name: p.format_help() for name, p in sub.choices.items() if name in ("run", "show")})
    for name, p in sub.choices.items():
        if name not in ("run", "show"):
            assert "experiments:" not in p.format_help(), name
    for name, text in texts.items():
        for exp in experiments.names():
            e = experiments.get(exp)
            assert exp in text, (name, exp)
            assert ", ".join(e.presets) in text, (name, exp)
            assert ", ".join(e.conditions) in text, (name, exp)
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "toy" in out and "conditions: a, b" in out and "presets: quick, grid" in out


@pytest.mark.parametrize("argv,needle", [
    (["run", "nope"], "unknown experiment 'nope'; known: "),
    (["run", "toy", "--preset", "huge"], "unknown preset 'huge' for experiment 'toy'; known: quick, grid"),
    (["run", "toy", "--conditions", "a,c"], "unknown condition 'c' for experiment 'toy'; known: a, b"),
    (["run", "toy", "--set", "trials=many"], "--set trials='many': expected an integer"),
    (["run", "toy", "--set", "colour=red"], "experiment 'toy' has no hparam 'colour'"),
    (["run", "toy", "--source", "imagenet"], "--source does not apply to experiment 'toy'"),
    (["run", "toy", "--workers", "0"], "--workers must be >= 1"),
    (["run", "toy", "--device", "tpu9"], "--device 'tpu9'"),
    (["run", "toy", "--progress-every", "0"], "--progress-every must be > 0 seconds"),
    (["run", "toy", "--progress-every", "nan"], "--progress-every must be > 0 seconds"),
    (["run", "toy", "--retries", "-1"], "--retries must be >= 0"),
    (["store", "upgrade", "/nonexistent/dir"], "/nonexistent/dir is not a directory"),
    (["export", "/nonexistent/dir", "--csv", "x.csv"], "/nonexistent/dir is not a directory"),
    (["report", "/nonexistent/dir"], "/nonexistent/dir is not a directory"),
])
def test_user_errors_one_line_exit_2(argv, needle, capsys, tmp_path):
    if argv[0] == "run":
        argv = argv + ["--out", str(tmp_path / "x")]
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert needle in err and err.startswith("polarity: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_out_of_another_spec_and_newer_schema_via_cli(toy_run, capsys, tmp_path):
    before = _digest(toy_run)
    code, _, err = _run(capsys, "run", "toy", "--set", "sample_sizes=8,16", "--set", "lr=0.25", "--out", str(toy_run),
                        "--quiet")
    assert code == 2 and "holds a run of a different spec" in err
    assert "lr: 0.5 vs 0.25" in err and "widths: [0, 3] vs [0]" in err and "Traceback" not in err
    assert _digest(toy_run) == before

    d = tmp_path / "future"
    assert cli.main(["run", "toy", "--set", "sample_sizes=8", "--out", str(d), "--quiet", "--no-report"]) == 0
    c = sqlite3.connect(d / "results.sqlite")
    c.execute("PRAGMA user_version = 7")
    c.commit()
    c.close()
    capsys.readouterr()
    before = _digest(d)
    for argv in (["run", "toy", "--set", "sample_sizes=8", "--out", str(d), "--quiet"], ["export", str(d), "--csv", "-"],
                 ["report", str(d)]):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "schema version 7" in err and str(d / "results.sqlite") in err, argv
    assert _digest(d) == before


def test_failed_job_exit_1_names_job_and_exception(capsys, tmp_path):
    d = tmp_path / "f"
    code, out, err = _run(capsys, "run", "toy", "--set", "sample_sizes=8,16", "--set", "fail_job=n=8/width=0",
                          "--out", str(d), "--quiet", "--no-report")
    assert code == 1
    assert "job n=8/width=0: RuntimeError: toy: job n=8/width=0 fails on purpose" in err
    assert "4/8 trials complete" in out


def test_plugins_are_plain_imports_working_added_broken_surface(monkeypatch, tmp_path, capsys):
    (tmp_path / "good_plugin.py").write_text(textwrap.dedent("""
        def add_parser(sub):
            p = sub.add_parser("hello", help="say hello")
            p.add_argument("--name", default="world")
            p.set_defaults(func=lambda args: print("hello", args.name) or 3)
    """))
    (tmp_path / "broken_plugin.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGINS", ("good_plugin",))
    code, out, _ = _run(capsys, "hello", "--name", "polarity")
    assert code == 3 and out.strip() == "hello polarity"
    hello = cli.build_parser()._subparsers._group_actions[0].choices["hello"]
    assert "say hello" in cli.build_parser().format_help() and "experiments:" not in hello.format_help()
    code, _, err = _run(capsys, "hello", "--bogus", "x")  # a plugin's parser follows the one convention
    assert code == 2 and err.startswith("polarity: error: ") and err.count("\n") == 1
    monkeypatch.setattr(cli, "PLUGINS", ("broken_plugin",))
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        cli.build_parser()
    monkeypatch.setattr(cli, "PLUGINS", ("polarity.no_such_plugin",))   # no silent skip
    with pytest.raises(ModuleNotFoundError, match="polarity.no_such_plugin"):
        cli.build_parser()


def test_python_dash_m_polarity_user_error():
    r = subprocess.run([sys.executable, "-m", "polarity", "run", "nope"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("polarity: error: unknown experiment 'nope'")


def test_progress_bar_only_on_a_terminal():
    """A bar on a terminal; lines on anything else (tests/test_progress.py); nothing when quiet."""
    import io

    from polarity.engine.progress import Progress

    log = io.StringIO()
    with Progress(10, 2, stream=log, every=3600) as lines:
        assert lines.mode == "log" and lines.bar is None
        lines.update(3)
    assert "\r" not in log.getvalue() and "5/10 trials" in log.getvalue()

    class TTY(io.StringIO):
        def isatty(self):
            return True

    s = TTY()
    with Progress(10, 2, desc="toy", stream=s) as bar:
        assert bar.mode == "bar"
        bar.update(3)
    assert "5/10" in s.getvalue() and "trial" in s.getvalue()
    for stream in (TTY(), io.StringIO()):
        with Progress(10, stream=stream, quiet=True) as p:
            assert p.mode == "off"
            p.update(1)
            p.log("pretraining")
        assert stream.getvalue() == ""


def test_cuda_device_without_cuda_is_a_user_error(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = _run(capsys, "run", "toy", "--device", "cuda", "--out", str(tmp_path / "x"))
    assert code == 2 and "CUDA is not available" in err and not (tmp_path / "x").exists()


def test_experiment_cli_field_flag_sets_the_hparam(monkeypatch, tmp_path):
    """An experiment's ``cli_fields`` become flags of `polarity run` (e.g. --source X)."""
    import dataclasses

    from polarity import engine
    from polarity.experiments.toy import Toy, ToyHparams

    @dataclasses.dataclass(frozen=True)
    class HP(ToyHparams):
        source: str = "none"

    class Sourced(Toy):
        name = "toy-sourced"
        Hparams = HP
        presets = {"quick": HP(sample_sizes=(8,))}
        cli_fields = {"source": "where the template comes from"}

    monkeypatch.setitem(experiments.REGISTRY, "toy-sourced", Sourced())
    seen = {}

    def fake_run_spec(spec, out, **kw):
        seen["hp"] = spec.hp
        raise experiments.ExperimentError("stop here")

    monkeypatch.setattr(engine, "run_spec", fake_run_spec)
    run_help = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "--source SOURCE" in run_help and "toy-sourced" in run_help
    code = cli.main(["run", "toy-sourced", "--source", "pretrained:cifar10", "--out", str(tmp_path / "x")])
    assert code == 2 and seen["hp"].source == "pretrained:cifar10"
