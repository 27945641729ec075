"""Templates in safetensors: any safetensors tool reads the packed signs, both formats load
through Template.load, about one bit per sign, and every malformed file is a TemplateError."""
import json
import struct

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st
from safetensors.numpy import load_file, save

from polarity import Template, TemplateError
from polarity.template import read_file

from _templates import random_signs, sample_template


SAMPLE = sample_template({"selection": {"include": None, "exclude": None, "biases": True}})


def _same(a: Template, b: Template) -> bool:
    def meta(t):
        return {k: v for k, v in t.meta.items() if k != "library_version"}
    return a == b and list(a) == list(b) and meta(a) == meta(b)


def test_round_trip_and_the_encodings_chosen(tmp_path):
    f = read_file(SAMPLE.save(tmp_path / "t.safetensors"))
    assert _same(f.template, SAMPLE) and f.format == "safetensors"
    assert f.encodings == {"conv.weight": "none", "fc1.weight": "index", "fc2.weight": "mask",
                           "empty.weight": "none", "scalar": "none"}


def test_any_safetensors_tool_reads_the_signs(tmp_path):
    path = SAMPLE.save(tmp_path / "t.safetensors")
    arrays = load_file(str(path))
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        md = f.metadata()
    assert md["format"] == "polarity-template"
    assert json.loads(md["selection"]) == SAMPLE.meta["selection"]
    for e in json.loads(md["entries"]):
        name, shape = e["name"], e["shape"]
        assert arrays[name].dtype == np.uint8
        n = int(np.prod(shape))
        neg = np.unpackbits(arrays[name], count=n, bitorder="little").astype(bool)
        signs = np.where(neg, -1, 1).astype(np.int8)
        if e["free"] == "mask":
            signs[np.unpackbits(arrays[name + ":free"], count=n, bitorder="little") == 1] = 0
        elif e["free"] == "index":
            signs[arrays[name + ":free"]] = 0
        assert np.array_equal(signs.reshape(shape), SAMPLE[name].numpy())


def test_both_formats_load_whatever_the_suffix(tmp_path):
    a = SAMPLE.save(tmp_path / "a.safetensors")
    b = SAMPLE.save(tmp_path / "b.polarity")
    assert _same(Template.load(a), Template.load(b))
    moved = tmp_path / "template.bin"
    moved.write_bytes(a.read_bytes())
    assert Template.load(moved) == SAMPLE


def test_about_one_bit_per_sign(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.alexnet()
    t = Template.from_module(model, biases=True, zero=1)
    path = t.save(tmp_path / "alexnet.safetensors")
    assert path.stat().st_size * 8 / t.numel() < 1.001
    signs = t.sign_tensors()  # a few zeros cost a few bytes (an index tensor, not a second mask)
    signs["features.0.weight"] = signs["features.0.weight"].clone()
    signs["features.0.weight"].view(-1)[:5] = 0
    u = Template(signs)
    f = read_file(u.save(tmp_path / "zeros.safetensors"))
    assert f.encodings["features.0.weight"] == "index" and f.template == u
    assert f.file_bytes - path.stat().st_size < 100


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 13), min_size=0, max_size=3), min_size=1,
                       max_size=4),
       free=st.floats(0, 1), seed=st.integers(0, 2**31))
def test_round_trip_property(tmp_path_factory, shapes, free, seed):
    t = Template(random_signs(shapes, free, seed), {"source": "test"})
    path = tmp_path_factory.mktemp("st") / "t.safetensors"
    assert _same(Template.load(t.save(path)), t)


# ----------------------------------------------------------------------------- malformed files

def _rewrite(path, edit_arrays=None, edit_meta=None, digest=True):
    """Rewrite a template's safetensors file with edited tensors / metadata; by default the
    digest is recomputed, so the checks behind it are reached."""
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        md = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    if edit_arrays:
        edit_arrays(arrays)
    if edit_meta:
        edit_meta(md)
    if digest:
        import hashlib
        h = hashlib.sha256()
        for e in json.loads(md["entries"]):
            for key in (e["name"], e["name"] + ":free"):
                if key in arrays:
                    h.update(arrays[key].tobytes())
        md["sha256"] = h.hexdigest()
    path.write_bytes(save(arrays, metadata=md))


