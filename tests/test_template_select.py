"""Name patterns (include, exclude, drop) match the names a template or model would have without
the components wrappers add (``_orig_mod.`` of torch.compile, a leading ``module.`` of DDP): the
same normalisation that ``bind`` uses to match entries to parameters."""
import pytest
import torch
from torch import nn

from polarity import Template
from polarity.template import canonical_name, select_names


def _net(head=2):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, head))


def test_adapt_drops_by_plain_names_a_template_saved_from_a_compiled_model(tmp_path):
    compiled = torch.compile(_net())              # names: _orig_mod.0.weight, _orig_mod.2.weight
    saved = Template.from_module(compiled)
    assert set(saved) == {"_orig_mod.0.weight", "_orig_mod.2.weight"}
    saved.save(tmp_path / "t.polarity")
    t = Template.load(tmp_path / "t.polarity").adapt(_net(head=3), drop="2.*", seed=0)
    assert t.meta["adapted"] == {"random": ["2.weight"]}
    assert torch.equal(t["_orig_mod.0.weight"], saved["_orig_mod.0.weight"])
    assert "_orig_mod.2.weight" not in t
    # the stored names still match too
    t2 = saved.adapt(_net(head=3), drop="_orig_mod.2.*", seed=0)
    assert t2.meta["adapted"] == {"random": ["2.weight"]}


@pytest.mark.parametrize("wrap", [torch.compile, lambda m: nn.ModuleDict({"module": m})])
def test_include_and_exclude_see_names_without_wrapper_prefixes(wrap):
    wrapped = wrap(_net())
    assert list(Template.from_module(wrapped, exclude="2.*")) == \
        [n for n, _ in wrapped.named_parameters() if canonical_name(n) == "0.weight"]
    assert select_names(dict(wrapped.named_parameters()), include="0.*") == \
        list(Template.from_module(wrapped, include=["0.*"]))
    t = Template.from_module(wrapped)
    assert [canonical_name(k) for k in t.select(exclude="0.*")] == ["2.weight"]
    assert [canonical_name(k) for k in t.select(include="0.weight")] == ["0.weight"]
