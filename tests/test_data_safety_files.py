"""Files a run writes and files an export may replace (issue 21 items 7, 8 and 15): polarity never
writes through a symbolic link in a run directory, never overwrites a SQLite database or a
spec.json (anyone's), and a damaged or odd input is one line (exit 2), never a traceback."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from polarity import cli, engine, experiments
from _cli import _cli, _one_line_error

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_data_safety_files")

TOY = experiments.get("toy")
SECRET = b"precious: 20 bytes!\n"


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("files") / "run"
    engine.run_spec(engine.resolve(TOY, "quick", sets=["sample_sizes=8"]), d, quiet=True)
    return d


@pytest.fixture
def run_copy(finished, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(finished, d)
    return d


def _outside(tmp_path: Path) -> Path:
    f = tmp_path / "outside" / "keep.txt"
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(SECRET)
    return f


# ----------------------------------------------------------------------------- 7. no symlinks followed

@pytest.mark.parametrize("argv", [["run", "toy", "--set", "sample_sizes=8", "--quiet", "--no-report", "--out", "{run}"],
                                  ["store", "upgrade", "{run}"]])
def test_a_symlinked_run_lock_is_refused_and_its_target_kept(run_copy, tmp_path, capsys, argv):
    target = _outside(tmp_path)
    (run_copy / "run.lock").unlink(missing_ok=True)
    (run_copy / "run.lock").symlink_to(target)
    code, _, err = _cli(capsys, *[a.format(run=run_copy) for a in argv])
    _one_line_error(code, err, "run.lock", "symbolic link")
    assert target.read_bytes() == SECRET


def test_a_new_run_into_a_directory_with_a_symlinked_lock_is_refused(tmp_path, capsys):
    target = _outside(tmp_path)
    out = tmp_path / "new"
    out.mkdir()
    (out / "run.lock").symlink_to(target)
    code, _, err = _cli(capsys, "run", "toy", "--set", "sample_sizes=8", "--quiet", "--out", out)
    _one_line_error(code, err, "run.lock", "symbolic link")
    assert target.read_bytes() == SECRET and sorted(p.name for p in out.iterdir()) == ["run.lock"]


@pytest.mark.parametrize("link", ["report", "report/report.md", "report/epochs.csv"])
def test_report_never_writes_through_a_symlink(run_copy, tmp_path, capsys, link):
    target = _outside(tmp_path)
    shutil.rmtree(run_copy / "report", ignore_errors=True)
    if link == "report":
        (run_copy / "report").symlink_to(target.parent, target_is_directory=True)
    else:
        (run_copy / "report").mkdir()
        (run_copy / link).symlink_to(target)
    before = _tree(target.parent)
    code, _, err = _cli(capsys, "report", run_copy)
    _one_line_error(code, err, link, "symbolic link")
    assert _tree(target.parent) == before and target.read_bytes() == SECRET


def test_a_failed_job_never_appends_to_a_symlinked_errors_log(tmp_path, capsys):
    """The log a failed job appends to is a file the run writes too: a link there is refused
    before anything is computed (it used to append the job's traceback to the link's target)."""
    argv = ["run", "toy", "--set", "sample_sizes=8,16", "--set", "fail_job=n=8/width=0", "--quiet", "--no-report",
            "--out", tmp_path / "run"]
    code, _, err = _cli(capsys, *argv)
    assert code == 1 and "job n=8/width=0" in err, err
    target = _outside(tmp_path)
    (tmp_path / "run" / "errors.log").unlink()
    (tmp_path / "run" / "errors.log").symlink_to(target)
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "errors.log", "symbolic link")
    assert target.read_bytes() == SECRET


def test_export_into_the_run_through_a_symlink_is_refused(run_copy, tmp_path, capsys):
    target = _outside(tmp_path)
    shutil.rmtree(run_copy / "report", ignore_errors=True)
    (run_copy / "report").symlink_to(target.parent, target_is_directory=True)
    code, _, err = _cli(capsys, "export", run_copy, "--csv", run_copy / "report" / "keep.txt")
    _one_line_error(code, err, "symbolic link", "Nothing was written")
    assert target.read_bytes() == SECRET


# ----------------------------------------------------------------------------- 8. no database overwritten

@pytest.mark.parametrize("name", ["results.sqlite", "spec.json", "results.sqlite-wal", "archive.db"])
def test_export_never_overwrites_another_runs_database_or_spec(finished, run_copy, tmp_path, capsys, name):
    other = run_copy  # another run: B
    if name == "archive.db":
        shutil.copyfile(other / "results.sqlite", other / name)  # a database by its content, any name
    elif not (other / name).exists():
        (other / name).write_bytes(b"")
    before = _tree(other)
    code, _, err = _cli(capsys, "export", finished, "--csv", other / name)
    _one_line_error(code, err, name, "Nothing was written")
    assert _tree(other) == before
    code, _, err = _cli(capsys, "export", finished, "--csv", tmp_path / "ok.csv", "--trials-csv", other / name)
    _one_line_error(code, err, name)
    assert _tree(other) == before and not (tmp_path / "ok.csv").exists()


@pytest.mark.parametrize("name", ["results.sqlite", "spec.json"])
def test_show_toml_never_overwrites_a_runs_database_or_spec(run_copy, tmp_path, capsys, name):
    """`show --toml FILE` writes a file too: another run's database or spec is never it."""
    before = _tree(run_copy)
    code, _, err = _cli(capsys, "show", "toy", "--toml", run_copy / name)
    _one_line_error(code, err, name, "Nothing was written")
    assert _tree(run_copy) == before
    code, _, err = _cli(capsys, "show", "toy", "--toml", tmp_path / "study.toml")
    assert code == 0 and (tmp_path / "study.toml").read_text().startswith("#"), err


