"""The template file format: size (about one bit per sign), exact round trips, corruption and
crafted files always end in a TemplateError, format-1 files still load."""
from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from polarity import Template, TemplateError
from polarity import template as tm

from _templates import sample_template

DATA = Path(__file__).parent / "data"
PREFIX = len(tm.MAGIC) + 4


# ----------------------------------------------------------------------------- helpers

def _split(data: bytes) -> tuple[dict, bytes]:
    (hlen,) = struct.unpack("<I", data[len(tm.MAGIC) : PREFIX])
    return json.loads(data[PREFIX : PREFIX + hlen]), data[PREFIX + hlen : -32]


def _craft(header, payload: bytes, magic: bytes = tm.MAGIC) -> bytes:
    """A format-2 file with a valid digest: what a hand-crafted (not corrupted) file looks like."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = magic + struct.pack("<I", len(h)) + h + payload
    return body + hashlib.sha256(body).digest()


SAMPLE = sample_template()


@pytest.fixture(scope="module")
def sample_bytes(tmp_path_factory) -> bytes:
    return SAMPLE.save(tmp_path_factory.mktemp("fmt") / "s.polarity").read_bytes()


def _same(a: Template, b: Template) -> bool:
    """Same signs, order and metadata (loading adds the writer's library version)."""
    def meta(t):
        return {k: v for k, v in t.meta.items() if k != "library_version"}
    return a == b and list(a) == list(b) and meta(a) == meta(b)


# ----------------------------------------------------------------------------- size

def test_a_few_zeros_in_a_large_tensor_cost_a_few_bytes(tmp_path):
    n = 10_000_000
    g = torch.Generator().manual_seed(1)
    s = torch.randint(0, 2, (2500, 4000), generator=g, dtype=torch.int8) * 2 - 1
    s.view(-1)[torch.tensor([0, 17, 123_456, 5_000_000, n - 1])] = 0
    t = Template({"fc.weight": s})
    f = tm.read_file(t.save(tmp_path / "t.polarity"))
    assert f.template == t and f.encodings == {"fc.weight": "list"}
    header = f.file_bytes - f.payload_bytes
    assert header < 1000
    assert f.file_bytes <= 1.01 * n / 8 + header  # within 1% of one bit per sign plus header
    assert f.payload_bytes <= n / 8 + 20  # in fact: the signs plus five short varints


def test_half_zero_round_trips_with_a_mask(tmp_path):
    g = torch.Generator().manual_seed(2)
    s = torch.randint(0, 2, (1000, 1001), generator=g, dtype=torch.int8) * 2 - 1
    s[torch.rand(s.shape, generator=g) < 0.5] = 0
    t = Template({"w": s})
    f = tm.read_file(t.save(tmp_path / "t.polarity"))
    assert f.template == t and f.encodings == {"w": "mask"}
    # a mask for the free entries plus one bit per constrained sign
    assert f.payload_bytes == (s.numel() + 7) // 8 + (int((s != 0).sum()) + 7) // 8


def test_encoding_is_the_smaller_one():
    for frac, kind in ((0.0, "none"), (0.001, "list"), (0.05, "list"), (0.5, "mask"), (1.0, "mask")):
        g = torch.Generator().manual_seed(3)
        s = torch.randint(0, 2, (100_000,), generator=g, dtype=torch.int8) * 2 - 1
        s[torch.rand(s.shape, generator=g) < frac] = 0
        entry, parts = tm._encode_entry("w", s)
        assert entry["free"] == kind, frac
        if kind != "none":
            mask = (s.numel() + 7) // 8
            listed = len(tm._free_list_encode(np.flatnonzero(s.numpy() == 0)))
            assert entry["free_bytes"] == min(mask, listed) == len(parts[0])


# ----------------------------------------------------------------------------- round trips

@st.composite
def zero_patterns(draw):
    """A tensor of +-1 with zeros where hypothesis puts them: scattered, clustered, in runs,
    at the ends, far apart (multi-byte gaps), or at a density."""
    shape = draw(st.lists(st.integers(0, 60), min_size=0, max_size=3))
    if draw(st.booleans()):
        # long gaps (varints of 2, 3, 4 bytes) need a long tensor
        shape = [draw(st.integers(1, 3_000_000) | st.sampled_from([2**7 + 1, 2**14 + 1, 2**21 + 1]))]
    n = int(np.prod(shape, dtype=np.int64))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    flat = (rng.integers(0, 2, n, dtype=np.int8) * 2 - 1)
    if n:
        how = draw(st.sampled_from(["indices", "runs", "density"]))
        if how == "indices":
            idx = draw(st.lists(st.integers(0, n - 1), max_size=50))
            flat[idx] = 0
        elif how == "runs":
            for _ in range(draw(st.integers(0, 5))):
                a = draw(st.integers(0, n - 1))
                flat[a : a + draw(st.integers(1, 300))] = 0
        else:
            flat[rng.random(n) < draw(st.floats(0, 1))] = 0
    return torch.from_numpy(flat.reshape(shape))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tensors=st.lists(zero_patterns(), min_size=0, max_size=3))
