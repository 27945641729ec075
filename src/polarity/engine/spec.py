"""Run specs: an experiment name plus its frozen hyper-parameter dataclass.

* ``resolve(experiment, preset, sets, conditions, fields)`` builds the hparams from a named preset
  and typed overrides (``--set field=value`` parsed by the dataclass field's type);
* ``spec_hash(experiment, hp)`` is the SHA-256 of the canonical JSON of ``{experiment, hparams}``
  (sorted keys, no whitespace), in the spirit of OpenLTH: two runs with the same hash compute the
  same trials;
* ``identity_hash`` is the same hash over the hyper-parameters outside the grid
  (``Experiment.grid_names``: conditions, trials, sample sizes, ...): runs of one identity differ
  only in which trials they list, so a run grows into a larger grid (``grid_change``);
* ``default_run_dir`` names a run ``runs/<experiment>-<preset>-<identity[:10]>``, the same
  directory however far the run has grown.

Value syntax for ``--set`` (and for the reproduction command written into reports):
``int``/``float``/``str`` as usual; ``bool``: true/false/1/0/yes/no/on/off; tuples: comma
separated items (``ns=8,20,32``; an empty value is the empty tuple), integer items may be
inclusive ranges ``lo..hi`` (``widths=2..29,32``; at most ``MAX_GRID_TRIALS`` items, counted
before they are built); ``none`` for an optional field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..experiments.base import (MAX_GRID_TRIALS, Experiment, ExperimentError, field_types, hparams_dict,
                                optional_inner)
from ..experiments.hparams import field_meta


class SpecError(ExperimentError):
    """A bad override or an unreadable spec (a user error)."""


def _unknown(what: str, name: str, known: Sequence[str], context: str = "") -> str:
    from ..cli_errors import unknown

    return unknown(what, name, known, context=context)


def _suggest(name: str, known: Sequence[str]) -> str:
    from ..cli_errors import did_you_mean

    close = did_you_mean(name, known)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


@dataclass(frozen=True)
class Spec:
    experiment: str
    preset: str
    hp: Any

    @property
    def hparams(self) -> dict[str, Any]:
        return hparams_dict(self.hp)

    @property
    def hash(self) -> str:
        return spec_hash(self.experiment, self.hp)

    @property
    def identity(self) -> str:
        return identity_hash(self.experiment, self.hparams)

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "preset": self.preset, "format": SPEC_FORMAT, "hash": self.hash,
                "identity": self.identity, "hparams": self.hparams}


# the spec format polarity writes (``spec.json``'s ``format``; none: 1).  Format 2 gave every
# experiment the shared fields of ``CommonHparams`` under one name each (``Experiment.renamed``:
# toy ns/batch/val_n, xor5d n_val): a run made in format 1 is read under the new names, and
# ``polarity store upgrade DIR`` rewrites its spec so that it can resume or grow
SPEC_FORMAT = 2


def spec_format(data: Mapping[str, Any]) -> int:
    """The format of a stored spec (``spec.json`` or the database's record)."""
    f = data.get("format", 1)
    return f if isinstance(f, int) and not isinstance(f, bool) else 1


def current_hparams(exp: Experiment, hparams: Mapping[str, Any], fmt: int) -> dict[str, Any]:
    """Stored hparams of format ``fmt`` under the current names."""
    if fmt >= SPEC_FORMAT:
        return dict(hparams)
    return {exp.renamed.get(k, k): v for k, v in hparams.items()}


def format1_hash(spec: "Spec") -> str:
    """The hash ``spec`` had in format 1 (its renamed fields under their old names): what named
    its run directory then."""
    from .. import experiments

    back = {new: old for old, new in experiments.get(spec.experiment).renamed.items()}
    payload = canonical_json({"experiment": spec.experiment,
                              "hparams": {back.get(k, k): v for k, v in spec.hparams.items()}})
    return hashlib.sha256(payload.encode()).hexdigest()


def renamed_error(exp: Experiment, name: str, where: str) -> SpecError | None:
    """The refusal of a field name that format 2 renamed (None if ``name`` was not renamed)."""
    new = exp.renamed.get(name)
    if new is None:
        return None
    return SpecError(f"{where}: {exp.name}'s {name!r} is {new!r} since spec format {SPEC_FORMAT} (one name per "
                     f"idea across experiments); give {new} instead. A run directory made before is still "
                     "reported and exported as it is; `polarity store upgrade DIR` lets it resume or grow")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def hash_of(experiment: Any, hparams: Any) -> str:
    """The hash of ``{experiment, hparams}`` as JSON values (a spec's, its identity's, or a stored
    record's as it is stored, damaged or not)."""
    return hashlib.sha256(canonical_json({"experiment": experiment, "hparams": hparams}).encode()).hexdigest()


def spec_hash(experiment: str, hp: Any) -> str:
    return hash_of(experiment, hparams_dict(hp))


def _grid_names(experiment: str) -> tuple[str, ...]:
    from .. import experiments

    return experiments.get(experiment).grid_names()


def identity_hash(experiment: str, hparams: Mapping[str, Any]) -> str:
    """The hash of ``{experiment, hparams}`` without the grid's fields: what a run is, whatever
    trials it lists."""
    grid = set(_grid_names(experiment))
    return hash_of(experiment, {k: v for k, v in hparams.items() if k not in grid})


def default_run_dir(spec: Spec, root: str | Path = "runs") -> Path:
    """``root/<experiment>-<preset>-<identity[:10]>``; a run directory named by its full spec
    hash (before runs could grow, in spec format 1 or 2) is found too."""
    for h in dict.fromkeys((spec.hash, format1_hash(spec))):
        legacy = Path(root) / f"{spec.experiment}-{spec.preset}-{h[:10]}"
        if legacy.is_dir():
            return legacy
    return Path(root) / f"{spec.experiment}-{spec.preset}-{spec.identity[:10]}"


@dataclass(frozen=True)
class GridChange:
    """How a requested spec relates to a stored one (``grid_change``).  ``kind``: ``same``;
    ``grow`` (the stored grid's trials are all in the requested one: the run is extended);
    ``shrink`` (the requested trials are all in the stored grid, which has more); ``apart``
    (neither grid holds the other); ``other`` (another experiment or a changed hyper-parameter
    outside the grid).  ``grid`` and ``fixed``: the differences (stored vs requested) in the
    grid's fields and in the others; ``added``: the trials the requested grid adds; ``union``:
    the ``field=value`` overrides of a grid holding both (for ``apart``)."""

    kind: str
    grid: tuple[str, ...] = ()
    fixed: tuple[str, ...] = ()
    added: int = 0
    union: tuple[str, ...] = ()


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], keys) -> tuple[str, ...]:
    return tuple(f"{k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in sorted(keys)
                 if a.get(k) != b.get(k))


