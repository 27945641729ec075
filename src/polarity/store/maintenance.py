"""Converting and mending a results store in place, when the user asks (see ``docs/engine.md``):
``upgrade`` (``polarity store upgrade DIR``) converts a schema-1 or -2 store to the current schema
in one transaction and compacts it; ``repair`` (``polarity store repair DIR``) removes the trials
of a schema-3 store that fail its checks (``integrity``), so that the run's command recomputes
them.  Both are re-exported by ``polarity.store``; the caller holds the run's lock.
"""
from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ..experiments.base import EpochRecord, TrialKey, TrialResult, gc_paused
from .columnar import pack_trial
from .database import Store, StoreError, _is_readonly, _refuse_links, immediate, old_repair_advice
from .frames import old_problems
from .integrity import COUNT_KEY, EPOCH_FIELDS, TRIAL_FIELDS, Grid, Problem, Text, check, trial_digest
from .schema import _EPOCHS_DDL, METRICS, SCHEMA_VERSION

__all__ = ["UPGRADE_ROOM", "upgrade", "repair"]


def _v1_trials(conn: sqlite3.Connection) -> Iterable[tuple[int, list[EpochRecord]]]:
    """A schema-1 store's epoch rows as (trial id, records), NULL metrics as NaN; rows of no
    trial (which no frame shows) are left out."""
    rows = conn.execute(f"SELECT trial_id, epoch, {', '.join(METRICS)}, extra FROM epochs"
                        " WHERE trial_id IN (SELECT id FROM trials) ORDER BY trial_id, epoch")
    nan = math.nan
    for tid, group in itertools.groupby(rows, key=lambda r: r[0]):
        yield tid, [EpochRecord(e, nan if a is None else a, nan if b is None else b,
                                nan if c is None else c, nan if d is None else d,
                                json.loads(x) if x else {}) for _, e, a, b, c, d, x in group]


UPGRADE_ROOM = 3  # free disk an upgrade needs, in multiples of the store (see ``upgrade``)


def _free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def _compact(conn: sqlite3.Connection) -> None:
    """Return the pages an upgrade or a repair freed: VACUUM (a copy of the store, through the
    WAL), then the WAL checkpointed into the file and truncated."""
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _mb(b: int) -> str:
    return f"{b / 1e6:.1f} MB"


def _room(path: Path) -> int:
    """The free disk an upgrade or a compaction of ``path`` needs (checked first, and asked for
    when a compaction failed)."""
    return UPGRADE_ROOM * _size(path)


def _check_room(path: Path, what: str) -> None:
    need, free = _room(path), _free_bytes(path.parent)
    if free < need:
        raise StoreError(f"{what} {path} needs about {_mb(need)} free on its disk ({UPGRADE_ROOM}x the store: "
                         f"the rewritten tables, then a compacted copy, both through its WAL); {_mb(free)} are "
                         "free. Nothing was changed; free some space and rerun")


def _compact_or_say(conn: sqlite3.Connection, path: Path, done: str) -> None:
    """Compact after a committed change; a failure (a full disk) says what state the store is in."""
    try:
        _compact(conn)
    except sqlite3.Error as e:
        wal = Path(f"{path}-wal")
        left = _mb(wal.stat().st_size) if wal.exists() else "no"
        raise StoreError(
            f"{done}, and it reads as it is; compacting it afterwards failed ({e}), so the file keeps its "
            f"old size and {wal.name} holds {left} of an unfinished copy. Free about {_mb(_room(path))} on its "
            f"disk ({UPGRADE_ROOM}x the store) and run `polarity store upgrade {path.parent}` again to compact it "
            "(nothing is lost meanwhile)") from None


