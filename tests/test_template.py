import collections

import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st

from polarity import Template, TemplateError
from polarity.template import bind, canonical_name, iter_pairs

from _templates import random_signs


def test_default_selection_is_weights_with_dim_at_least_2(small_net):
    t = Template.random(small_net, seed=0)
    assert list(t) == ["0.weight", "3.weight", "5.weight"]
    tb = Template.random(small_net, seed=0, biases=True)
    assert set(tb) == {n for n, _ in small_net.named_parameters()}
    assert list(Template.random(small_net, seed=0, include="3.*")) == ["3.weight"]
    assert list(Template.random(small_net, seed=0, exclude=["0.*", "5.*"])) == ["3.weight"]


def test_random_is_seeded_balanced_and_signed(small_net):
    a, b, c = (Template.random(small_net, seed=s) for s in (1, 1, 2))
    assert a == b and a != c
    w = a["3.weight"]
    assert w.dtype == torch.int8 and set(w.unique().tolist()) == {-1, 1}
    assert abs(float((w > 0).float().mean()) - 0.5) < 0.1


def test_from_module_signs_and_zero_policy():
    sd = {"w": torch.tensor([[1.5, -2.0, 0.0]]), "fc.bias": torch.tensor([0.3])}
    t = Template.from_module(sd)
    assert list(t) == ["w"] and t["w"].tolist() == [[1, -1, 0]]
    assert Template.from_module(sd, zero=1)["w"].tolist() == [[1, -1, 1]]
    assert Template.from_module(sd, biases=True, include=["*bias"])["fc.bias"].tolist() == [1]


def test_from_init_matches_weights(small_net):
    t = Template.from_init(small_net)
    for name, s in t.items():
        w = dict(small_net.named_parameters())[name]
        assert torch.equal(s, torch.sign(w.detach()).to(torch.int8))
    assert all(v == 1.0 for v in t.agreement(small_net).values())
    assert all(v == 0 for v in t.violations(small_net).values())


def test_agreement_and_violations_count(small_net):
    t = Template.from_init(small_net)
    with torch.no_grad():
        small_net[5].weight[0, :4] *= -1
    assert t.violations(small_net)["5.weight"] == 4
    assert t.agreement(small_net)["5.weight"] == pytest.approx(1 - 4 / small_net[5].weight.numel())


def test_template_is_immutable_through_getitem(small_net):
    t = Template.random(small_net, seed=0)
    before = t["5.weight"]
    t["5.weight"].mul_(-1)
    assert torch.equal(t["5.weight"], before)
    with pytest.raises(TypeError):
        t["5.weight"] = before


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 13), min_size=1, max_size=4), min_size=1, max_size=4),
    free=st.floats(0, 1),
    seed=st.integers(0, 2**31),
)
def test_save_load_round_trip(tmp_path_factory, shapes, free, seed):
    signs = random_signs(shapes, free, seed)
    t = Template(signs, {"source": "test", "note": "odd sizes"})
    path = tmp_path_factory.mktemp("tmpl") / "t.polarity"
    t.save(path)
    u = Template.load(path)
    assert u == t and list(u) == list(t)
    assert u.meta["source"] == "test" and u.meta["library_version"]
    assert all(u[k].dtype == torch.int8 and u[k].shape == t[k].shape for k in t)


@pytest.fixture(scope="module")
def alexnet():
    torch.manual_seed(0)
    return torchvision.models.alexnet()


def test_file_is_one_bit_per_sign(tmp_path, alexnet):
    model = alexnet
    t = Template.from_module(model, biases=True, zero=1)
    path = t.save(tmp_path / "alexnet.polarity")
    float_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size <= float_bytes / 30