def grid_change(stored: Mapping[str, Any], spec: Spec) -> GridChange:
    """Compare a stored spec (``spec.json``'s experiment, hash and hparams) with ``spec``: the
    same run, the same run with a larger or smaller grid, or another spec (see ``GridChange``).
    Grids are compared as sets of trial keys, so a reordered list is the same grid."""
    from .. import experiments

    if stored.get("experiment") != spec.experiment:
        return GridChange("other", fixed=tuple(spec_diff(stored, spec.to_json())[:1]))
    exp = experiments.get(spec.experiment)
    old, new = dict(stored.get("hparams") or {}), spec.hparams
    names = set(exp.grid_names())
    fixed = _diff(old, new, (set(old) | set(new)) - names)
    grid = _diff(old, new, (set(old) | set(new)) & names)
    if fixed:
        return GridChange("other", grid, fixed)
    if stored.get("hash") == spec.hash and not grid:
        return GridChange("same")
    try:
        a = set(exp.trials(hparams_from_dict(exp.Hparams, old)))
    except (ValueError, TypeError):  # a stored grid that cannot be built (a hand-edited spec.json)
        return GridChange("other", grid, fixed or ("its grid cannot be built",))
    b = set(exp.trials(spec.hp))
    if a == b and not grid:
        return GridChange("same")
    if a <= b:
        return GridChange("grow", grid, added=len(b - a))
    if b <= a:
        return GridChange("shrink", grid)
    union = []
    for k in sorted(names & (set(old) | set(new))):
        x, y = old.get(k), new.get(k)
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list):
            union.append(f"{k}={format_value(x + [v for v in y if v not in x])}")
        elif isinstance(x, int) and isinstance(y, int):
            union.append(f"{k}={max(x, y)}")
    return GridChange("apart", grid, union=tuple(union))


