"""The results store: one SQLite file per run (``DIR/results.sqlite``, WAL mode).  Its schema is
in ``schema``, the encoding of a trial's series and extras in ``columnar``, the tidy frames in
``frames``, the per-trial checks in ``integrity``; the database is opened, read and written in
``database`` (``Store``), upgraded and repaired in ``maintenance``.  This package re-exports
their public names.  See ``docs/engine.md``.

A finished job's trials are inserted in ONE transaction, one ``trials`` and one ``epochs`` row
per trial, so an interrupted run loses at most the jobs in flight and never holds a partial
trial.  Only the driver process writes; workers encode their trials (``pack_trial``) so the
driver only inserts bytes.

Reading: ``Store.epochs_frame()`` is the tidy export (``frames``); ``Store.trials_frame()`` has
one row per trial.  Schema 3 checks every trial before a frame is built (``integrity``: each
row's digest, its epochs row, the count of committed trials and, when the run's spec is known
(``Store.expect``), its grid); a store that fails is refused with a one-line ``StoreError``
naming the trial, and ``repair`` removes such trials, when the user asks, so that the run's
command recomputes them.  A damaged schema-1 or -2 store is refused the same way where its
damage can be seen (``frames.old_problems``), by ``upgrade`` too, and ``repair`` removes those
trials.

Schema 2 (issue 14) is schema 3 without the digests.  Schema 1 (polarity 0.1 before issue 14)
stored one ``epochs`` row per (trial, epoch) with REAL metrics (NULL for NaN) and the extras as a
JSON object.  Such stores are read and exported as they are (the same frame), never written:
``polarity store upgrade DIR`` (``upgrade``) converts one in place, in one transaction, when the
user asks.

Opening is safe for the data: a database written by a newer polarity (higher ``user_version``)
and a database without polarity's schema (another application's file, whatever its
``user_version``) are refused with a clear error and left untouched.  A read-only open sees every
committed trial or refuses: a WAL database in a read-only directory without its ``-shm`` index
(a killed run, archived or mounted read-only) cannot be read in place, so it is read through a
temporary copy of the database and its WAL.  ``Store.check_writable`` finds a read-only database
before anything is computed.
"""
from __future__ import annotations

from .columnar import PackedTrial, decode_extras, decode_series, encode_extras, encode_series, pack_trial
from .database import Store, StoreError, epochs_frame, open_run_store, trials_frame
from .integrity import COUNT_KEY, EPOCH_FIELDS, TRIAL_FIELDS, Grid, Problem, Text, check, trial_digest
from .maintenance import UPGRADE_ROOM, repair, upgrade
from .schema import _DDL, _DDL_V1, EPOCH_COLUMNS, FILENAME, METRICS, PAGE_SIZE, SCHEMA_VERSION, TRIAL_COLUMNS

__all__ = ["SCHEMA_VERSION", "FILENAME", "PAGE_SIZE", "METRICS", "EPOCH_COLUMNS", "TRIAL_COLUMNS",
           "StoreError", "Store", "PackedTrial", "pack_trial", "encode_series", "decode_series",
           "encode_extras", "decode_extras", "upgrade", "repair", "open_run_store", "epochs_frame", "trials_frame",
           "Grid", "UPGRADE_ROOM"]
