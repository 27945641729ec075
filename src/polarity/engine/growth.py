"""A run's spec over its life: growing its grid, upgrading its spec format, and the check that
``spec.json`` and the database's own record of its spec (``run.hparams``, ``run.spec_hash``)
describe the same run.

A run is written in two places: ``spec.json`` (first) and the database's record (then).  Growing
a run (a requested grid that holds the stored one) rewrites both, keeping the earlier grids,
hashes and commands in their ``grown`` lists; ``polarity store upgrade`` rewrites a spec of an
older format under the current names (``upgraded_from``).  A process stopped between the two
writes leaves ``spec.json`` ahead of the database: readers accept it (every row fits) and the next
run brings the database's record up to date.  Everything else that differs is refused, with
what to do, before anything is written.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from .. import experiments
from ..files import atomic_write
from ..store import FILENAME, Store, StoreError
from .rundir import SPEC_FILE, RunDirError, polarity_version
from .spec import (SPEC_FORMAT, GridChange, Spec, current_hparams, grid_change, hash_of, spec_diff,
                   spec_format)


def recorded_spec(meta: Mapping[str, Any], db: Path) -> dict[str, Any]:
    """The database's record of its spec, shaped like ``spec.json``, under the current names; a
    record whose ``hparams`` is not an object is refused (the database was damaged or edited)."""
    hparams = meta.get("hparams")
    if not isinstance(hparams, dict):
        raise RunDirError(f"{db}: its run metadata 'hparams' is {type(hparams).__name__} {json.dumps(hparams)[:40]}, "
                          "not an object; the database is damaged or was edited. Nothing was written; restore it "
                          "from a copy")
    if meta.get("experiment") in experiments.names():
        hparams = current_hparams(experiments.get(meta["experiment"]), hparams, spec_format(meta))
    return {"experiment": meta.get("experiment"), "hash": meta.get("spec_hash"), "hparams": hparams}


def _agree(data: Mapping[str, Any], meta: Mapping[str, Any]) -> bool:
    """spec.json (``data``) and the database's record (``meta``) say the same spec."""
    return (meta.get("spec_hash"), meta.get("experiment"), meta.get("hparams")) == (
        data.get("hash"), data.get("experiment"), data.get("hparams"))