def _set(key, value):
    def edit(d):
        d[key] = value
    return edit


def _entries(fn):
    def edit(md):
        entries = json.loads(md["entries"])
        fn(entries)
        md["entries"] = json.dumps(entries)
    return edit


CASES = {
    "not a template": (dict(edit_meta=_set("format", "pt")), "not a polarity template"),
    "newer layout": (dict(edit_meta=_set("polarity_format", "9")), "layout '9'"),
    "entries not JSON": (dict(edit_meta=_set("entries", "[{"), digest=False),
                         "'entries' is not JSON"),
    "meta not an object": (dict(edit_meta=_set("meta", "[1]")), "'meta' is not an object"),
    "bad shape": (dict(edit_meta=_entries(lambda e: e[0].update(shape=[-1, 2]))), "has shape"),
    "duplicate name": (dict(edit_meta=_entries(lambda e: e.append(dict(e[0])))), "duplicate"),
    "unknown free": (dict(edit_meta=_entries(lambda e: e[0].update(free="rle"))), "free="),
    "extra tensor": (dict(edit_arrays=lambda a: a.update(extra=np.zeros(1, np.uint8))),
                     r"unexpected: \['extra'\]"),
    "missing tensor": (dict(edit_arrays=lambda a: a.pop("fc2.weight:free")),
                       r"missing: \['fc2.weight:free'\]"),
    "wrong dtype": (dict(edit_arrays=lambda a: a.update({"scalar": np.zeros(1, np.int8)})),
                    "tensor 'scalar'.*expected dtype U8"),
    "wrong length": (dict(edit_arrays=lambda a: a.update({"scalar": np.zeros(2, np.uint8)})),
                     r"expected dtype U8 and shape \[1\]"),
    "checksum": (dict(edit_arrays=lambda a: a["conv.weight"].__setitem__(0, 7), digest=False),
                 "checksum mismatch"),
    "padding bits": (dict(edit_arrays=lambda a: a["scalar"].__setitem__(0, 0b11)),
                     "non-zero padding bits"),
    "signed free entry": (dict(edit_arrays=lambda a: a["fc1.weight"].__setitem__(
        slice(None), 0xFF)), "free entry has its sign bit set"),
    "index out of range": (dict(edit_arrays=lambda a: a["fc1.weight:free"].__setitem__(2, 1200)),
                           "not increasing inside"),
    "index repeated": (dict(edit_arrays=lambda a: a["fc1.weight:free"].__setitem__(1, 94)),
                       "not increasing inside"),
    "mask count": (dict(edit_arrays=lambda a: a["fc2.weight:free"].__setitem__(0, 0)),
                   "free mask does not hold"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_files_are_template_errors(tmp_path, case):
    path = SAMPLE.save(tmp_path / "t.safetensors")
    kwargs, match = CASES[case]
    _rewrite(path, **kwargs)
    with pytest.raises(TemplateError, match=match):
        Template.load(path)


@pytest.mark.parametrize("cut", [4, 40, -3])
def test_truncated_or_garbled_files_are_template_errors(tmp_path, cut):
    path = SAMPLE.save(tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(TemplateError):
        Template.load(path)
    bad = bytearray(data)
    bad[9:12] = b"\xff\xfe\x00"
    path.write_bytes(bytes(bad))
    with pytest.raises(TemplateError, match="corrupt"):
        Template.load(path)
    path.write_bytes(struct.pack("<Q", 10**9) + data[8:])
    with pytest.raises(TemplateError, match="does not fit"):
        Template.load(path)


def test_a_model_state_dict_in_safetensors_is_not_a_template(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(save({"w": np.ones((2, 2), np.float32)}))
    with pytest.raises(TemplateError, match="not a polarity template"):
        Template.load(path)


def _raw_safetensors(tensors: dict[str, tuple[str, list[int], bytes]], md: dict) -> bytes:
    """A safetensors file written by hand: name -> (dtype, shape, bytes), in that order, and
    any metadata (values of any JSON type, as a crafted file may hold)."""
    header, body = {"__metadata__": md}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(body), len(body) + len(data)]}
        body += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


def _crafted(entries, tensors) -> bytes:
    import hashlib
    h = hashlib.sha256()
    for key in tensors:
        h.update(tensors[key][2])
    md = {"format": "polarity-template", "polarity_format": "1", "entries": json.dumps(entries),
          "selection": "null", "meta": "{}", "sha256": h.hexdigest()}
    return _raw_safetensors(tensors, md)


def test_an_entry_cannot_read_another_entrys_free_mask_as_its_signs(tmp_path):
    """Issue 21 item 14: an entry 'a:free' that names entry a's 2-byte free mask as its own sign
    tensor read the zero padding as +1 for 48 of its 64 signs."""
    entries = [{"name": "a:free", "shape": [64], "free": "none"},
               {"name": "a", "shape": [16], "free": "mask", "free_count": 3}]
    tensors = {"a:free": ("U8", [2], bytes([0b0000_1101, 0])), "a": ("U8", [2], bytes([0b0000_0010, 0]))}
    path = tmp_path / "crafted.safetensors"
    path.write_bytes(_crafted(entries, tensors))
    with pytest.raises(TemplateError, match="tensor 'a:free' is claimed by two entries"):
        Template.load(path)


def test_every_tensor_holds_exactly_the_bytes_of_its_shape(tmp_path):
    """A tensor whose data range is shorter than its dtype and shape promise is refused by
    polarity itself, whatever the safetensors library checks."""
    from polarity.template.safetensors_io import _check_ranges

    ok = {"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
          "b": {"dtype": "I32", "shape": [3], "data_offsets": [2, 14]}}
    _check_ranges(ok, 14, "f")
    with pytest.raises(TemplateError, match="'b'.*12 bytes.*holds 8"):
        _check_ranges({**ok, "b": {**ok["b"], "data_offsets": [2, 10]}}, 14, "f")
    with pytest.raises(TemplateError, match="overlap"):
        _check_ranges({**ok, "b": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}, 14, "f")
    with pytest.raises(TemplateError, match="past the end"):
        _check_ranges(ok, 13, "f")


def test_a_layout_number_that_is_not_a_string_says_so(tmp_path):
    path = SAMPLE.save(tmp_path / "t.safetensors")
    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen])
    header["__metadata__"]["polarity_format"] = 1
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data[8 + hlen:])
    with pytest.raises(TemplateError) as e:
        Template.load(path)
    assert "the number 1" in str(e.value) and 'the string "1"' in str(e.value)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                     max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(where=st.sampled_from(["tensor", "entry", "metadata"]), pick=st.integers(0, 10**6),
       field=st.sampled_from(["dtype", "shape", "data_offsets", "name", "free", "free_count", "entries", "meta",
                              "selection", "library_version", "sha256"]),
       value=_JSON, resign=st.booleans())