# ----------------------------------------------------------------------------- parsing values

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f"}


def _parse_scalar(tp: Any, text: str, name: str) -> Any:
    s = text.strip()
    if tp is bool:
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise SpecError(f"--set {name}={text!r}: expected a boolean (true/false)")
    if tp is int:
        try:
            return int(s)
        except ValueError:
            raise SpecError(f"--set {name}={text!r}: expected an integer") from None
    if tp is float:
        try:
            return float(s)
        except ValueError:
            raise SpecError(f"--set {name}={text!r}: expected a number") from None
    if tp is str or tp is Any:
        return text
    raise SpecError(f"--set {name}: field type {tp!r} is not supported on the command line")


def parse_value(tp: Any, text: str, name: str = "value") -> Any:
    """Parse ``text`` as a value of type ``tp`` (see the module docstring for the syntax)."""
    optional, tp = optional_inner(tp)
    if optional and text.strip().lower() in ("none", "null"):
        return None
    origin = typing.get_origin(tp)
    if origin in (tuple, list) or tp in (tuple, list):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
        elif args and all(a == args[0] for a in args):
            item = args[0]
        else:
            item = str
        if text.strip() == "":
            out: list[Any] = []
        else:
            out = []
            for part in text.split(","):
                part = part.strip()
                if item is int and ".." in part:
                    lo, _, hi = part.partition("..")
                    a, b = _parse_scalar(int, lo, name), _parse_scalar(int, hi, name)
                    if b < a:
                        raise SpecError(f"--set {name}={text!r}: empty range {part!r}")
                    if len(out) + (b - a + 1) > MAX_GRID_TRIALS:  # refuse before allocating
                        raise SpecError(f"--set {name}={text!r}: more than {MAX_GRID_TRIALS:,} items")
                    out.extend(range(a, b + 1))
                else:
                    try:
                        out.append(_parse_scalar(item, part, name))
                    except SpecError as e:
                        raise SpecError(f"--set {name}={text!r}: item {part!r}: "
                                        f"{str(e).split(': ', 1)[-1]}") from None
        if args and not (len(args) == 2 and args[1] is Ellipsis) and len(args) != len(out):
            raise SpecError(f"--set {name}={text!r}: expected {len(args)} comma-separated items")
        return tuple(out) if (origin is tuple or tp is tuple) else list(out)
    return _parse_scalar(tp, text, name)


def format_value(value: Any) -> str:
    """Inverse of ``parse_value`` for the reproduction command."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v) for v in value)
    return str(value)


def coerce(tp: Any, value: Any, name: str) -> Any:
    """Turn a JSON value (lists for tuples) back into the field's Python type."""
    optional, inner = optional_inner(tp)
    if value is None:
        return None
    origin = typing.get_origin(inner)
    if origin is tuple or inner is tuple:
        args = typing.get_args(inner)
        item = args[0] if args else Any
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"hparam {name}: expected a list, got {value!r}")
        return tuple(coerce(item, v, name) for v in value)
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def hparams_from_dict(cls: type, data: Mapping[str, Any], *, strict: bool = True) -> Any:
    """Rebuild a Hparams instance from ``hparams_dict`` output (e.g. a stored spec.json)."""
    types_ = field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown and strict:
        raise SpecError(f"unknown hparams {unknown} for {cls.__name__}; known: {', '.join(types_)}")
    kwargs = {k: coerce(types_[k], v, k) for k, v in data.items() if k in types_}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise SpecError(f"cannot build {cls.__name__} from stored hparams: {e}") from None


# ----------------------------------------------------------------------------- resolution

def default_preset(exp: Experiment) -> str:
    presets = list(exp.presets)
    if not presets:
        raise SpecError(f"experiment {exp.name!r} defines no presets")
    return "quick" if "quick" in exp.presets else presets[0]