@pytest.mark.parametrize("damage", ["truncate", "flip_payload", "bad_magic", "header"])
def test_corrupt_files_give_clear_errors(tmp_path, small_net, damage):
    path = Template.random(small_net, seed=0).save(tmp_path / "t.polarity")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 10]
        match = "truncated"
    elif damage == "flip_payload":
        data[-3] ^= 0xFF
        match = "corrupt"
    elif damage == "bad_magic":
        data[:4] = b"XXXX"
        match = "not a polarity template"
    else:
        data[14] = ord("}")
        match = "corrupt"
    path.write_bytes(bytes(data))
    with pytest.raises(TemplateError, match=match):
        Template.load(path)


def test_missing_file_error(tmp_path):
    with pytest.raises(TemplateError, match="not found"):
        Template.load(tmp_path / "nope.polarity")


@pytest.mark.parametrize("bad", [torch.tensor([[True, False]]), torch.tensor([[0.5, 1.0]]),
                                 torch.tensor([[2, -1]])])
def test_wrong_values_or_dtype_rejected(bad):
    with pytest.raises(TemplateError, match="'w'"):
        Template({"w": bad})


def test_template_of_another_model_is_rejected(small_net):
    other = torch.nn.Sequential(collections.OrderedDict(fc=torch.nn.Linear(3, 3)))
    t = Template.random(other, seed=0)
    with pytest.raises(TemplateError, match="match no parameter"):
        t.check(small_net)
    t2 = Template({"5.weight": torch.ones(3, 16)})
    with pytest.raises(TemplateError, match=r"5\.weight.*\(3, 16\).*\(4, 16\)"):
        t2.violations(small_net)


def _alexnet_10(head):
    """A 10-class target; adapting needs its parameter names and shapes only, not values."""
    with torch.device("meta"):
        m = torchvision.models.alexnet()
        if head == "replace":
            m.classifier[6] = torch.nn.Linear(4096, 10)
            return m
        return torch.nn.Sequential(m, torch.nn.ReLU(), torch.nn.Linear(1000, 10))


def test_imagenet_shaped_template_maps_onto_10_class_model_replace_head(alexnet):
    source = Template.from_module(alexnet)
    target = _alexnet_10("replace")
    with pytest.raises(TemplateError, match=r"classifier\.6\.weight.*\(1000, 4096\).*\(10, 4096\)"):
        source.adapt(target)
    t = source.adapt(target, drop="classifier.6.*", seed=0)
    assert set(t) == set(source)  # the new head gets random signs
    assert t.meta["adapted"]["random"] == ["classifier.6.weight"]
    for k in source:
        if k != "classifier.6.weight":
            assert torch.equal(t[k], source[k])
    free = source.adapt(target, drop="classifier.6.*", missing="free")
    assert "classifier.6.weight" not in free
    with pytest.raises(TemplateError, match="no entry"):
        source.adapt(target, drop="classifier.6.*", missing="error")


def test_imagenet_shaped_template_maps_onto_appended_head(alexnet):
    source = Template.from_module(alexnet)
    target = _alexnet_10("append")
    with pytest.raises(TemplateError, match="match no parameter"):
        source.adapt(target)
    t = source.adapt(target, rename=lambda k: "0." + k, seed=0)
    assert t.meta["adapted"]["random"] == ["2.weight"]
    assert torch.equal(t["0.features.0.weight"], source["features.0.weight"])
    t.check(target)


def test_from_module_warns_on_non_finite_weights():
    nan, inf = float("nan"), float("inf")
    sd = {"a.weight": torch.tensor([[1.0, nan, -inf, 0.0]]), "b.weight": torch.ones(2, 2)}
    with pytest.warns(RuntimeWarning, match=r"'a\.weight' \(1 NaN, 1 infinite\)") as rec:
        t = Template.from_module(sd, zero=1)
    assert "b.weight" not in str(rec[0].message)
    assert t["a.weight"].tolist() == [[1, 0, -1, 1]]  # NaN: no sign, left free (not `zero`)


def test_from_module_keeps_the_sign_of_tiny_float64_weights():
    t = Template.from_module({"w": torch.tensor([[1e-320, -1e-320]], dtype=torch.float64)})
    assert t["w"].tolist() == [[1, -1]]


