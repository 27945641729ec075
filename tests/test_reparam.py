import pytest
import torch

from polarity import Template
from polarity.reparam import reparametrize, unreparametrize


@pytest.mark.parametrize("fn", ["abs", "softplus", "exp"])
def test_reparametrised_weights_keep_template_signs_through_training(small_net, fn):
    t = Template.random(small_net, seed=0)
    mags = {n: p.detach().abs().clone() for n, p in small_net.named_parameters() if n in t}
    names = reparametrize(small_net, t, fn=fn)
    assert sorted(names) == sorted(t)
    for n in t:  # magnitudes kept, signs from the template
        weight = small_net.get_submodule(n.rsplit(".", 1)[0]).weight
        assert torch.allclose(weight.abs(), mags[n], rtol=1e-4, atol=1e-6)
        assert torch.all(weight * t[n] >= 0)
    opt = torch.optim.Adam(small_net.parameters(), lr=0.3)
    for _ in range(20):
        opt.zero_grad()
        small_net(torch.randn(8, 3, 8, 8)).pow(2).sum().backward()
        opt.step()
    unreparametrize(small_net)
    assert sum(t.violations(small_net).values()) == 0
    assert {n for n, _ in small_net.named_parameters()} == {"0.weight", "0.bias", "3.weight", "3.bias",
                                                           "5.weight", "5.bias"}


def test_unknown_fn(small_net):
    with pytest.raises(ValueError, match="unknown magnitude function 'relu'"):
        reparametrize(small_net, Template.random(small_net, seed=0), fn="relu")