def test_any_json_anywhere_in_the_header_is_a_template_error(where, pick, field, value, resign):
    """A crafted header may hold any JSON in any field (a list as a tensor's dtype used to be a
    TypeError): loading gives a Template or a TemplateError, nothing else, also when the file's
    checksum is made to match."""
    import hashlib

    data = SAMPLE.to_safetensors()
    (hlen,) = struct.unpack("<Q", data[:8])
    header, body = json.loads(data[8:8 + hlen]), data[8 + hlen:]
    md = header["__metadata__"]
    if where == "tensor":
        header[sorted(k for k in header if k != "__metadata__")[pick % (len(header) - 1)]][field] = value
    elif where == "entry":
        entries = json.loads(md["entries"])
        entries[pick % len(entries)][field] = value
        md["entries"] = json.dumps(entries)
    else:
        md[field] = value if pick % 2 else json.dumps(value)
    if resign and isinstance(md.get("entries"), str):
        try:
            names = [k for e in json.loads(md["entries"]) for k in (e["name"], f"{e['name']}:free")]
            ranges = [header[k]["data_offsets"] for k in names if k in header]
            md["sha256"] = hashlib.sha256(b"".join(body[r[0]:r[1]] for r in ranges)).hexdigest()
        except (ValueError, TypeError, KeyError, IndexError):
            pass  # a header too broken to sign: loaded unsigned
    h = json.dumps(header).encode()
    try:
        Template.from_bytes(struct.pack("<Q", len(h)) + h + body)
    except TemplateError:
        pass
