"""Specs: typed overrides, hashing, presets and validation errors."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polarity import experiments
from polarity.engine import spec as S
from polarity.experiments.base import ExperimentError


@pytest.fixture(scope="module")
def toy():
    return experiments.get("toy")


@dataclasses.dataclass(frozen=True)
class HP:
    a: int = 1
    b: float = 0.5
    c: str = "x"
    d: bool = False
    e: tuple[int, ...] = (1, 2)
    f: tuple[str, ...] = ("p",)
    g: Optional[int] = None
    h: tuple[float, ...] = ()


def test_parse_value_by_field_type():
    t = S.field_types(HP)
    assert S.parse_value(t["a"], "42") == 42
    assert S.parse_value(t["b"], "1e-3") == 1e-3
    assert S.parse_value(t["c"], "a,b") == "a,b"  # strings are not split
    assert S.parse_value(t["d"], "True") is True and S.parse_value(t["d"], "off") is False
    assert S.parse_value(t["e"], "8,20, 32") == (8, 20, 32)
    assert S.parse_value(t["e"], "2..5,9") == (2, 3, 4, 5, 9)
    assert S.parse_value(t["e"], "") == ()
    assert S.parse_value(t["f"], "frozen-rand,fluid-rand") == ("frozen-rand", "fluid-rand")
    assert S.parse_value(t["g"], "none") is None and S.parse_value(t["g"], "7") == 7
    assert S.parse_value(t["h"], "0.5,1") == (0.5, 1.0)


@pytest.mark.parametrize("field,text,needle", [
    ("a", "1.5", "expected an integer"),
    ("b", "fast", "expected a number"),
    ("d", "maybe", "expected a boolean"),
    ("e", "1,x", "expected an integer"),
    ("e", "5..2", "empty range"),
])
def test_parse_value_errors_name_field_and_value(field, text, needle):
    with pytest.raises(S.SpecError) as ei:
        S.parse_value(S.field_types(HP)[field], text, field)
    assert needle in str(ei.value) and field in str(ei.value) and text in str(ei.value)


@settings(max_examples=60, deadline=None)
@given(a=st.integers(-10**9, 10**9), b=st.floats(allow_nan=False, allow_infinity=False),
       d=st.booleans(), e=st.lists(st.integers(0, 10**6), max_size=6),
       f=st.lists(st.text(st.characters(blacklist_characters=",", blacklist_categories=("Cs",)),
                          min_size=1).filter(lambda s: s.strip() == s), max_size=4))
def test_format_parse_round_trip(a, b, d, e, f):
    hp = HP(a=a, b=b, d=d, e=tuple(e), f=tuple(f))
    t = S.field_types(HP)
    for name in ("a", "b", "d", "e", "f"):
        assert S.parse_value(t[name], S.format_value(getattr(hp, name)), name) == getattr(hp, name)


def test_spec_hash_is_sha256_of_canonical_json(toy):
    hp = toy.presets["quick"]
    expect = hashlib.sha256(json.dumps({"experiment": "toy", "hparams": dataclasses.asdict(hp)},
                                       sort_keys=True, separators=(",", ":"), default=list).encode()).hexdigest()
    assert S.spec_hash("toy", hp) == expect
    assert S.spec_hash("toy", dataclasses.replace(hp, trials=hp.trials + 1)) != expect
    spec = S.resolve(toy, "quick")
    grid = set(toy.grid_names())
    identity = hashlib.sha256(json.dumps(
        {"experiment": "toy", "hparams": {k: v for k, v in dataclasses.asdict(hp).items() if k not in grid}},
        sort_keys=True, separators=(",", ":"), default=list).encode()).hexdigest()
    assert S.default_run_dir(spec).as_posix() == f"runs/toy-quick-{identity[:10]}"  # the same as it grows


def test_resolve_applies_sets_conditions_and_round_trips(toy):
    spec = S.resolve(toy, "grid", sets=["trials=4", "sample_sizes=8..10", "lr=0.25"], conditions="b")
    hp = spec.hp
    assert (hp.trials, hp.sample_sizes, hp.lr, hp.conditions) == (4, (8, 9, 10), 0.25, ("b",))
    assert spec.preset == "grid"
    ov = S.overrides(toy, "grid", hp)
    again = S.resolve(toy, "grid", sets=ov)
    assert again.hash == spec.hash
    rebuilt = S.hparams_from_dict(toy.Hparams, spec.hparams)
    assert rebuilt == hp


def test_default_preset_is_quick(toy):
    assert S.resolve(toy).preset == "quick"


def test_unknown_preset_lists_known(toy):
    with pytest.raises(ExperimentError, match=r"unknown preset 'nope'.*known: quick, grid"):
        S.resolve(toy, "nope")


def test_unknown_condition_named_with_known_list(toy):
    with pytest.raises(ExperimentError) as ei:
        S.resolve(toy, "quick", conditions="a,zzz")
    msg = str(ei.value)
    assert "zzz" in msg and "known: a, b" in msg


def test_unknown_field_and_malformed_set(toy):
    with pytest.raises(S.SpecError, match=r"no hparam 'widht'.*known: .*widths"):
        S.resolve(toy, "quick", sets=["widht=3"])
    with pytest.raises(S.SpecError, match="expected field=value"):
        S.resolve(toy, "quick", sets=["trials"])
    with pytest.raises(S.SpecError, match="expected an integer"):
        S.resolve(toy, "quick", sets=["trials=two"])


def test_unknown_experiment():
    with pytest.raises(ExperimentError, match=r"unknown experiment 'nope'.*toy"):
        experiments.get("nope")
