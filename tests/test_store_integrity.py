"""The results store cannot be fooled (issue 21 items 9, 13, 15, 16): every trial carries a digest
checked on read, rows that vanished or do not fit the spec are found, a damaged store is one line
(exit 2) naming the trial, `polarity store repair` removes exactly the damaged trials and the
rerun recomputes them; upgrades check their room first and say the truth when compaction fails."""
from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from polarity import cli, engine, experiments, store
from polarity.store import integrity
from _cli import _cli, _one_line_error

from _stores import drop_trials

# one pytest-xdist worker runs this module: its module-scoped fixtures do real work (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("test_store_integrity")

TOY = experiments.get("toy")
SPEC = ["sample_sizes=8,16"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("integrity") / "run"
    engine.run_spec(engine.resolve(TOY, "quick", sets=SPEC), d, quiet=True)
    csv = d.parent / "want.csv"
    assert cli.main(["export", str(d), "--csv", str(csv), "--trials-csv", str(d.parent / "want_trials.csv")]) == 0
    return d, csv.read_bytes(), (d.parent / "want_trials.csv").read_bytes()


@pytest.fixture
def run(finished, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(finished[0], d)
    return d


def _sql(d: Path, *statements) -> None:
    c = sqlite3.connect(d / store.FILENAME)
    for s in statements:
        c.execute(*s) if isinstance(s, tuple) else c.execute(s)
    c.commit()
    c.close()


def test_new_stores_have_digests_and_a_trial_count(finished):
    d, _, _ = finished
    c = sqlite3.connect(d / store.FILENAME)
    assert c.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 3
    digests = [r[0] for r in c.execute("SELECT digest FROM trials")]
    assert len(digests) == 8 and len(set(digests)) == 8 and all(len(x) == 32 for x in digests)
    assert c.execute("SELECT value FROM run WHERE key='trial_count'").fetchone()[0] == "8"
    c.close()


def test_bit_flips_never_change_an_export_silently(finished, tmp_path, capsys):
    """One bit flipped in each of 60 copies of a small store: every export is identical or a
    one-line error (exit 2); never different with exit 0, never a traceback."""
    d, want, want_trials = finished
    data = (d / store.FILENAME).read_bytes()
    used = [i for i, b in enumerate(data) if b]  # flips in zero padding mostly change nothing
    rng = random.Random(21)
    outcomes = {"identical": 0, "refused": 0}
    for k in range(60):
        at = rng.choice(used)
        bad = bytearray(data)
        bad[at] ^= 1 << rng.randrange(8)
        copy = tmp_path / f"c{k}"
        copy.mkdir()
        shutil.copyfile(d / "spec.json", copy / "spec.json")
        (copy / store.FILENAME).write_bytes(bytes(bad))
        csv, tcsv = tmp_path / f"c{k}.csv", tmp_path / f"c{k}.trials.csv"
        code, _, err = _cli(capsys, "export", copy, "--csv", csv, "--trials-csv", tcsv)
        if code == 0:
            assert csv.read_bytes() == want and tcsv.read_bytes() == want_trials, f"byte {at}: export changed"
            outcomes["identical"] += 1
        else:
            _one_line_error(code, err)
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 10, outcomes  # most used bytes are the trials' content


def test_a_changed_trial_is_refused_then_repaired_and_recomputed(finished, run, tmp_path, capsys):
    _, want, _ = finished
    # a series changed behind the store's back: the digest no longer fits
    c = sqlite3.connect(run / store.FILENAME)
    tid, blob = c.execute("SELECT trial_id, val_acc FROM epochs ORDER BY trial_id LIMIT 1 OFFSET 2").fetchone()
    cond, n, t = c.execute("SELECT condition, n, trial FROM trials WHERE id=?", (tid,)).fetchone()
    c.execute("UPDATE epochs SET val_acc=? WHERE trial_id=?", (blob[:-1] + bytes([blob[-1] ^ 1]), tid))
    c.commit()
    c.close()
    for argv in (["export", run, "--csv", tmp_path / "x.csv"], ["report", run],
                 ["run", "toy", "--set", SPEC[0], "--out", run, "--quiet", "--no-report"]):
        code, _, err = _cli(capsys, *argv)
        _one_line_error(code, err, f"trial {cond!r} n={n}", f"trial={t}", "does not match its digest",
                        f"polarity store repair {run}")
    assert not (tmp_path / "x.csv").exists()
    code, out, err = _cli(capsys, "store", "repair", run)
    assert code == 0, err
    assert f"removed: trial {cond!r} n={n}" in out and "7 trials kept" in out
    s = engine.run_spec(engine.resolve(TOY, "quick", sets=SPEC), run, quiet=True)
    assert s.complete and s.computed_trials == 1
    assert _cli(capsys, "export", run, "--csv", tmp_path / "e.csv")[0] == 0
    assert (tmp_path / "e.csv").read_bytes() == want


def test_rows_outside_the_spec_are_refused(run, tmp_path, capsys):
    c = sqlite3.connect(run / store.FILENAME)
    fields = ", ".join(integrity.TRIAL_FIELDS)
    row = list(c.execute(f"SELECT {fields} FROM trials LIMIT 1").fetchone())
    epochs = c.execute(f"SELECT {', '.join(integrity.EPOCH_FIELDS)} FROM epochs LIMIT 1").fetchone()
    row[1] = "frozen-oracle"  # a condition this spec does not have, with a valid digest
    cur = c.execute(f"INSERT INTO trials({fields}, digest) VALUES ({', '.join('?' * 15)})",
                    (*row, integrity.trial_digest(row, epochs)))
    c.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)", (cur.lastrowid, *epochs))
    c.execute("UPDATE run SET value='9' WHERE key='trial_count'")
    c.commit()
    c.close()
    code, _, err = _cli(capsys, "export", run, "--csv", tmp_path / "x.csv")
    _one_line_error(code, err, "trial 'frozen-oracle'", "does not fit the run's spec: unknown condition 'frozen-oracle'")
    code, out, _ = _cli(capsys, "store", "repair", run)
    assert code == 0 and "1 problem(s) removed, 8 trials kept" in out
    assert _cli(capsys, "export", run, "--csv", tmp_path / "x.csv")[0] == 0


@pytest.mark.parametrize("damage", ["trial row", "epochs row", "orphan epochs row", "count"])
def test_lost_rows_are_found(run, tmp_path, capsys, damage):
    edit = {"trial row": "DELETE FROM trials WHERE id = 3",
            "epochs row": "DELETE FROM epochs WHERE trial_id = 3",
            "orphan epochs row": "UPDATE epochs SET trial_id = 99 WHERE trial_id = 3",
            "count": "UPDATE run SET value = 'x' WHERE key = 'trial_count'"}[damage]
    _sql(run, edit)
    code, _, err = _cli(capsys, "export", run, "--csv", tmp_path / "x.csv")
    needle = {"trial row": "holds 7 trial rows, but 8 were committed (rows were lost)",
              "epochs row": "(row 3) has no epochs row", "orphan epochs row": "has no epochs row",
              "count": "an unreadable number of"}[damage]
    _one_line_error(code, err, needle)
    assert _cli(capsys, "store", "repair", run)[0] == 0
    s = engine.run_spec(engine.resolve(TOY, "quick", sets=SPEC), run, quiet=True)
    assert s.complete and s.computed_trials == (0 if damage == "count" else 1)


def _root(db: Path, name: str) -> tuple[int, int]:
    """The page (1-based) where the b-tree ``name`` begins, and the page size."""
    c = sqlite3.connect(db)
    try:
        (root,) = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return root, c.execute("PRAGMA page_size").fetchone()[0]
    finally:
        c.close()


def test_repair_refuses_a_file_damaged_at_sqlites_level(finished, run, capsys, monkeypatch):
    db = run / store.FILENAME
    root, size = _root(db, "trials")  # a table's page: no index rebuild mends it
    data = bytearray(db.read_bytes())
    data[(root - 1) * size + 3] ^= 0xFF  # the cell count of a b-tree page
    db.write_bytes(bytes(data))
    h = _sha(db)
    code, _, err = _cli(capsys, "store", "repair", run)
    _one_line_error(code, err, "damaged at SQLite's level", "nothing was changed")
    assert _sha(db) == h


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = 0
    for k in range(8):
        v = (v << 7) | (b[i + k] & 0x7F)
        if b[i + k] < 0x80:
            return v, i + k + 1
    return (v << 8) | b[i + 8], i + 9


def _index_leaf(data: bytearray, root: int, size: int) -> tuple[int, list[int]]:
    """An index b-tree's root page, a leaf (a small store's): its header's offset in the file
    and where each cell's record begins."""
    at = (root - 1) * size
    assert data[at] == 0x0A  # a leaf page of an index
    cells = []
    for k in range(int.from_bytes(data[at + 3:at + 5], "big")):
        _, record = _varint(data, at + int.from_bytes(data[at + 8 + 2 * k:at + 10 + 2 * k], "big"))
        cells.append(record)
    return at, cells


def _last_value(data: bytearray, record: int) -> int:
    """The offset of the last value of an index record (the row id it points to), one byte."""
    head, i = _varint(data, record)
    types = []
    while i < record + head:
        t, i = _varint(data, i)
        types.append(t)
    width = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 8, 8: 0, 9: 0}
    assert types[-1] == 1  # a small row id: one byte
    return record + head + sum(width[t] if t < 12 else (t - 12 - t % 2) // 2 for t in types) - 1


@pytest.mark.parametrize("damage", ["an entry's row id", "the page's fragment count", "a cell beyond the page"])
def test_repair_rebuilds_an_index_whose_table_is_whole(finished, run, tmp_path, capsys, damage):
    """An index that no longer fits its table (PRAGMA integrity_check names only the index, or
    only the index's page) is rebuilt from the table by `store repair` (REINDEX, then the file
    checked again), every trial kept; before, a damaged index page made repair refuse the file."""
    _, want, _ = finished
    db = run / store.FILENAME
    root, size = _root(db, "sqlite_autoindex_trials_1")
    data = bytearray(db.read_bytes())
    at, cells = _index_leaf(data, root, size)
    if damage == "an entry's row id":
        data[_last_value(data, cells[2])] = 100  # no such row
    elif damage == "the page's fragment count":
        data[at + 7] ^= 0x09
    else:
        data[at + 8 + 2 * 2:at + 10 + 2 * 2] = (size - 4).to_bytes(2, "big")
    db.write_bytes(bytes(data))
    c = sqlite3.connect(db)
    found = [r[0] for r in c.execute("PRAGMA quick_check")]
    if found == ["ok"]:
        found = [r[0] for r in c.execute("PRAGMA integrity_check")]
    c.close()
    assert found != ["ok"] and all("sqlite_autoindex_trials_1" in f or f"page {root}" in f for f in found), found
    code, out, err = _cli(capsys, "store", "repair", run)
    assert code == 0 and "0 problem(s) removed, 8 trials kept" in out, err
    c = sqlite3.connect(db)
    assert [r[0] for r in c.execute("PRAGMA integrity_check")] == ["ok"]
    c.close()
    assert cli.main(["export", str(run), "--csv", str(tmp_path / "e.csv")]) == 0
    assert (tmp_path / "e.csv").read_bytes() == want


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=40, deadline=None)
@given(wall=st.floats(allow_nan=True, allow_infinity=True), seed=st.integers(-2**63, 2**63 - 1),
       cond=_text, extra=st.dictionaries(_text, st.one_of(st.integers(-2**53, 2**53), _text, st.none()), max_size=3),
       losses=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=4))
def test_whatever_is_committed_verifies(tmp_path_factory, wall, seed, cond, extra, losses):
    """The digest the commit writes is the digest a reader computes, for any value SQLite may
    store differently from how it was given (NaN as NULL, -0.0 as 0, any text)."""
    from polarity.experiments.base import EpochRecord, TrialKey, TrialResult

    db = tmp_path_factory.mktemp("prop") / store.FILENAME
    recs = [EpochRecord(i + 1, v, 0.5, v, 0.5, {"k": v}) for i, v in enumerate(losses)]
    with store.Store(db) as s:
        s.commit_job("toy", "j", [TrialResult(TrialKey(cond, 8, 0, 1), seed, wall, recs, extra)],
                     hardware={"host": cond}, version=cond, hparams={"x": extra})
    with store.Store(db, readonly=True) as s:
        s.expect(store.Grid("toy", [TrialKey(cond, 8, 0, 1)]))
        s.verify()
        assert len(s.epochs_frame()) == len(losses) and len(s.trials_frame()) == 1