def test_random_zero_patterns_round_trip_exactly(tensors):
    t = Template({f"layer{i}.weight": s for i, s in enumerate(tensors)}, {"source": "test"})
    back = Template.from_bytes(t.to_bytes())
    assert _same(back, t)
    for name, s in t.items():
        assert back[name].dtype == torch.int8 and back[name].shape == s.shape


@settings(max_examples=200, deadline=None)
@given(idx=st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=40, unique=True))
def test_free_list_codec_is_exact_up_to_the_largest_index(idx):
    idx = np.array(sorted(idx), np.int64)
    buf = tm._free_list_encode(idx)
    assert np.array_equal(tm._free_list_decode(buf, len(idx), 2**62, "x"), idx)


def test_free_list_codec_scales_to_millions_of_entries():
    rng = np.random.default_rng(0)
    idx = np.flatnonzero(rng.random(30_000_000) < 0.1)
    buf = tm._free_list_encode(idx)
    assert np.array_equal(tm._free_list_decode(buf, len(idx), 30_000_000, "x"), idx)


# ----------------------------------------------------------------------------- corruption

def test_every_single_bit_flip_is_detected(sample_bytes):
    """Issue 12 found 7 of 2,752 header bit flips accepted by format 1; now none is."""
    for i in range(len(sample_bytes)):
        for bit in range(8):
            data = bytearray(sample_bytes)
            data[i] ^= 1 << bit
            with pytest.raises(TemplateError):
                Template.from_bytes(bytes(data))


