"""The control templates (polarity.template.controls): shuffled within each tensor, balanced by
the fewest flips; properties over templates hypothesis draws (sizes, sign mixes, free entries)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from polarity import Template
from polarity.template import TemplateError, balance_signs, shuffle_signs


@st.composite
def templates(draw):
    """1-4 tensors of 0-300 entries, each with its own chance of +1 and of a free entry (0)."""
    signs = {}
    for i in range(draw(st.integers(1, 4))):
        shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
        if draw(st.booleans()):
            shape = (draw(st.integers(0, 300)),)
        g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
        p_pos = draw(st.sampled_from([0.0, 0.1, 0.35, 0.5, 0.65, 1.0]))
        p_free = draw(st.sampled_from([0.0, 0.0, 0.2, 1.0]))
        s = torch.where(torch.rand(shape, generator=g) < p_pos, 1, -1)
        s[torch.rand(shape, generator=g) < p_free] = 0
        signs[f"layer{i}.weight"] = s.to(torch.int8)
    return Template(signs, {"source": "hypothesis"})


def _counts(t: torch.Tensor) -> tuple[int, int, int]:
    return int((t == 1).sum()), int((t == -1).sum()), int((t == 0).sum())


@settings(max_examples=150, deadline=None)
@given(t=templates(), seed=st.integers(0, 2**40), pick=st.integers(0, 15))
def test_shuffle_keeps_each_tensors_sign_counts_and_free_entries(t, seed, pick):
    names = [k for i, k in enumerate(t) if pick >> i & 1]
    s = shuffle_signs(t, seed, names)
    assert list(s) == list(t) and s.shapes() == t.shapes()
    for k in t:
        assert _counts(s[k]) == _counts(t[k]), k
        assert torch.equal(s[k] == 0, t[k] == 0), k          # free entries stay where they are
        if k not in names:
            assert torch.equal(s[k], t[k]), k                # not selected: unchanged
    assert s == shuffle_signs(t, seed, names)                 # deterministic for a seed
    assert s.meta["control"] == {"kind": "shuffled", "seed": seed, "tensors": sorted(names)}


@settings(max_examples=150, deadline=None)
@given(t=templates(), seed=st.integers(0, 2**40), pick=st.integers(0, 15))
def test_balance_flips_exactly_half_the_excess_and_only_majority_entries(t, seed, pick):
    names = [k for i, k in enumerate(t) if pick >> i & 1]
    b = balance_signs(t, seed, names)
    for k in t:
        pos, neg, free = _counts(t[k])
        changed = b[k] != t[k]
        if k not in names:
            assert not changed.any(), k
            continue
        assert int(changed.sum()) == abs(pos - neg) // 2, k
        if changed.any():
            major = 1 if pos > neg else -1
            assert bool((t[k][changed] == major).all()) and bool((b[k][changed] == -major).all())
        p2, n2, f2 = _counts(b[k])
        assert f2 == free and abs(p2 - n2) == (pos + neg) % 2, k   # level, or one ahead if odd
    assert b == balance_signs(t, seed, names)


def test_a_tensors_result_depends_on_its_name_and_seed_not_on_the_others():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(50, 40, generator=g) < 0.7).to(torch.int8) * 2 - 1
    one = Template({"a.weight": a})
    two = Template({"z.weight": -a, "a.weight": a})
    for f in (shuffle_signs, balance_signs):
        assert torch.equal(f(one, 7)["a.weight"], f(two, 7)["a.weight"])
        assert torch.equal(f(two, 7)["a.weight"], f(two, 7, ["a.weight"])["a.weight"])
        assert not torch.equal(f(one, 7)["a.weight"], f(one, 8)["a.weight"])
    # the shuffle moves signs (2000 entries, 70% positive: staying put has chance ~0)
    assert not torch.equal(shuffle_signs(one, 7)["a.weight"], a)


def test_balance_picks_majority_entries_uniformly():
    """Over many seeds every majority entry is flipped about flips/majority of the time."""
    t = torch.tensor([1] * 30 + [-1] * 10, dtype=torch.int8)
    tmpl = Template({"w": t})
    hits = torch.zeros(40)
    for seed in range(400):
        hits += (balance_signs(tmpl, seed)["w"] != t).float()
    assert hits[30:].sum() == 0
    rate = hits[:30] / 400                               # expected 10 / 30 each
    assert float(rate.min()) > 0.22 and float(rate.max()) < 0.45


def test_unknown_names_are_refused():
    t = Template({"w": torch.ones(3, dtype=torch.int8)})
    for f in (shuffle_signs, balance_signs):
        with pytest.raises(TemplateError, match="no entry 'v'"):
            f(t, 0, ["v"])
