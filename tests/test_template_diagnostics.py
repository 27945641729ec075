"""polarity.template.diagnostics and Template.agreement between templates; the CLI's
``template info`` diagnostics and ``template compare`` are at the end."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from polarity import Template, TemplateError
from polarity.template import DEAD_THRESHOLD, SILENT_BELOW, diagnose
from polarity.template.diagnostics import (MAGNITUDE_RATIOS, RELU_INPUT_RATIO, active_probability,
                                           magnitude_ratio, unit_activity)

from _templates import random_signs, sample_template

shapes = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
                  min_size=1, max_size=4)


def _leaning(shapes, free: float, negative: float, seed: int) -> Template:
    """Signs with a fraction ``free`` of zeros and the others -1 with probability ``negative``."""
    g = torch.Generator().manual_seed(seed)
    signs = {}
    for i, shape in enumerate(shapes):
        s = torch.where(torch.rand(shape, generator=g) < negative, -1, 1)
        s[torch.rand(shape, generator=g) < free] = 0
        signs[f"layer{i}.weight"] = s
    return Template(signs)


def _naive(t: torch.Tensor, threshold: float) -> dict:
    """The definitions, entry by entry."""
    flat = t.flatten().tolist()
    out = {"constrained": sum(v != 0 for v in flat), "free": sum(v == 0 for v in flat),
           "negative": sum(v < 0 for v in flat), "units": 0, "dead_units": 0}
    if t.dim() >= 2:
        for unit in t:
            signs = [v for v in unit.flatten().tolist() if v != 0]
            if signs:
                out["units"] += 1
                out["dead_units"] += sum(v < 0 for v in signs) / len(signs) >= threshold
    return out


@settings(max_examples=60, deadline=None)
@given(shapes, st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([0.1, 0.5, 0.9, 1.0]),
       st.sampled_from([0.5, DEAD_THRESHOLD, 1.0]), st.integers(0, 2**16))
def test_counts_follow_the_definitions(shapes, free, negative, threshold, seed):
    t = _leaning(shapes, free, negative, seed)
    d = diagnose(t, dead_threshold=threshold)
    assert list(d.tensors) == list(t) and d.dead_threshold == threshold and not d.compared
    for name, row in d.tensors.items():
        want = _naive(t[name], threshold)
        assert {k: getattr(row, k) for k in want} == want, name
        assert row.shape == tuple(t[name].shape) and row.agreement is None
    for k in ("constrained", "free", "negative", "units", "dead_units"):
        assert getattr(d.overall, k) == sum(getattr(r, k) for r in d.tensors.values())
    o = d.overall
    if o.constrained:  # entry-weighted, not a mean of the tensors' fractions
        assert o.negative_fraction == o.negative / o.constrained
    else:
        assert math.isnan(o.negative_fraction)
    assert o.constrained + o.free == t.numel()


def test_a_dead_unit_is_judged_on_its_constrained_signs_only():
    w = torch.tensor([[-1] * 9 + [1],          # 9 of 10 negative: dead at 0.9
                      [-1] * 8 + [1, 1],       # 8 of 10: alive
                      [-1] * 9 + [0],          # 9 of 9 constrained: dead, the free one ignored
                      [0] * 10])               # nothing constrained: not a unit
    d = diagnose(Template({"fc.weight": w}))
    row = d.tensors["fc.weight"]
    assert (row.units, row.dead_units, row.free) == (3, 2, 11)
    assert row.dead_unit_fraction == 2 / 3
    assert diagnose(Template({"fc.weight": w}), dead_threshold=0.95).tensors["fc.weight"].dead_units == 1
    conv = torch.ones(4, 3, 2, 2, dtype=torch.int8)
    conv[1] = -1  # one filter: all of its 12 incoming signs negative
    row = diagnose(Template({"conv.weight": conv})).tensors["conv.weight"]
    assert (row.units, row.dead_units, row.negative) == (4, 1, 12)


def test_biases_and_scalars_have_no_units():
    t = Template({"fc.bias": torch.tensor([-1, -1, 1]), "s": torch.tensor(-1)})
    d = diagnose(t)
    assert d.tensors["fc.bias"].units == 0 and math.isnan(d.tensors["fc.bias"].dead_unit_fraction)
    assert d.tensors["fc.bias"].negative_fraction == 2 / 3 and d.overall.negative == 3


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan")])
def test_the_threshold_is_a_fraction(bad):
    with pytest.raises(TemplateError, match="dead_threshold"):
        diagnose(sample_template(), dead_threshold=bad)


@settings(max_examples=60, deadline=None)
@given(shapes, st.sampled_from([0.0, 0.2, 1.0]), st.integers(0, 2**16))
def test_agreement_between_templates(shapes, free, seed):
    a = Template(random_signs(shapes, free, seed))
    b = Template(random_signs(shapes, free, seed + 1))
    ab, ba = diagnose(a, b), diagnose(b, a)
    neg = Template({k: -v for k, v in a.items()})
    for name in a:
        joint = (a[name] != 0) & (b[name] != 0)
        assert ab.tensors[name].compared == int(joint.sum()) == ba.tensors[name].compared
        assert ab.tensors[name].same == int(((a[name] == b[name]) & joint).sum())
        assert ab.tensors[name].same == ba.tensors[name].same  # symmetric
        got = a.agreement(b)[name]
        want = ab.tensors[name].agreement
        assert got == want or math.isnan(got) and math.isnan(want)
        n = int((a[name] != 0).sum())
        assert diagnose(a, a).tensors[name].same == n and diagnose(a, neg).tensors[name].same == 0
    o = ab.overall  # entry-weighted over the tensors
    assert (o.same, o.compared) == (sum(r.same for r in ab.tensors.values()),
                                     sum(r.compared for r in ab.tensors.values()))


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 2**16))
def test_a_template_and_weights_with_its_signs_are_compared_alike(shapes, seed):
    """One implementation: a template without free entries compares like weights of its signs;
    where it has free entries, a weight of 0 disagrees but a free entry is not compared."""
    a = Template(random_signs(shapes, 0.3, seed))
    b = Template(random_signs(shapes, 0.0, seed + 1))
    g = torch.Generator().manual_seed(seed)
    weights = {k: v * (torch.rand(v.shape, generator=g, dtype=torch.float64) + 0.1)
               for k, v in b.items()}
    assert diagnose(a, b).as_dict() == diagnose(a, weights).as_dict()
    with_free = Template(random_signs(shapes, 0.5, seed + 2))
    zeros = {k: v.double() for k, v in with_free.items()}
    for name, row in diagnose(a, zeros).tensors.items():
        assert row.compared == int((a[name] != 0).sum())
        assert diagnose(a, with_free).tensors[name].compared == int(
            ((a[name] != 0) & (with_free[name] != 0)).sum())


def test_agreement_with_a_module_is_unchanged(small_net):
    t = Template.from_init(small_net)
    with torch.no_grad():
        small_net[5].weight[0, :4] *= -1
        small_net[3].weight[0, 0] = 0.0  # a zero weight disagrees
    got = t.agreement(small_net)
    assert got["5.weight"] == 1 - 4 / small_net[5].weight.numel()
    assert got["3.weight"] == 1 - 1 / small_net[3].weight.numel()
    d = diagnose(t, small_net)
    assert d.overall.compared == t.numel() and d.overall.same == t.numel() - 5


def test_templates_that_do_not_match_are_named():
    a = Template({"x.weight": torch.ones(2, 3), "y.weight": torch.ones(4, 4),
                  "z.weight": torch.ones(2, 2)})
    b = Template({"x.weight": torch.ones(3, 2), "w.weight": torch.ones(4, 4),
                  "z.weight": torch.ones(2, 2)})
    with pytest.raises(TemplateError) as e:
        a.agreement(b)
    msg = str(e.value)
    assert "only in the first: y.weight" in msg and "only in the second: w.weight" in msg
    assert "x.weight (2, 3) vs (3, 2)" in msg and "z.weight" not in msg
    many = Template({f"l{i}.weight": torch.ones(2, 2) for i in range(9)})
    with pytest.raises(TemplateError, match=r"only in the second: l0.weight, .*l4.weight and 4 more"):
        diagnose(Template({}), many)


def test_the_table_and_the_json():
    t = sample_template()
    d = diagnose(t)
    lines = str(d).splitlines()
    assert lines[0].startswith("parameter") and "dead units (>=90% -1)" in lines[0]
    assert [ln.split()[0] for ln in lines[1:]] == [*t, "overall"]
    assert "agree" not in lines[0]
    assert lines[-1].split()[1:3] == [f"{d.overall.constrained:,}", f"{d.overall.free:,}"]
    c = diagnose(t, t)
    assert c.compared and "agree" in str(c).splitlines()[0]
    assert str(c).splitlines()[-1].endswith("1.000")
    j = json.loads(json.dumps(c.as_dict(), allow_nan=False))  # NaN (the empty tensor) is null
    assert j["tensors"]["empty.weight"]["negative_fraction"] is None
    assert j["tensors"]["conv.weight"]["shape"] == [3, 2, 3, 3]
    assert j["overall"]["agreement"] == 1.0 and "shape" not in j["overall"]
    assert "agreement" not in d.as_dict()["overall"] and d.as_dict()["dead_threshold"] == 0.9
    assert "P(active)" in lines[0] and "silent (P<5%)" in lines[0]
    assert j["overall"]["active_fraction"] == c.overall.active_fraction
    assert j["overall"]["silent_units"] == c.overall.silent_units
    assert j["tensors"]["empty.weight"]["active_fraction"] is None


# ------------------------------------------------- expected activity on a fresh magnitude draw
def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _naive_activity(t: torch.Tensor, ratio: float) -> list[float]:
    """Per unit, entry by entry: Phi(r (P - N) / sqrt(P + N + F - (P + N) r^2))."""
    out = []
    for unit in t.reshape(t.shape[0], -1).tolist():
        pos, neg = sum(v > 0 for v in unit), sum(v < 0 for v in unit)
        if pos + neg:
            var = len(unit) - (pos + neg) * ratio ** 2
            out.append(_phi(ratio * (pos - neg) / math.sqrt(var)) if var > 0
                       else float(pos > neg))
    return out


@settings(max_examples=60, deadline=None)
@given(shapes, st.sampled_from([0.0, 0.3, 1.0]), st.sampled_from([0.1, 0.5, 0.7, 1.0]),
       st.sampled_from(["glorot", "half-normal", "uniform", 1.0]),
       st.sampled_from([RELU_INPUT_RATIO, 0.0, 1.0]), st.sampled_from([SILENT_BELOW, 0.5]),
       st.integers(0, 2**16))
def test_activity_follows_its_formula(shapes, free, negative, magnitudes, ratio, below, seed):
    t = _leaning(shapes, free, negative, seed)
    d = diagnose(t, magnitudes=magnitudes, input_ratio=ratio, silent_below=below)
    for name, row in d.tensors.items():
        v = t[name]
        want = _naive_activity(v, magnitude_ratio(magnitudes, v.dim()) * ratio) \
            if v.dim() >= 2 and v.numel() else []
        got = unit_activity(v, magnitudes, ratio).tolist()
        assert got == pytest.approx(want, abs=1e-12) and len(got) == row.units
        assert row.expected_active == pytest.approx(sum(want), abs=1e-9)
        assert row.silent_units == sum(p < below for p in got)
        flipped = unit_activity(-v, magnitudes, ratio).tolist()  # a unit's mirror: 1 - P
        if magnitude_ratio(magnitudes, 2) * ratio < 1:  # else no spread: a tie is 0 both ways
            assert [a + b for a, b in zip(got, flipped)] == pytest.approx([1.0] * len(got))
        if ratio == 0:  # zero-mean inputs: a coin, whatever the signs
            assert all(p == 0.5 for p in got)
    o = d.overall
    assert o.expected_active == pytest.approx(sum(r.expected_active for r in d.tensors.values()))
    assert o.silent_units == sum(r.silent_units for r in d.tensors.values())
    assert o.active_fraction == pytest.approx(o.expected_active / o.units) if o.units \
        else math.isnan(o.active_fraction)


def test_activity_falls_with_the_lean_and_faster_with_the_fan_in():
    def p(n, q):
        k = round(n * q)
        return float(active_probability(*torch.tensor([[n - k], [k], [0]], dtype=torch.float64),
                                        0.45))
    assert p(100, 0.5) == 0.5
    assert p(27, 0.6) > p(27, 0.7) > p(27, 0.9)
    assert p(27, 0.6) > p(108, 0.6) > p(432, 0.6) and p(432, 0.6) < SILENT_BELOW
    # Phi(c sqrt(n) (1 - 2q)) with c = r / sqrt(1 - r^2) (docs/templates.md); 258 / 430 = 0.6
    c = 0.45 / math.sqrt(1 - 0.45 ** 2)
    assert p(430, 0.6) == pytest.approx(_phi(-c * math.sqrt(430) * 0.2))


def _units(fan_in: int, leans, per: int, free: float, g) -> torch.Tensor:
    """``per`` rows of ``fan_in`` signs for each lean: round(q n) of them -1 at random places,
    then a fraction ``free`` of all of them made free."""
    rows = []
    for q in leans:
        for _ in range(per):
            s = torch.ones(fan_in, dtype=torch.int8)
            s[torch.randperm(fan_in, generator=g)[:round(q * fan_in)]] = -1
            s[torch.rand(fan_in, generator=g) < free] = 0
            rows.append(s)
    return torch.stack(rows)


@pytest.mark.parametrize("layer, free, leans, tol", [
    ("conv", 0.0, (0.55, 0.6), 0.01),     # truncated normal magnitudes, fan-in 144
    ("linear", 0.0, (0.55, 0.6), 0.01),   # uniform magnitudes, fan-in 256
    ("conv", 0.5, (0.6, 0.65), 0.02),     # half the entries free: their init signs, at random
])
def test_activity_matches_a_monte_carlo_of_the_library_init(layer, free, leans, tol):
    """The library's own magnitude draw (init_glorot_) under the template's signs, inputs a ReLU
    of i.i.d. normals: the fraction of (unit, input) pairs with a positive pre-activation, per
    lean, against the units' mean expected activity.  A formula with the second moment in the
    spread (r instead of c = r / sqrt(1 - r^2)), or one that leaves the free entries' spread
    out, misses by more than the tolerance; checked here, so the test can tell them apart."""
    from torch import nn

    from polarity.models import init_glorot_

    g = torch.Generator().manual_seed(0)
    per = 500 if free == 0 else 1000
    units = per * len(leans)
    module = nn.Conv2d(16, units, 3) if layer == "conv" else nn.Linear(256, units)
    init_glorot_(module, seed=1)
    w = module.weight.detach()
    signs = _units(w[0].numel(), leans, per, free, g).reshape(w.shape)
    weights = torch.where(signs != 0, w.abs() * signs, w).reshape(len(w), -1)
    x = torch.randn(1000, weights.shape[1], generator=g).clamp_min(0)
    active = ((x @ weights.T) > 0).double().mean(0)
    p = unit_activity(signs)
    assert len(p) == len(w) and diagnose(Template({"l.weight": signs})).tensors[
        "l.weight"].expected_active == pytest.approx(float(p.sum()))
    r = magnitude_ratio("glorot", w.dim()) * RELU_INPUT_RATIO
    rows = signs.reshape(len(w), -1)
    pos, neg = (rows > 0).sum(1).double(), (rows < 0).sum(1).double()
    n, fan_in = pos + neg, rows.shape[1]
    wrong = {"second moment": torch.special.ndtr(r * (pos - neg) / math.sqrt(fan_in)),
             "free left out": torch.special.ndtr(r * (pos - neg) / (n * (1 - r * r)).sqrt())}
    for i in range(len(leans)):
        unit = slice(i * per, (i + 1) * per)
        emp = float(active[unit].mean())
        assert abs(float(p[unit].mean()) - emp) < tol, (leans[i], float(p[unit].mean()), emp)
    for label, q in wrong.items():
        if (free == 0) == (label == "free left out"):
            continue  # without free entries the same formula; with them the spread is theirs
        misses = [abs(float(q[i * per:(i + 1) * per].mean() - active[i * per:(i + 1) * per].mean()))
                  for i in range(len(leans))]
        assert max(misses) > tol, (label, misses)


def test_the_activity_options_are_checked():
    t = sample_template()
    for bad, says in [({"silent_below": 0}, "silent_below"),
                      ({"magnitudes": "gauss"}, "magnitudes"),
                      ({"magnitudes": 0}, "(0, 1]"), ({"magnitudes": True}, "(0, 1]"),
                      ({"input_ratio": 1.5}, "input ratio"),
                      ({"input_ratio": {"conv.weight": -1}}, "conv.weight"),
                      ({"input_ratio": {"nope.weight": 0}}, "nope.weight")]:
        with pytest.raises(TemplateError, match=re.escape(says)):
            diagnose(t, **bad)
    d = diagnose(t, input_ratio={"conv.weight": 0.0}, magnitudes="uniform")
    j = d.as_dict()
    assert j["input_ratios"] == {"conv.weight": 0.0} and j["input_ratio"] == RELU_INPUT_RATIO
    assert j["magnitudes"] == "uniform" and j["silent_below"] == SILENT_BELOW
    assert d.tensors["conv.weight"].active_fraction == 0.5
    assert set(MAGNITUDE_RATIOS) == {"half-normal", "uniform", "truncated-normal"}
    g = torch.Generator().manual_seed(0)  # the truncated normal's ratio, by simulation
    m = torch.nn.init.trunc_normal_(torch.empty(200_000), 0, 1, -2, 2, generator=g).abs()
    assert float(m.mean() / m.square().mean().sqrt()) == pytest.approx(
        MAGNITUDE_RATIOS["truncated-normal"], abs=2e-3)


def test_diagnose_needs_a_template():
    with pytest.raises(TemplateError, match="needs a Template"):
        diagnose({"w": torch.ones(2, 2)})


# ----------------------------------------------------------------- the command line
def _cli(capsys, *argv):
    from polarity import cli

    code = cli.main(["template", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _overall(out: str) -> list[str]:
    return [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["overall"]][-1]


def test_info_prints_the_diagnostics(tmp_path, capsys):
    w = torch.ones(10, 20, dtype=torch.int8)
    w[:3] = -1  # three rows all negative: dead-leaning
    w[3, :17] = -1  # 85% negative: dead at 0.8, not at 0.9
    w[9, :5] = 0
    t = Template({"fc.weight": w, "conv.weight": torch.ones(4, 2, 3, 3)})
    for path in (t.save(tmp_path / "t.polarity"), t.save(tmp_path / "t.safetensors")):
        code, out, err = _cli(capsys, "info", str(path))
        assert code == 0 and not err
        assert re.search(r"fc\.weight .* (list|index) \(5\)", out)  # what info printed before stays
        d = diagnose(t)
        row = [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["fc.weight"]][-1]
        fc = d.tensors["fc.weight"]
        assert row[-8:] == ["195", "5", f"{fc.negative_fraction:.3f}", "3/10", "0.300",
                            f"{fc.active_fraction:.3f}", f"{fc.silent_units}/10",
                            f"{fc.silent_unit_fraction:.3f}"]
        assert fc.silent_units >= 4  # the three all-negative rows and the 85% one
        assert _overall(out)[1:] == ["267", "5", f"{d.overall.negative_fraction:.3f}", "3/14",
                                     f"{3 / 14:.3f}", f"{d.overall.active_fraction:.3f}",
                                     f"{d.overall.silent_units}/14",
                                     f"{d.overall.silent_unit_fraction:.3f}"]
    code, out, _ = _cli(capsys, "info", str(path), "--dead-threshold", "0.8")
    assert code == 0 and "(>=80% -1)" in out and _overall(out)[4] == "4/14"
    code, out, _ = _cli(capsys, "info", str(path), "--silent-below", "0.5", "--magnitudes",
                        "half-normal", "--zero-mean-inputs", "conv.weight")
    d = diagnose(t, silent_below=0.5, magnitudes="half-normal", input_ratio={"conv.weight": 0})
    assert code == 0 and "silent (P<50%)" in out
    assert _overall(out)[6:] == [f"{d.overall.active_fraction:.3f}", f"{d.overall.silent_units}/14",
                                 f"{d.overall.silent_unit_fraction:.3f}"]
    assert d.tensors["conv.weight"].active_fraction == 0.5  # zero-mean inputs: a coin, any signs
    code, out, _ = _cli(capsys, "info", str(path), "--magnitudes", "0.6")
    assert _overall(out)[6] == f"{diagnose(t, magnitudes=0.6).overall.active_fraction:.3f}"
    from polarity import cli

    try:  # the help names the library's default
        cli.main(["template", "info", "--help"])
    except SystemExit:  # argparse's exit after the help, whether or not main turns it into a status
        pass
    help_ = " ".join(capsys.readouterr().out.split())
    assert f"default {DEAD_THRESHOLD:.0%}" in help_ and f"default {SILENT_BELOW:.0%}" in help_


def test_info_and_compare_take_a_shipped_source_or_its_directory(capsys):
    from polarity.sources import ZOO, shipped

    name = shipped()[0]
    code, by_name, _ = _cli(capsys, "info", name)
    assert code == 0
    code, by_dir, _ = _cli(capsys, "info", str(ZOO / name))
    assert code == 0 and by_name.split("\n", 1)[1] == by_dir.split("\n", 1)[1]
    t = Template.load(ZOO / name / "template.polarity")
    assert _overall(by_name)[3] == f"{diagnose(t).overall.negative_fraction:.3f}"
    code, out, err = _cli(capsys, "compare", name, str(ZOO / name / "template.polarity"))
    assert code == 0 and not err and _overall(out)[1:] == [f"{t.numel():,}", "1.000"]


def test_compare_prints_agreement_per_parameter_and_overall(tmp_path, capsys):
    shapes_ = [(6, 4), (3, 2, 3, 3), (5,)]
    a = Template(random_signs(shapes_, 0.2, 1))
    b = Template(random_signs(shapes_, 0.0, 2))
    d = diagnose(a, b)
    code, out, err = _cli(capsys, "compare", str(a.save(tmp_path / "a.polarity")),
                          str(b.save(tmp_path / "b.safetensors")))
    assert code == 0 and not err
    lines = out.splitlines()
    assert lines[0].startswith("A: ") and lines[1].startswith("B: ")
    assert f"-1 fraction {d.overall.negative_fraction:.3f}" in lines[0]
    for name, row in d.tensors.items():
        got = [ln.split() for ln in lines if ln.split()[:1] == [name]][0]
        assert got[-2:] == [f"{row.compared:,}", f"{row.agreement:.3f}"]
    assert _overall(out)[1:] == [f"{d.overall.compared:,}", f"{d.overall.agreement:.3f}"]


def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    a = Template({"x.weight": torch.ones(2, 3), "y.weight": torch.ones(2, 2)}).save(tmp_path / "a.pol")
    b = Template({"x.weight": torch.ones(2, 3), "z.weight": torch.ones(2, 2)}).save(tmp_path / "b.pol")
    (junk := tmp_path / "junk.pol").write_bytes(b"not a template at all")
    (plain := tmp_path / "plain").mkdir()
    cases = {("info", str(tmp_path / "missing.pol")): "no template file, shipped source or source "
                                                      "directory",
             ("info", str(junk)): "not a polarity template",
             ("info", str(plain)): "not a source directory",
             ("compare", str(a), str(tmp_path / "nope")): "'" + str(tmp_path / "nope") + "'",
             ("compare", str(a), str(b)): "only in the first: y.weight; only in the second: z.weight",
             ("info", str(a), "--dead-threshold", "2"): "dead_threshold must be in (0, 1]",
             ("info", str(a), "--silent-below", "0"): "silent_below must be in (0, 1]",
             ("info", str(a), "--magnitudes", "gauss"): "magnitudes must be 'glorot'",
             ("info", str(a), "--magnitudes", "1.5"): "must be in (0, 1], got 1.5",
             ("info", str(a), "--zero-mean-inputs", "x.weight,q"): "does not have: q"}
    for argv, says in cases.items():
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and not out, argv
        assert err.startswith("polarity: error: ") and err.count("\n") == 1, err
        assert says in err, (argv, err)


def test_the_docs_table_of_the_shipped_sources_is_current():
    """docs/templates.md lists each shipped source's diagnostics; a retrained or new source
    must update it (the table is read back here, not copied)."""
    from pathlib import Path

    from polarity.sources import ZOO, shipped

    text = (Path(__file__).parents[1] / "docs" / "templates.md").read_text()
    rows = {m[1]: m.groups()[1:] for m in re.finditer(
        r"^\| (\S+) +\| ([\d.]+) +\| (\d+)/(\d+) +\| ([\d.]+) +\| (\d+)/(\d+) +\|$", text, re.M)}
    want = {}
    for name in shipped():
        t = Template.load(ZOO / name / "template.polarity")
        o = diagnose(t, input_ratio={"features.0.weight": 0.0}).overall
        want[name] = (f"{o.negative_fraction:.3f}", str(o.dead_units), str(o.units),
                      f"{o.active_fraction:.3f}", str(o.silent_units), str(o.units))
    table = "\n".join(f"| {k:<28} | {v[0]:<7} | {v[1] + '/' + v[2]:<20} | {v[3]:<9} | "
                      f"{v[4] + '/' + v[5]:<13} |" for k, v in want.items())
    assert rows == want, f"docs/templates.md: the shipped sources' table should read\n{table}"
