"""The results store's SQLite schema (see ``docs/engine.md``): the tables of schema 3, which
polarity writes, and of schemas 1 and 2, which it reads and upgrades; the columns of the frames.

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION`` = 3)::

    run      (key TEXT PRIMARY KEY, value TEXT)          -- run metadata as JSON values:
             -- spec_hash, experiment, preset, hparams, created, polarity_version, elapsed_s,
             -- trial_count (the trial rows committed, kept in each commit's transaction)
    trials   (id INTEGER PRIMARY KEY,
              experiment TEXT, condition TEXT, n INTEGER, width INTEGER, trial INTEGER,
              seed INTEGER,        -- trial_seed(hp.seed, trial): shared by the trial's conditions
              status TEXT,         -- 'complete' (only finished jobs are written)
              wall_s REAL,         -- compute seconds attributed to this trial by its job
              hardware TEXT,       -- JSON: host, platform, cpu, threads, device, gpu, torch, python
              version TEXT,        -- polarity version that computed the trial
              hparams TEXT,        -- JSON: the run's full hparams
              extra TEXT,          -- JSON: trial-level data from the experiment
              job TEXT,            -- key of the job that computed it
              finished_at TEXT,    -- UTC ISO-8601 time of the commit
              digest TEXT,         -- of the row and its epochs row (``integrity``), checked on read
              UNIQUE (experiment, condition, n, width, trial))
    epochs   (trial_id INTEGER PRIMARY KEY REFERENCES trials(id),  -- ONE row per trial
              n_epochs INTEGER,    -- how many epoch records the trial has
              epoch BLOB,          -- its series, sorted by epoch (1-based): one array each
              train_loss BLOB, train_acc BLOB, val_loss BLOB, val_acc BLOB,
              extra BLOB)          -- its per-epoch extras, one array per key (NULL: none)

Schema 2 (issue 14 to issue 21) is schema 3 without ``digest`` and ``trial_count``.  Schema 1
(polarity 0.1 before issue 14) stored one ``epochs`` row per (trial, epoch) with REAL metrics
(NULL for NaN) and the extras as a JSON object.
"""
from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 3
FILENAME = "results.sqlite"
PAGE_SIZE = 16384  # bytes, of a new database
METRICS = ["train_loss", "train_acc", "val_loss", "val_acc"]
EPOCH_COLUMNS = ["experiment", "condition", "n", "width", "trial", "epoch", *METRICS]
TRIAL_COLUMNS = ["experiment", "condition", "n", "width", "trial", "seed", "status", "wall_s",
                 "hardware", "version", "job", "finished_at", "extra"]

_RUN_TRIALS_DDL_V2 = """
CREATE TABLE IF NOT EXISTS run (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    experiment TEXT NOT NULL,
    condition TEXT NOT NULL,
    n INTEGER NOT NULL,
    width INTEGER NOT NULL,
    trial INTEGER NOT NULL,
    seed INTEGER,
    status TEXT NOT NULL,
    wall_s REAL,
    hardware TEXT,
    version TEXT,
    hparams TEXT,
    extra TEXT,
    job TEXT,
    finished_at TEXT,{digest}
    UNIQUE (experiment, condition, n, width, trial)
);
"""
_RUN_TRIALS_DDL = _RUN_TRIALS_DDL_V2.format(digest="\n    digest TEXT,")
_RUN_TRIALS_DDL_V2 = _RUN_TRIALS_DDL_V2.format(digest="")
_EPOCHS_DDL = """
CREATE TABLE IF NOT EXISTS {name} (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id) ON DELETE CASCADE,
    n_epochs INTEGER NOT NULL,
    epoch BLOB NOT NULL,
    train_loss BLOB NOT NULL,
    train_acc BLOB NOT NULL,
    val_loss BLOB NOT NULL,
    val_acc BLOB NOT NULL,
    extra BLOB
);
"""
_DDL = _RUN_TRIALS_DDL + _EPOCHS_DDL.format(name="epochs")
_DDL_V2 = _RUN_TRIALS_DDL_V2 + _EPOCHS_DDL.format(name="epochs")  # read (and upgraded), never written
# schema 1: one epochs row per (trial, epoch); read (and upgraded), never written
_DDL_V1 = _RUN_TRIALS_DDL_V2 + """
CREATE TABLE IF NOT EXISTS epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    train_loss REAL,
    train_acc REAL,
    val_loss REAL,
    val_acc REAL,
    extra TEXT,
    PRIMARY KEY (trial_id, epoch)
);
"""


def _reference_schema(ddl: str) -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(ddl)
    out = _tables(conn)
    conn.close()
    return out


def _tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Table name -> column names (SQLite's own tables left out)."""
    names = [str(r[0]) for r in conn.execute(  # str: a damaged file may hold any type there
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {t: [r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')] for t in names}


_REFERENCE = {1: _reference_schema(_DDL_V1), 2: _reference_schema(_DDL_V2), SCHEMA_VERSION: _reference_schema(_DDL)}