def _digest_all(conn: sqlite3.Connection, epochs: str = "epochs") -> tuple[int, int]:
    """Schema 2 to 3 inside the caller's transaction: an empty epochs row for a trial without
    one, orphan epochs rows removed, the digest column filled, ``trial_count`` set.  Returns
    (trials, orphan epochs rows removed)."""
    orphans = conn.execute(f"DELETE FROM {epochs} WHERE trial_id NOT IN (SELECT id FROM trials)").rowcount
    empty = pack_trial(TrialResult(TrialKey("", 0, 0, 0), 0, 0.0, []))
    conn.executemany(f"INSERT INTO {epochs} VALUES (?,?,?,?,?,?,?,?)",
                     [(tid, empty.n_epochs, *empty.series, empty.extra) for (tid,) in conn.execute(
                         f"SELECT id FROM trials WHERE id NOT IN (SELECT trial_id FROM {epochs})").fetchall()])
    conn.execute("ALTER TABLE trials ADD COLUMN digest TEXT")
    saved = conn.text_factory
    conn.text_factory = Text  # the values exactly as a verifying reader sees them
    try:
        rows = conn.execute(
            f"SELECT t.id, {', '.join('t.' + f for f in TRIAL_FIELDS)}, {', '.join('e.' + f for f in EPOCH_FIELDS)}"
            f" FROM trials t JOIN {epochs} e ON e.trial_id = t.id").fetchall()
    finally:
        conn.text_factory = saved
    nt = len(TRIAL_FIELDS)
    conn.executemany("UPDATE trials SET digest = ? WHERE id = ?",
                     [(trial_digest(r[1:1 + nt], r[1 + nt:]), r[0]) for r in rows])
    conn.execute("INSERT INTO run(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                 (COUNT_KEY, str(len(rows))))
    return len(rows), orphans


def upgrade(path: str | Path) -> dict[str, Any]:
    """Convert a schema-1 or -2 store to the current schema in place: in ONE transaction (an
    interruption leaves the store as it was), then VACUUM to return the space.  It needs about
    ``UPGRADE_ROOM`` (3) times the store's size free on its disk, checked first.  A store of the
    current schema whose earlier compaction failed (pages left free) is compacted.  A store with
    a trial whose rows cannot be read as polarity wrote them (``frames.old_problems``) is refused,
    naming it: its digest would make the damage look valid; ``repair`` removes such trials.  The caller
    makes sure nobody writes meanwhile (``polarity store upgrade`` holds the run's lock).
    Returns what it did: ``from``, ``to``, ``trials``, ``orphans`` (epochs rows of no trial,
    which no frame showed, dropped), ``compacted``, ``bytes_before``, ``bytes_after``."""
    path = Path(path)
    _refuse_links(path)
    with Store(path, readonly=True) as s:  # refuses a newer or foreign database untouched
        version = s.version
        if version in (1, 2):  # a damaged row would be sealed under a digest that matches it
            with s._reading():
                bad = old_problems(s.conn, version, limit=1)
            if bad:
                raise StoreError(f"cannot upgrade {path}: {bad[0][1]}. Nothing was changed; {old_repair_advice(path)}")
    size = _size(path)
    out = {"from": version, "to": SCHEMA_VERSION, "trials": 0, "orphans": 0, "compacted": False,
           "bytes_before": size, "bytes_after": size}
    if version == 0:
        return out
    if version == SCHEMA_VERSION:
        conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free or Path(f"{path}-wal").exists() and Path(f"{path}-wal").stat().st_size:
                _check_room(path, "compacting")
                _compact_or_say(conn, path, f"{path} has schema {SCHEMA_VERSION}")
                out["compacted"] = True
        except sqlite3.Error as e:
            raise StoreError(f"cannot compact {path}: {e} (its results are as they were)") from None
        finally:
            conn.close()
        out["bytes_after"] = _size(path)
        return out
    _check_room(path, "upgrading")
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        with immediate(conn):
            if conn.execute("PRAGMA user_version").fetchone()[0] != version:  # pragma: no cover
                raise StoreError(f"{path} changed while it was being upgraded; nothing was changed")
            if version == 1:
                out["orphans"] = conn.execute(
                    "SELECT count(*) FROM epochs WHERE trial_id NOT IN (SELECT id FROM trials)").fetchone()[0]
                conn.execute(_EPOCHS_DDL.format(name="epochs_v2"))
                with gc_paused():
                    for tid, records in _v1_trials(conn):
                        p = pack_trial(TrialResult(TrialKey("", 0, 0, 0), 0, 0.0, records))
                        conn.execute("INSERT INTO epochs_v2 VALUES (?,?,?,?,?,?,?,?)",
                                     (tid, p.n_epochs, *p.series, p.extra))
            with gc_paused():
                out["trials"], orphans = _digest_all(conn, "epochs_v2" if version == 1 else "epochs")
            out["orphans"] += orphans
            if version == 1:  # last: its pages stay free for the compaction to return
                conn.execute("DROP TABLE epochs")
                conn.execute("ALTER TABLE epochs_v2 RENAME TO epochs")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error as e:
        conn.close()
        raise StoreError(f"cannot upgrade {path}: {e} (the store is left as it was)",
                         readonly=_is_readonly(e)) from None
    try:
        _compact_or_say(conn, path, f"{path} IS upgraded to schema {SCHEMA_VERSION} (the conversion was committed)")
        out["compacted"] = True
    finally:
        conn.close()
    out["bytes_after"] = _size(path)
    return out


def _damage(conn: sqlite3.Connection) -> list[str]:
    """What SQLite finds wrong with the file, one problem a line ([] when whole): ``PRAGMA
    quick_check`` (its pages), then, when those are whole, ``PRAGMA integrity_check`` (every index
    against its table too).  A check SQLite cannot finish is one problem."""
    for pragma in ("quick_check", "integrity_check"):
        try:
            rows = [str(r[0]) for r in conn.execute(f"PRAGMA {pragma}").fetchall()]
        except sqlite3.DatabaseError as e:
            return [f"{e} (PRAGMA {pragma})"]
        lines = [x for r in rows for x in r.splitlines() if x and not x.startswith("*** in database")]
        if lines != ["ok"]:
            return lines
    return []


_IN_INDEX = re.compile(r"\bindex (\S+)$")  # row 3 missing from index X, wrong # of entries in index X, ...
_TREE = re.compile(r"^Tree (\d+) page \d+")  # a b-tree problem, by its root page (SQLite 3.44 on)
_PAGE = re.compile(r"\b[Pp]age (\d+)\b")  # ... by the page it lies on (On tree page 5 cell 2: ..., ... on page 5)


def _index_only(conn: sqlite3.Connection, damage: list[str]) -> bool:
    """Whether every problem of ``_damage`` lies in an index, which ``REINDEX`` rebuilds from the
    tables: an index's entries that do not match its table, or a b-tree problem on an index's
    pages (its root; every page of it where SQLite's ``dbstat`` can list them).  A page that is
    used twice or never is not an index's alone."""
    indexes = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'index'").fetchall())
    roots = set(indexes.values())
    pages = set(roots)
    try:
        pages |= {p for (p,) in conn.execute(
            "SELECT pageno FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE type = 'index')")}
    except sqlite3.Error:  # an SQLite without dbstat, or a tree it cannot walk: the roots only
        pass
    for line in damage:
        named, tree = _IN_INDEX.search(line), _TREE.match(line)
        if named:
            ok = named.group(1) in indexes
        elif tree:
            ok = int(tree.group(1)) in roots
        else:
            on = {int(p) for p in _PAGE.findall(line)}
            ok = bool(on) and on <= pages and "never used" not in line and "reference" not in line
        if not ok:
            return False
    return True


def repair(path: str | Path, grid: Grid | None = None) -> dict[str, Any]:
    """Remove the trials of a store that fail its checks, in one transaction, so that the run's
    command recomputes exactly those trials.  Schema 3 (``integrity.check``): a digest that does
    not match, a lost epochs row, a key recorded twice, a row outside ``grid``; the epochs rows of
    no trial go too and the trial count is set to what is left.  Schemas 1 and 2 (no digests):
    the trials whose rows cannot be read as polarity wrote them (``frames.old_problems``), which
    ``upgrade`` refuses to seal.  The indexes are rebuilt (``REINDEX``).  A file damaged at
    SQLite's level is refused (no row of it can be trusted to be removed alone), unless only its
    indexes are (``_index_only``): they are rebuilt from the tables first, and the file checked
    again.  The caller holds the run's lock.  Returns ``removed`` (the problems, as text),
    ``trials`` (the trials left) and ``reindexed`` (the index problems mended)."""
    path = Path(path)
    _refuse_links(path)
    with Store(path, readonly=True) as s:
        old = 0 < s.version < SCHEMA_VERSION
        version = s.version
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        damage = _damage(conn)
        if damage and not _index_only(conn, damage):
            raise StoreError(
                f"{path} is damaged at SQLite's level ({damage[0]}{' ...' if len(damage) > 1 else ''}), beyond "
                "removing single trials; nothing was changed. Restore it from a copy, or move it away and rerun "
                "the run's command to recompute every trial")
        with immediate(conn):
            if damage:  # in its indexes only: rebuilt from the tables, then the file checked again
                try:
                    conn.execute("REINDEX")
                    still = _damage(conn)
                except sqlite3.DatabaseError as e:
                    if type(e) is not sqlite3.DatabaseError:  # not the file's damage (locked, full, ...)
                        raise
                    still = [str(e)]
                if still:
                    raise StoreError(
                        f"{path} is damaged at SQLite's level ({still[0]}), and rebuilding its indexes does not "
                        "mend it; nothing was changed. Restore it from a copy, or move it away and rerun the run's "
                        "command to recompute every trial")
            if old:
                problems = [Problem(row, "", text) for row, text in old_problems(conn, version)]
            else:
                problems = check(conn, grid)
            ids = [(p.row,) for p in problems if p.row is not None]
            conn.executemany("DELETE FROM epochs WHERE trial_id = ?", ids)
            conn.executemany("DELETE FROM trials WHERE id = ?", ids)
            if not old:  # an older store's are dropped (and counted) by ``upgrade``
                conn.execute("DELETE FROM epochs WHERE trial_id NOT IN (SELECT id FROM trials)")
            conn.execute("REINDEX")
            (left,) = conn.execute("SELECT count(*) FROM trials").fetchone()
            if not old:
                conn.execute("INSERT INTO run(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value = excluded.value", (COUNT_KEY, str(left)))
    except sqlite3.Error as e:
        raise StoreError(f"cannot repair {path}: {e} (nothing was changed)", readonly=_is_readonly(e)) from None
    finally:
        conn.close()
    return {"removed": [str(p) for p in problems], "trials": left, "reindexed": damage}