def test_bytes_and_file_agree(tmp_path, sample_bytes):
    assert SAMPLE.to_bytes() == sample_bytes  # deterministic: one template, one encoding
    assert _same(Template.from_bytes(sample_bytes), SAMPLE)
    bad = sample_bytes[:-1]
    (tmp_path / "bad.polarity").write_bytes(bad)
    with pytest.raises(TemplateError, match=r"template file .*bad\.polarity is truncated or corrupt"):
        Template.load(tmp_path / "bad.polarity")
    with pytest.raises(TemplateError, match="template data is truncated or corrupt"):
        Template.from_bytes(bad)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.none()),
    st.tuples(st.just("append"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
)


@settings(max_examples=400, deadline=None)
@given(mutations=st.lists(_mutation, min_size=1, max_size=4))
def test_fuzzed_file_loads_identical_or_raises_template_error(sample_bytes, mutations):
    data = bytearray(sample_bytes)
    for kind, where, arg in mutations:
        i = int(where * len(data)) if data else 0
        if kind == "flip" and data:
            data[i] ^= 1 << arg
        elif kind == "overwrite":
            data[i : i + len(arg)] = arg
        elif kind == "truncate":
            del data[i:]
        elif kind == "append":
            data += arg
    try:
        back = Template.from_bytes(bytes(data))
    except TemplateError:
        return
    assert _same(back, SAMPLE)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(path=st.lists(st.integers(0, 10), min_size=1, max_size=3), value=_json,
       payload_cut=st.integers(0, 3))
def test_crafted_headers_with_a_valid_digest_never_raise_anything_else(sample_bytes, path, value,
                                                                      payload_cut):
    """Someone who recomputes the digest can write any header: it loads or is a TemplateError
    (never a MemoryError, KeyError, TypeError, IndexError...)."""
    header, payload = _split(sample_bytes)
    node = header
    for step in path[:-1]:  # walk into the header, then replace one field
        keys = sorted(node) if isinstance(node, dict) else range(len(node))
        if not keys:
            break
        child = node[list(keys)[step % len(keys)]]
        if not isinstance(child, (dict, list)):
            break
        node = child
    keys = sorted(node) if isinstance(node, dict) else list(range(len(node)))
    if keys:
        node[keys[path[-1] % len(keys)]] = value
    try:
        Template.from_bytes(_craft(header, payload[: len(payload) - payload_cut]))
    except TemplateError:
        pass


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from([e for e in SAMPLE]),
       shape=st.lists(st.integers(-3, 2**70) | st.sampled_from([0, 1, 2**31, 2**61, 2**62]), max_size=4),
       zero_at=st.none() | st.integers(0, 4),
       sizes=st.lists(st.integers(0, 2**64), min_size=3, max_size=3))
def test_crafted_shapes_and_sizes_never_raise_anything_else(sample_bytes, which, shape, zero_at,
                                                           sizes):
    """Huge, zero-sized, inconsistent shapes and sizes: a TemplateError or a load, nothing else."""
    header, payload = _split(sample_bytes)
    e = _entry(header, which)
    if zero_at is not None:  # an empty tensor whose other dimensions may be huge
        shape.insert(zero_at, 0)
    e["shape"] = shape
    for key, v in zip(("free_count", "free_bytes", "sign_bytes"), sizes):
        if v % 3 == 0:  # leave some consistent
            e[key] = v
    try:
        Template.from_bytes(_craft(header, payload))
    except TemplateError:
        pass


# ----------------------------------------------------------------------------- crafted files

def _entry(header, name):
    return next(e for e in header["entries"] if e["name"] == name)


