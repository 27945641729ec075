"""Store surgery the engine tests share (not a test module): trials removed as if their jobs had
never been committed, the store's trial count kept (schema 3 checks it on every read)."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def drop_trials(db: Path, where: str) -> int:
    """Delete the trials matching ``where`` (SQL on the trials table) and their epochs rows;
    returns how many were removed."""
    c = sqlite3.connect(db)
    try:
        ids = [r[0] for r in c.execute(f"SELECT id FROM trials WHERE {where}")]
        c.executemany("DELETE FROM epochs WHERE trial_id = ?", [(i,) for i in ids])
        c.executemany("DELETE FROM trials WHERE id = ?", [(i,) for i in ids])
        if c.execute("PRAGMA user_version").fetchone()[0] >= 3:
            c.execute("UPDATE run SET value = CAST(CAST(value AS INTEGER) - ? AS TEXT) WHERE key = 'trial_count'",
                      (len(ids),))
        c.commit()
        return len(ids)
    finally:
        c.close()