def _differences(data: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    diff = spec_diff(data, meta) or [f"hash {data.get('hash')} vs {meta.get('spec_hash')}"]
    return f"differences (spec.json vs database): {'; '.join(diff[:8])}{' ...' if len(diff) > 8 else ''}"


def check_intact(out: Path, data: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Where ``spec.json`` (``data``) and the database's record of its spec (``meta``) differ,
    refuse the one whose hparams no longer hash to the hash it records (a flipped bit, an edit),
    naming it and saying that the other is intact.  Both intact (another run's spec.json, say) is
    left to the caller.  Reads only what it is given."""
    if not meta or _agree(data, meta):
        return
    spec_file, db = out / SPEC_FILE, out / FILENAME
    h_spec, h_db = (str(data.get("hash")), str(meta.get("spec_hash")))
    own_spec = hash_of(data.get("experiment"), data.get("hparams"))
    own_db = hash_of(meta.get("experiment"), meta.get("hparams"))
    if own_spec == h_spec and own_db == h_db:
        return
    if own_spec == h_spec:
        raise RunDirError(
            f"{db}'s record of its spec (its run metadata) was damaged or edited: its hparams hash to "
            f"{own_db[:10]}, not to the {h_db[:10]} it records; {spec_file} is intact (its hparams hash to its "
            f"recorded {h_spec[:10]}{', the hash the database records too' if h_spec == h_db else ''}); "
            f"{_differences(data, meta)}. Nothing was written; restore the database from a copy")
    if own_db == h_db:
        raise RunDirError(
            f"{spec_file} was damaged or edited: its hparams hash to {own_spec[:10]}, not to the {h_spec[:10]} it "
            f"records; {db}'s record of its spec is intact (its hparams hash to its recorded {h_db[:10]}); "
            f"{_differences(data, meta)}. Nothing was written; restore the run's own spec.json")
    raise RunDirError(
        f"{spec_file} and {db}'s record of its spec were both damaged or edited: neither's hparams hash to the "
        f"hash it records ({own_spec[:10]} vs {h_spec[:10]}, {own_db[:10]} vs {h_db[:10]}); "
        f"{_differences(data, meta)}. Nothing was written; restore the run from a copy")


def check_agrees(out: Path, data: Mapping[str, Any], meta: Mapping[str, Any], spec: Spec | None = None) -> None:
    """Refuse to read results under a spec.json that is not the spec they were computed for
    (``meta``: the database's own record, written with its first row and updated when the run
    grows).  A spec.json whose grid holds the database's (``spec``: it, parsed) is a run whose
    growth was interrupted between writing spec.json and the database: every row fits it (so is
    a spec-format upgrade stopped there: the same spec under its new names).  Either record
    damaged or edited is refused naming it (``check_intact``)."""
    if not meta:
        return
    recorded = recorded_spec(meta, out / FILENAME)
    if not _agree(data, meta):
        check_intact(out, data, meta)
        if spec is not None and grid_change(recorded, spec).kind in ("same", "grow"):
            return
        raise RunDirError(
            f"{out / SPEC_FILE} (spec {str(data.get('hash'))[:10]}) does not describe the results in "
            f"{out / FILENAME} (computed for spec {str(meta.get('spec_hash'))[:10]}); {_differences(data, meta)}. "
            "Nothing was written; restore the run's own spec.json")


def check_change(out: Path, stored: Mapping[str, Any], spec: Spec) -> GridChange:
    """How the run directory's ``spec.json`` (``stored``) relates to the requested ``spec``: the
    same, or ``grow`` (its grid is part of ``spec``'s).  A smaller grid, a grid beside the stored
    one, any other changed hyper-parameter and a spec of an older format are refused, with what
    to do; a spec.json that no longer matches its own hash is refused as damaged or edited.  Touches
    nothing."""
    own = hash_of(stored.get("experiment"), stored.get("hparams"))  # as stored, before any rename
    fmt = spec_format(stored)
    exp = experiments.get(spec.experiment)
    old_names = [k for k in stored.get("hparams", {}) if k in exp.renamed] if fmt < SPEC_FORMAT else []
    if old_names and stored.get("experiment") == spec.experiment:
        stored = {**stored, "hparams": current_hparams(exp, stored["hparams"], fmt)}
    change = grid_change(stored, spec)
    if old_names and change.kind in ("same", "grow"):
        renames = ", ".join(f"{k} (now {exp.renamed[k]})" for k in old_names)
        raise RunDirError(
            f"--out {out} was made with spec format {fmt} (its hyper-parameters {renames}); polarity now "
            f"writes spec format {SPEC_FORMAT}. Its results are still reported and exported as they are "
            f"(`polarity report {out}`, `polarity export {out}`); to resume or grow it, run `polarity store "
            f"upgrade {out}` once (it rewrites the run's spec under the new names; no trial changes), then "
            "rerun. Nothing was changed")
    if change.kind in ("same", "grow"):
        return change
    if own != stored.get("hash"):
        diff = spec_diff(stored, spec.to_json()) or [f"hash {stored.get('hash')} vs {spec.hash}"]
        raise RunDirError(
            f"{out / SPEC_FILE} was damaged or edited: its hparams hash to {own[:10]}, not to the "
            f"{str(stored.get('hash'))[:10]} it records; differences (stored vs requested): {'; '.join(diff[:8])}"
            f"{' ...' if len(diff) > 8 else ''}. Nothing was changed; restore the run's own spec.json")
    if change.kind == "other":
        diff = spec_diff(stored, spec.to_json()) or [f"hash {stored.get('hash')} vs {spec.hash}"]
        grows = ", ".join(exp.grid_names()) if change.grid else ""
        raise RunDirError(
            f"--out {out} holds a run of a different spec ({stored.get('experiment')}, hash "
            f"{str(stored.get('hash'))[:10]}); differences (stored vs requested): {'; '.join(diff[:8])}"
            f"{' ...' if len(diff) > 8 else ''}. Nothing was changed; use another --out"
            + (f" (a run grows only along {grows}, every other field as stored)" if grows else ""))
    diff = "; ".join(change.grid)
    if change.kind == "shrink":
        raise RunDirError(
            f"--out {out} holds a larger grid than requested ({diff}, stored vs requested), which includes "
            f"every requested trial: `polarity report {out}` reports them all; to resume or grow that run, "
            f"request its grid or a larger one (its command is in {out / SPEC_FILE}); for a separate run of "
            "the smaller grid, use another --out. Nothing was changed")
    raise RunDirError(
        f"--out {out} holds a grid that neither holds nor is part of the requested one ({diff}, stored vs "
        f"requested); a run grows into a grid that holds its own: request "
        f"{' '.join('--set ' + u for u in change.union)} to grow it, or use another --out. Nothing was changed")


def write_spec(out: Path, spec: Spec, command: Sequence[str] | None,
               grown_from: Mapping[str, Any] | None = None) -> None:
    """Write ``spec.json``; ``grown_from``: the spec.json a grown run replaces (its hash, grid and
    command are kept in ``grown``, oldest first)."""
    data = spec.to_json()
    data["polarity_version"] = polarity_version()
    if command:
        data["command"] = list(command)
    if grown_from is not None:
        names = experiments.get(spec.experiment).grid_names()
        old = grown_from.get("hparams") or {}
        data["grown"] = [*grown_from.get("grown", []), {
            "hash": grown_from.get("hash"), "grid": {k: old.get(k) for k in names if k in old},
            "command": grown_from.get("command"), "until": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    atomic_write(out / SPEC_FILE, json.dumps(data, indent=2, sort_keys=True) + "\n")


def follow_spec(store: Store, meta: Mapping[str, Any], spec: Spec) -> None:
    """Bring the database's record (``meta``) up to ``spec``, which spec.json (written first) holds:
    the run grew, now or in an earlier run that stopped between the two writes (or a spec-format
    upgrade did).  The earlier hash is kept in the record's ``grown`` list.  A record of another
    spec is refused, the store unchanged."""
    if grid_change(recorded_spec(meta, store.path), spec).kind not in ("same", "grow"):
        raise RunDirError(f"{store.path} belongs to spec {meta.get('spec_hash')!s:.10}, not {spec.hash:.10}; "
                          "nothing was changed")
    try:
        store.set_meta({"spec_hash": spec.hash, "hparams": spec.hparams, "preset": spec.preset,
                        "format": SPEC_FORMAT, "grown": [*(meta.get("grown") or []), {
                            "hash": meta.get("spec_hash"), "until": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]})
    except StoreError as e:
        raise RunDirError(str(e)) from None


def upgrade_spec(out: Path, spec: Spec, data: Mapping[str, Any]) -> list[int] | None:
    """Rewrite a run's spec of an older format (``data``: its spec.json; ``spec``: it, read under
    the current names) in the current one: ``spec.json`` (its old hash and command kept under
    ``upgraded_from``), then the database's record; no trial is touched.  Returns ``[from, to]``
    formats, or None when the spec was current.  The caller holds the run's lock."""
    fmt = spec_format(data)
    if fmt >= SPEC_FORMAT:
        return None
    new = {**spec.to_json(), "polarity_version": polarity_version(),
           "upgraded_from": {"format": fmt, "hash": data.get("hash"), "command": data.get("command")}}
    atomic_write(out / SPEC_FILE, json.dumps(new, indent=2, sort_keys=True) + "\n")
    with Store(out / FILENAME) as s:
        if s.meta():
            s.set_meta({"spec_hash": spec.hash, "hparams": spec.hparams, "format": SPEC_FORMAT})
    return [fmt, SPEC_FORMAT]