def _crafted_cases():
    def neg_dim(h, p):
        _entry(h, "empty.weight")["shape"] = [-1, -4]
        return h, p

    def larger_than_payload(h, p):
        _entry(h, "conv.weight")["shape"] = [3, 2, 3, 4]  # 72 entries: 9 sign bytes, 7 stored
        return h, p

    def larger_sizes_too(h, p):  # consistent sizes, but they run past the payload
        e = _entry(h, "conv.weight")
        e["shape"] = [30, 2, 3, 3]
        e["sign_bytes"] = (540 + 7) // 8
        return h, p

    def duplicate(h, p):
        _entry(h, "fc2.weight")["name"] = "fc1.weight"
        return h, p

    def absurd(h, p):
        _entry(h, "conv.weight")["shape"] = [10**9, 10**9, 10**9]
        return h, p

    def absurd_dim(h, p):
        _entry(h, "conv.weight")["shape"] = [2**80]
        return h, p

    def empty_but_too_big(h, p):  # no entries, yet numpy cannot shape it
        _entry(h, "empty.weight")["shape"] = [0, 2**61, 2**61]
        return h, p

    def too_many_dims(h, p):
        _entry(h, "empty.weight")["shape"] = [0] * 100
        return h, p

    def bool_dim(h, p):
        _entry(h, "scalar")["shape"] = [True]
        return h, p

    def float_dim(h, p):
        _entry(h, "scalar")["shape"] = [1.0]
        return h, p

    def name_not_string(h, p):
        _entry(h, "scalar")["name"] = 7
        return h, p

    def free_count_lies(h, p):
        _entry(h, "fc2.weight")["free_count"] += 1
        return h, p

    def unknown_free_kind(h, p):
        _entry(h, "fc1.weight")["free"] = "rle"
        return h, p

    def missing_field(h, p):
        del _entry(h, "fc1.weight")["sign_bytes"]
        return h, p

    def payload_bytes_lie(h, p):
        h["payload_bytes"] += 1
        return h, p + b"\0"

    def entries_not_list(h, p):
        h["entries"] = {"a": 1}
        return h, p

    def header_not_object(h, p):
        return [1, 2], p

    def meta_not_object(h, p):
        h["meta"] = "x"
        return h, p

    def wrong_format(h, p):
        h["format"] = 3
        return h, p

    def index_outside_tensor(h, p):
        # fc1.weight (1200 entries) lists its 3 free entries; make the last gap jump past the end
        h2 = json.loads(json.dumps(h))
        e = _entry(h2, "fc1.weight")
        start = sum(x["free_bytes"] + x["sign_bytes"] for x in h2["entries"][: h2["entries"].index(e)])
        listed = bytearray(p[start : start + e["free_bytes"]])
        assert e["free"] == "list" and listed[-1] < 0x80
        listed[-1] = 0x7F  # gap 127: index 1199 + 127 > 1200
        q = p[:start] + bytes(listed) + p[start + e["free_bytes"] :]
        return h2, q

    def run_outside_tensor(h, p):
        # one more free index than the header says: the list holds 4 varints for 3
        e = _entry(h, "fc1.weight")
        start = sum(x["free_bytes"] + x["sign_bytes"] for x in h["entries"][: h["entries"].index(e)])
        q = p[:start] + b"\x00" + p[start:]
        e["free_bytes"] += 1
        h["payload_bytes"] += 1
        return h, q

    def over_long_varint(h, p):
        e = _entry(h, "fc1.weight")
        start = sum(x["free_bytes"] + x["sign_bytes"] for x in h["entries"][: h["entries"].index(e)])
        first = p[start]
        q = p[:start] + bytes([first | 0x80, 0]) + p[start + 1 :]  # the same value in 2 bytes
        e["free_bytes"] += 1
        h["payload_bytes"] += 1
        return h, q

    def padding_bits(h, p):
        e = _entry(h, "fc2.weight")  # 35 entries: a 5-byte mask with 5 padding bits
        start = sum(x["free_bytes"] + x["sign_bytes"] for x in h["entries"][: h["entries"].index(e)])
        q = bytearray(p)
        q[start + e["free_bytes"] - 1] |= 0x80
        return h, bytes(q)

    return [neg_dim, larger_than_payload, larger_sizes_too, duplicate, absurd, absurd_dim,
            empty_but_too_big, too_many_dims, bool_dim, float_dim, name_not_string, free_count_lies, unknown_free_kind,
            missing_field, payload_bytes_lie, entries_not_list, header_not_object, meta_not_object,
            wrong_format, index_outside_tensor, run_outside_tensor, over_long_varint, padding_bits]


@pytest.mark.parametrize("craft", _crafted_cases(), ids=lambda f: f.__name__)
def test_crafted_header_is_a_template_error(sample_bytes, craft):
    header, payload = craft(*_split(sample_bytes))
    with pytest.raises(TemplateError) as err:
        Template.from_bytes(_craft(header, payload))
    assert "\n" not in str(err.value)


def test_crafted_file_unchanged_still_loads(sample_bytes):
    """The crafting helper itself writes valid files (so the cases above test the checks)."""
    assert _same(Template.from_bytes(_craft(*_split(sample_bytes))), SAMPLE)


# ----------------------------------------------------------------------------- format 1

def _format1_signs() -> dict[str, torch.Tensor]:
    """What tests/data/template_format1.polarity holds (written by polarity 0.1's format 1)."""
    def pattern(shape, mul, free=True):
        v = torch.tensor([((mul * i + 1) % 3) - 1 for i in range(int(np.prod(shape)))],
                         dtype=torch.int8).reshape(shape)
        if not free:
            v[v == 0] = 1
        return v
    return {"features.0.weight": pattern((4, 3, 2, 2), 7),
            "classifier.weight": pattern((5, 6), 5, free=False),
            "classifier.bias": pattern((5,), 11)}


