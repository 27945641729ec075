"""Run specs: an experiment name plus its frozen hyper-parameter dataclass.

* ``resolve(experiment, preset, sets, conditions, fields)`` builds the hparams from a named preset
  and typed overrides (``--set field=value`` parsed by the dataclass field's type);
* ``spec_hash(experiment, hp)`` is the SHA-256 of the canonical JSON of ``{experiment, hparams}``
  (sorted keys, no whitespace), in the spirit of OpenLTH: two runs with the same hash compute the
  same trials;
* ``default_run_dir`` names a run ``runs/<experiment>-<preset>-<hash[:10]>``.

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


class SpecError(ExperimentError):
    """A bad override or an unreadable spec (a user error)."""


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

    def to_json(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "preset": self.preset, "hash": self.hash,
                "hparams": self.hparams}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def spec_hash(experiment: str, hp: Any) -> str:
    payload = canonical_json({"experiment": experiment, "hparams": hparams_dict(hp)})
    return hashlib.sha256(payload.encode()).hexdigest()


def default_run_dir(spec: Spec, root: str | Path = "runs") -> Path:
    return Path(root) / f"{spec.experiment}-{spec.preset}-{spec.hash[:10]}"


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
    """Apply ``field=value`` overrides (typed by the Hparams field)."""
    types_ = field_types(type(hp))
    changes: dict[str, Any] = {}
    for item in sets:
        name, eq, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name:
            raise SpecError(f"--set {item!r}: expected field=value")
        if name not in types_:
            raise SpecError(
                f"--set {item!r}: experiment {exp.name!r} has no hparam {name!r}; "
                f"known: {', '.join(types_)}")
        changes[name] = parse_value(types_[name], text, name)
    return dataclasses.replace(hp, **changes) if changes else hp


def resolve(exp: Experiment, preset: str | None = None, sets: Sequence[str] = (),
            conditions: str | Sequence[str] | None = None,
            fields: Mapping[str, Any] | None = None) -> Spec:
    """Preset + ``--set`` overrides + ``--conditions`` + the experiment's own flags, validated."""
    preset = preset or default_preset(exp)
    if preset not in exp.presets:
        raise SpecError(
            f"unknown preset {preset!r} for experiment {exp.name!r}; known: {', '.join(exp.presets)}")
    hp = exp.presets[preset]
    hp = apply_sets(exp, hp, sets)
    types_ = field_types(type(hp))
    changes: dict[str, Any] = {}
    for name, value in (fields or {}).items():
        if value is None:
            continue
        if name not in types_:
            raise SpecError(f"experiment {exp.name!r} has no hparam {name!r} (flag --{name.replace('_', '-')})")
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