def test_export_still_replaces_its_own_earlier_csv(finished, tmp_path, capsys):
    out = tmp_path / "e.csv"
    out.write_text("old export\n")
    code, _, err = _cli(capsys, "export", finished, "--csv", out)
    assert code == 0, err and out.read_text().startswith("experiment,")


@pytest.mark.parametrize("argv", [["run", "toy", "--set", "sample_sizes=8", "--quiet", "--no-report", "--out", "{run}"],
                                  ["store", "upgrade", "{run}"]])
def test_a_symlinked_database_is_never_written(finished, run_copy, tmp_path, capsys, argv):
    elsewhere = tmp_path / "elsewhere.sqlite"
    shutil.copyfile(run_copy / "results.sqlite", elsewhere)
    c = sqlite3.connect(elsewhere)
    c.execute("DELETE FROM epochs WHERE trial_id = (SELECT max(id) FROM trials)")
    c.execute("DELETE FROM trials WHERE id = (SELECT max(id) FROM trials)")  # a run would add it back
    c.commit()
    c.close()
    before = hashlib.sha256(elsewhere.read_bytes()).hexdigest()
    (run_copy / "results.sqlite").unlink()
    (run_copy / "results.sqlite").symlink_to(elsewhere)
    code, _, err = _cli(capsys, *[a.format(run=run_copy) for a in argv])
    _one_line_error(code, err, "results.sqlite is a symbolic link")
    assert hashlib.sha256(elsewhere.read_bytes()).hexdigest() == before


# ----------------------------------------------------------------------------- 15. one line, never a traceback

@pytest.mark.parametrize("cmd", ["run", "report", "export", "upgrade"])
def test_an_out_component_over_255_bytes_is_one_line(tmp_path, capsys, cmd):
    long = tmp_path / ("x" * 300)
    argv = {"run": ["run", "toy", "--set", "sample_sizes=8", "--quiet", "--out", long], "report": ["report", long],
            "export": ["export", long, "--csv", tmp_path / "e.csv"], "upgrade": ["store", "upgrade", long]}[cmd]
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "x" * 40)


def test_report_on_a_directory_whose_name_is_not_utf8(finished, tmp_path, capsys):
    d = Path(os.fsdecode(bytes(tmp_path) + b"/run-\xff\xfe"))
    shutil.copytree(finished, d)
    code, out, err = _cli(capsys, "report", d)
    assert code == 0, err
    text = (d / "report" / "report.md").read_bytes().decode("utf-8")  # valid UTF-8
    assert "$'" in text and "\\xff\\xfe" in text  # the path as bash reads it back


def _spoil_meta(d: Path, key: str, value: str) -> None:
    c = sqlite3.connect(d / "results.sqlite")
    c.execute("UPDATE run SET value = ? WHERE key = ?", (value, key))
    c.commit()
    c.close()


@pytest.mark.parametrize("where", ["spec.json", "meta:hparams", "meta:elapsed_s", "meta:spec_hash"])
@pytest.mark.parametrize("cmd", ["run", "report", "export"])
def test_bad_json_in_the_run_metadata_is_one_line(run_copy, tmp_path, capsys, where, cmd):
    if where == "spec.json":
        (run_copy / "spec.json").write_text('{"experiment": "toy", "hparams": {')
    else:
        _spoil_meta(run_copy, where.split(":")[1], "{not json")
    argv = {"run": ["run", "toy", "--set", "sample_sizes=8", "--quiet", "--out", run_copy], "report": ["report", run_copy],
            "export": ["export", run_copy, "--csv", tmp_path / "e.csv"]}[cmd]
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "spec.json" if where == "spec.json" else "results.sqlite")
    if where != "spec.json":
        assert repr(where.split(":")[1]) in err


@pytest.mark.parametrize("cmd", ["report", "export"])
def test_wrongly_typed_metadata_is_one_line_or_ignored(run_copy, tmp_path, capsys, cmd):
    _spoil_meta(run_copy, "elapsed_s", json.dumps("a long time"))
    argv = {"report": ["report", run_copy], "export": ["export", run_copy, "--csv", tmp_path / "e.csv"]}[cmd]
    code, _, err = _cli(capsys, *argv)
    assert code == 0, err


@pytest.mark.parametrize("value", [[1], None, "text", 5])
@pytest.mark.parametrize("cmd", ["report", "export", "upgrade", "repair"])
def test_a_metadata_hparams_that_is_not_an_object_is_one_line(run_copy, tmp_path, capsys, cmd, value):
    """Valid JSON of the wrong type where the database records its spec's hyper-parameters (a
    list, null, ...) is damage too: one line naming it, nothing written."""
    _spoil_meta(run_copy, "hparams", json.dumps(value))
    before = _tree(run_copy)
    argv = {"report": ["report", run_copy], "export": ["export", run_copy, "--csv", tmp_path / "e.csv"],
            "upgrade": ["store", "upgrade", run_copy], "repair": ["store", "repair", run_copy]}[cmd]
    code, _, err = _cli(capsys, *argv)
    _one_line_error(code, err, "results.sqlite", "'hparams'", "not an object")
    assert _tree(run_copy) == before and not (tmp_path / "e.csv").exists()