def test_format1_file_still_loads(tmp_path):
    f = tm.read_file(DATA / "template_format1.polarity")
    assert f.format == 1 and f.template == Template(_format1_signs())
    assert list(f.template) == ["features.0.weight", "classifier.weight", "classifier.bias"]
    assert f.template.meta["source"] == "legacy-fixture"
    assert f.template.meta["library_version"] == "0.1.0"
    again = tm.read_file(f.template.save(tmp_path / "new.polarity"))  # re-saved: format 2
    assert again.format == 2 and _same(again.template, f.template)


def _format1_file(mutate) -> bytes:
    data = (DATA / "template_format1.polarity").read_bytes()
    (hlen,) = struct.unpack("<I", data[8:12])
    header, payload = json.loads(data[12 : 12 + hlen]), data[12 + hlen :]
    header, payload = mutate(header, payload)
    header["payload_bytes"] = len(payload)
    header["sha256"] = hashlib.sha256(payload).hexdigest()
    h = json.dumps(header).encode()
    return tm.MAGIC_1 + struct.pack("<I", len(h)) + h + payload


def _set(i, key, value):
    def mutate(h, p):
        h["entries"][i][key] = value
        return h, p
    return mutate


@pytest.mark.parametrize("mutate", [
    _set(0, "shape", [-4, 3, 2, 2]),           # negative dimension
    _set(1, "shape", [5, 60]),                 # larger than its runs
    _set(1, "name", "features.0.weight"),      # duplicate name
    _set(0, "shape", [10**9, 10**9]),          # absurd shape
    _set(1, "neg", [13, 4]),                   # a run shifted: different signs in format 1
    _set(2, "free", [17, 9]),                  # a run outside the payload
    _set(0, "neg", [0.0, 6]),                  # offsets must be integers
    _set(0, "free", "x"),
], ids=["neg_dim", "larger", "duplicate", "absurd", "shifted_run", "run_outside", "float", "junk"])
def test_crafted_format1_header_is_a_template_error(mutate):
    with pytest.raises(TemplateError):
        Template.from_bytes(_format1_file(mutate))


def test_format1_crafting_helper_writes_valid_files():
    assert Template.from_bytes(_format1_file(lambda h, p: (h, p))) == Template(_format1_signs())


# ----------------------------------------------------------------------------- paths

def test_loading_a_directory_is_a_template_error(tmp_path):
    with pytest.raises(TemplateError, match="is a directory"):
        Template.load(tmp_path)


def test_saving_onto_a_directory_is_a_template_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(TemplateError, match="is a directory"):
        SAMPLE.save(tmp_path / "d")
    (tmp_path / "file").write_text("x")
    with pytest.raises(TemplateError, match="cannot write"):
        SAMPLE.save(tmp_path / "file" / "t.polarity")  # a parent that is a file


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_a_template_error(tmp_path, sample_bytes):
    p = tmp_path / "t.polarity"
    p.write_bytes(sample_bytes)
    p.chmod(0)
    try:
        with pytest.raises(TemplateError, match="cannot read"):
            Template.load(p)
    finally:
        p.chmod(0o644)


def test_a_newer_format_names_itself(sample_bytes):
    with pytest.raises(TemplateError, match="has format 3; this polarity reads formats 1 and 2"):
        Template.from_bytes(_craft(*_split(sample_bytes), magic=b"PLTMPL\x00\x03"))


def test_empty_and_tiny_files():
    for data in (b"", tm.MAGIC, tm.MAGIC + b"\0\0", tm.MAGIC_1 + b"\0\0\0\0", b"x" * 100):
        with pytest.raises(TemplateError):
            Template.from_bytes(data)