def test_violations_and_agreement_count_nan_and_inf():
    nan, inf = float("nan"), float("inf")
    t = Template({"w": torch.tensor([[1, 1, -1, 1, -1, 0]])})
    w = {"w": torch.tensor([[nan, inf, inf, 0.5, -inf, nan]])}
    # NaN under +1: a violation; +inf under +1 keeps the sign; +inf under -1 violates;
    # NaN under 0 is free
    assert t.violations(w) == {"w": 2}
    assert t.agreement(w)["w"] == pytest.approx(3 / 5)  # inf, 0.5, -inf agree; NaN and inf don't
    all_nan = {"w": torch.full((1, 6), nan)}
    assert t.violations(all_nan) == {"w": 5} and t.agreement(all_nan) == {"w": 0.0}


# ----------------------------------------------------------------------------- names and identity

def test_wrapper_prefixes_are_recognised_both_ways(small_net):
    t = Template.random(small_net, seed=0)
    for wrapped in (torch.nn.DataParallel(small_net), torch.compile(small_net),
                    torch.compile(torch.nn.DataParallel(small_net))):
        t.check(wrapped)
        assert [p for _, p, _ in iter_pairs(t, wrapped)] == [small_net[i].weight for i in (0, 3, 5)]
        back = Template.random(wrapped, seed=0)  # its names carry the prefixes
        assert list(back) != list(t)
        assert list(back.violations(small_net).values()) == list(t.violations(wrapped).values())
    assert canonical_name("module._orig_mod.features.0.weight") == "features.0.weight"
    assert canonical_name("encoder._orig_mod.fc.weight") == "encoder.fc.weight"
    assert canonical_name("module") == "module"


def test_a_name_that_matches_nothing_still_says_so(small_net):
    t = Template({"_orig_mod.9.weight": torch.ones(4, 16)})
    with pytest.raises(TemplateError, match=r"\['_orig_mod\.9\.weight'\] match no parameter"):
        t.check(torch.compile(small_net))


class _TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(10, 6)
        self.hidden = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 10, bias=False)
        self.out.weight = self.embed.weight


def test_tied_parameters_are_constrained_once_by_identity():
    m = _TiedLM()
    from_sd = Template.from_module(m.state_dict())
    assert set(from_sd) == {"embed.weight", "hidden.weight", "out.weight"}
    assert list(Template.from_module(m)) == ["embed.weight", "hidden.weight"]
    pairs = list(iter_pairs(from_sd, m))
    assert [n for n, _, _ in pairs] == ["embed.weight", "hidden.weight"]
    assert bind(from_sd, m)[0].entries == ("embed.weight", "out.weight")
    only_out = Template({"out.weight": from_sd["out.weight"]})
    assert [(n, p) for n, p, _ in iter_pairs(only_out, m)] == [("embed.weight", m.embed.weight)]
    with torch.no_grad():
        m.embed.weight[0, 0] *= -1
    assert from_sd.violations(m) == {"embed.weight": 1, "hidden.weight": 0, "out.weight": 1}


def test_tied_names_with_different_signs_are_an_error():
    m = _TiedLM()
    signs = dict(Template.from_module(m.state_dict()).sign_tensors())
    signs["out.weight"] = signs["out.weight"].clone()
    signs["out.weight"][:2] *= -1
    with pytest.raises(TemplateError, match=r"'embed\.weight' and 'out\.weight' name one tied "
                                            r"parameter \('embed\.weight'\).*different signs at 12"):
        Template(signs).check(m)


def test_adapt_covers_a_tied_parameter_through_either_name():
    m = _TiedLM()
    t = Template.random(m, seed=0).rename({"embed.weight": "out.weight"})
    adapted = t.adapt(m, missing="error")
    assert set(adapted) == {"out.weight", "hidden.weight"}


def test_templates_record_their_selection_rule(small_net):
    t = Template.from_module(small_net, exclude="5.*", biases=True)
    assert t.meta["selection"] == {"include": None, "exclude": ["5.*"], "biases": True}
    assert Template.random(small_net, seed=0).meta["selection"]["biases"] is False