def apply_sets(exp: Experiment, hp: Any, sets: Sequence[str]) -> Any:
    """Apply ``field=value`` overrides (typed by the Hparams field); a field set twice is refused
    (which of the two was meant is the user's to say, not the order's)."""
    types_ = field_types(type(hp))
    changes: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in sets:
        name, eq, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name:
            raise SpecError(f"--set {item!r}: expected field=value")
        if name not in types_:
            raise (renamed_error(exp, name, f"--set {item!r}")
                   or SpecError(f"--set {item!r}: experiment {exp.name!r} has no hparam {name!r}; "
                                f"{_suggest(name, list(types_))}known: {', '.join(types_)}"))
        if name in given:
            raise SpecError(f"--set {name} is given twice ({given[name]!r} and {item!r}); give each field once")
        given[name] = item
        changes[name] = parse_value(types_[name], text, name)
    return dataclasses.replace(hp, **changes) if changes else hp


def resolve(exp: Experiment, preset: str | None = None, sets: Sequence[str] = (),
            conditions: str | Sequence[str] | None = None,
            fields: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> Spec:
    """Preset + a config file's hparams (``config``: field -> TOML value) + ``--set`` overrides +
    ``--conditions`` + the experiment's own flags, validated.  The hash depends on the resulting
    hparams only, so a config file and the equivalent ``--set`` flags give the same spec."""
    preset = preset or default_preset(exp)
    if preset not in exp.presets:
        raise SpecError(_unknown("preset", preset, list(exp.presets), f"for experiment {exp.name!r}"))
    hp = exp.presets[preset]
    if config:
        hp = apply_config(exp, hp, config)
    hp = apply_sets(exp, hp, sets)
    types_ = field_types(type(hp))
    changes: dict[str, Any] = {}
    set_names = {s.partition("=")[0].strip().replace("-", "_") for s in sets}
    for name, value in (fields or {}).items():
        if value is None:
            continue
        flag = f"--{name.replace('_', '-')}"
        if name not in types_:
            raise SpecError(f"experiment {exp.name!r} has no hparam {name!r} (flag {flag})")
        if name in set_names:
            raise SpecError(f"{name} is given twice ({flag} and --set {name}=...); give it once")
        changes[name] = parse_value(types_[name], value, name) if isinstance(value, str) else value
    if conditions is not None:
        if isinstance(conditions, str):
            conds = tuple(c.strip() for c in conditions.split(",") if c.strip())
        else:
            conds = tuple(conditions)
        if not conds:
            raise SpecError("--conditions: give at least one condition")
        changes["conditions"] = conds
    if changes:
        hp = dataclasses.replace(hp, **changes)
    given = set(config or ()) | set(changes) | {n for n in set_names if n}
    hp = exp.fit_to_data(hp, frozenset(given))  # what the user left to the data (Experiment.fit_to_data)
    bad = [c for c in getattr(hp, "conditions", ()) if isinstance(c, str) and not exp.is_condition(c)]
    if bad:
        raise SpecError(_unknown("condition", bad[0], list(exp.conditions), f"for experiment {exp.name!r}"))
    exp.validate(hp)
    return Spec(exp.name, preset, hp)


def overrides(exp: Experiment, preset: str, hp: Any) -> list[str]:
    """The ``field=value`` overrides that turn ``preset`` into ``hp`` (for reproduction)."""
    base = hparams_dict(exp.presets[preset]) if preset in exp.presets else {}
    cur = hparams_dict(hp)
    return [f"{k}={format_value(getattr(hp, k))}" for k in cur if base.get(k, object()) != cur[k]]


def spec_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between two spec.json-like dicts."""
    out = []
    if a.get("experiment") != b.get("experiment"):
        out.append(f"experiment {a.get('experiment')!r} vs {b.get('experiment')!r}")
    ha, hb = a.get("hparams", {}), b.get("hparams", {})
    for k in sorted(set(ha) | set(hb)):
        if ha.get(k) != hb.get(k):
            out.append(f"{k}: {ha.get(k, '<absent>')!r} vs {hb.get(k, '<absent>')!r}")
    return out


# ----------------------------------------------------------------------------- config files

def apply_config(exp: Experiment, hp: Any, values: Mapping[str, Any]) -> Any:
    """Apply a config file's ``[hparams]`` table (TOML values: arrays for tuples, the string
    ``"none"`` for an unset optional field), typed by the Hparams fields as ``--set`` is."""
    types_ = field_types(type(hp))
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types_:
            raise (renamed_error(exp, name, "the config's [hparams]")
                   or SpecError(_unknown("hparam", name, list(types_), f"in the config's [hparams] for {exp.name!r}")))
        tp = types_[name]
        if isinstance(value, str):  # "none" for an optional field, or any value in --set's syntax
            changes[name] = parse_value(tp, value, name)
        else:  # TOML's own types: the checks of validate() follow
            changes[name] = coerce(tp, value, name)
    return dataclasses.replace(hp, **changes) if changes else hp


def read_config(path: str | Path) -> dict[str, Any]:
    """A study config (``polarity show --toml`` writes one): ``experiment``, ``preset`` and an
    ``[hparams]`` table.  Read with the standard library's ``tomllib`` (Python >= 3.11) or the
    ``tomli`` package on 3.10."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise SpecError("--config needs Python >= 3.11 (tomllib) or the 'tomli' package "
                            "(pip install tomli) on Python 3.10") from None
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError(f"--config {p}: cannot read it: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"--config {p}: not valid TOML: {e}") from None
    known = ("experiment", "preset", "hparams")
    for k in data:
        if k not in known:
            raise SpecError(f"--config {p}: " + _unknown("key", k, list(known)))
    if not isinstance(data.get("experiment"), str):
        raise SpecError(f"--config {p}: needs experiment = \"NAME\"")
    if "preset" in data and not isinstance(data["preset"], str):
        raise SpecError(f"--config {p}: preset must be a string")
    if not isinstance(data.get("hparams", {}), dict):
        raise SpecError(f"--config {p}: [hparams] must be a table")
    return data


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (tuples as arrays, ``None`` as the string ``"none"``)."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):  # a TOML basic string: JSON's escapes, plus DEL, which TOML wants escaped
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise SpecError(f"cannot write {value!r} ({type(value).__name__}) to a TOML config")


def to_toml(spec: Spec, help_: Mapping[str, str] | None = None, header: Sequence[str] = ()) -> str:
    """The spec as a config file that ``polarity run --config FILE`` reads back to the same hash:
    every hyper-parameter, each with its help as a comment."""
    lines = [f"# {h}" if h else "#" for h in header]
    lines += [f"experiment = {toml_value(spec.experiment)}", f"preset = {toml_value(spec.preset)}", "",
              "[hparams]"]
    for name in (f.name for f in dataclasses.fields(spec.hp)):
        h = (help_ or {}).get(name)
        if h:
            lines.append(f"# {' '.join(h.split())}")
        lines.append(f"{name} = {toml_value(getattr(spec.hp, name))}")
    return "\n".join(lines) + "\n"


def _comments(cls: type, fields: Mapping[str, Any]) -> dict[str, str]:
    """The comment on each field's line in ``cls``'s own source, else the comment block right
    above it."""
    import inspect
    import io
    import tokenize

    out: dict[str, str] = {}
    found: set[str] = set()
    try:
        src = inspect.getsource(cls)
        toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    except (OSError, TypeError, tokenize.TokenError, IndentationError):
        toks, src = [], ""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for t in toks:
        if t.type == tokenize.COMMENT:
            comments[t.start[0]] = t.string.lstrip("#").strip()
        elif t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENDMARKER):
            code_lines.add(t.start[0])
    src_lines = src.splitlines()
    for i, line in enumerate(src_lines, 1):
        name = line.strip().split(":", 1)[0].strip()
        if name not in fields or name in found or not line.startswith(" ") or ":" not in line:
            continue
        found.add(name)
        if i in comments:
            out[name] = comments[i]
            continue
        block, j = [], i - 1
        while j in comments and j not in code_lines:
            block.insert(0, comments[j])
            j -= 1
        if block:
            out[name] = " ".join(block)
    return out


def field_help(cls: type, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each field's help text where the code has one: ``extra`` (an experiment's ``cli_fields``),
    else the field's ``hparam(help=...)``, else the comment on the field's line in the source of
    the class (or of a base class) that declares it, else the comment block right above it, else
    the help of a base class's field of that name (``CommonHparams``: a subclass that only
    changes a default keeps it)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, str] = {k: str(h) for k in fields if (h := field_meta(cls, k, "help"))}
    for c in reversed([c for c in cls.__mro__ if "__dataclass_fields__" in c.__dict__]):  # base first
        out.update(_comments(c, fields))
    for name, f in fields.items():
        if f.metadata.get("help"):
            out[name] = str(f.metadata["help"])
    for name, h in (extra or {}).items():
        if name in fields and h:
            out[name] = h
    return out
