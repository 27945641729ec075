"""The batched XOR trainer against one-network-at-a-time training, template compliance, shared
initial magnitudes, padding and masking."""
import numpy as np
import pytest
import torch

from polarity.experiments.xor5d import (XorHparams, initial_state, parse_condition, prepare_job,
                                        train_batched, train_single)
from polarity.models.mlp import XORNet

torch.set_num_threads(1)


def _reference(hp, kw, groups, cols, conds, seeds, gi, ci, generator=None, own_stream=True):
    """Train network (group gi, column ci) alone: own XORNet + torch.optim.Adam."""
    (t, n), (_, w), cond = groups[gi], cols[ci], conds[ci]
    dt = getattr(torch, hp.dtype)
    p, tm = initial_state(seeds[t], w, cond, hp.dim)
    net = XORNet(w, hp.dim).to(dt)
    net.load_state_dict({k: torch.from_numpy(v).to(dt) for k, v in p.items()})
    ti = kw["group_trial"][gi]
    x, y = kw["x_train"][ti, :n], kw["y_train"][ti, :n]
    hist = train_single(net, x, y, kw["perms"][gi], {k: torch.from_numpy(v) for k, v in tm.items()},
                        cond.reset, lr=hp.lr, batch_size=hp.batch_size, betas=(hp.beta1, hp.beta2),
                        eps=hp.adam_eps, reset_eps=hp.reset_eps, x_val=kw["x_val"][ti],
                        y_val=kw["y_val"][ti], generator=generator,
                        reset_seed=int(kw["reset_seeds"][gi, ci]) if own_stream else None)
    return net, np.array(hist)


# groups of different n (1, 2 and 4 batches per epoch, partial last batches) and columns of
# different widths (padding) share one program: masks and padding are both exercised
GROUPS = [(0, 20), (0, 40), (1, 40), (1, 100)]


@pytest.mark.parametrize("reset,fused,dim", [("flip", True, 5), ("posCon", True, 5), ("zero", True, 5),
                                             ("posRand", True, 5), ("flip", False, 5), ("posCon", False, 5),
                                             ("posRand", False, 5),
                                             ("flip", True, 3), ("posRand", True, 7)])
def test_batched_equals_one_by_one(reset, fused, dim):
    """dim 5 takes the kernels' unrolled XOR-5D loops, other dims their generic loops.  posRand:
    every network draws from its own stream, so batched and alone agree exactly on the CPU."""
    hp = XorHparams(epochs=6, dtype="float64", reset=reset, dim=dim, lr=0.1 if reset == "posRand" else 0.03)
    cols = [("frozen-sufficient", 7), ("frozen-rand", 12), ("fluid-rand", 12), ("fluid-sufficient", 5)]
    kw, seeds, conds = prepare_job(hp, GROUPS, cols)
    res = train_batched(**kw, check_violations=True, fused=fused)
    assert res.fused == fused
    for gi in range(len(GROUPS)):
        for ci, (_, w) in enumerate(cols):
            net, hist = _reference(hp, kw, GROUPS, cols, conds, seeds, gi, ci)
            got = {"fc1.weight": res.params["fc1.weight"][gi, ci, :w],
                   "fc1.bias": res.params["fc1.bias"][gi, ci, :w],
                   "fc2.weight": res.params["fc2.weight"][gi, ci, :w].unsqueeze(0),
                   "fc2.bias": res.params["fc2.bias"][gi, ci].reshape(1)}
            for name, ref in net.state_dict().items():
                torch.testing.assert_close(got[name], ref, rtol=1e-9, atol=1e-10, msg=f"{name} g{gi} c{ci}")
            # padded units stay exactly zero
            assert torch.all(res.params["fc1.weight"][gi, ci, w:] == 0)
            assert torch.all(res.params["fc2.weight"][gi, ci, w:] == 0)
            assert torch.all(res.params["fc1.bias"][gi, ci, w:] == 0)
            recs = np.stack([res.train_loss[:, gi, ci], res.train_acc[:, gi, ci],
                             res.val_loss[:, gi, ci], res.val_acc[:, gi, ci]], 1)
            np.testing.assert_allclose(recs, hist, rtol=1e-5, atol=1e-6)
    assert int(res.violations.sum()) == 0


def test_float32_close_to_reference_and_fluid_changes_signs():
    hp = XorHparams(epochs=4)
    cols = [("fluid-rand", 16), ("frozen-rand", 16)]
    groups = [(0, 40)]
    kw, seeds, conds = prepare_job(hp, groups, cols)
    res = train_batched(**kw)
    net, hist = _reference(hp, kw, groups, cols, conds, seeds, 0, 0)
    torch.testing.assert_close(res.params["fc1.weight"][0, 0], net.fc1.weight.detach(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(res.val_acc[:, 0, 0].numpy(), hist[:, 3], atol=2e-3)


def test_posrand_frozen_has_no_violations_after_every_step():
    hp = XorHparams(epochs=5, lr=0.1)  # a large rate makes many sign violations
    cols = [("frozen-sufficient", 16), ("frozen-rand", 9), ("fluid-rand", 16)]
    kw, seeds, conds = prepare_job(hp, GROUPS, cols)
    res = train_batched(**kw, check_violations=True, generator=torch.Generator().manual_seed(3))
    assert res.violations.numel() == 5 * 4  # epochs x max batches per epoch
    assert int(res.violations.sum()) == 0
    T1 = kw["templates"]["fc1.weight"].double()
    T2 = kw["templates"]["fc2.weight"].double()
    assert bool(((res.params["fc1.weight"].double() * T1) >= 0).all())
    assert bool(((res.params["fc2.weight"].double() * T2) >= 0).all())
    # the fluid column, at this rate, does change signs against its initial pattern
    init_signs = torch.sign(kw["init"]["fc1.weight"][:, 2])
    assert bool((torch.sign(res.params["fc1.weight"][:, 2]) != init_signs).any())


@pytest.mark.parametrize("width", [3, 17, 64])
def test_conditions_share_initial_magnitudes(width):
    seed = 12345
    states = {c: initial_state(seed, width, parse_condition(c))[0]
              for c in ("frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient")}
    ref = states["fluid-rand"]
    for c, p in states.items():
        for k in ref:
            np.testing.assert_array_equal(np.abs(p[k]), np.abs(ref[k]), err_msg=f"{c} {k}")
    # frozen-rand starts exactly at the init; sufficient flips output weights into compliance
    np.testing.assert_array_equal(states["frozen-rand"]["fc2.weight"], ref["fc2.weight"])
    w1 = states["frozen-sufficient"]["fc1.weight"]
    want = np.sign(w1[:, 0] * w1[:, 1])
    np.testing.assert_array_equal(np.sign(states["frozen-sufficient"]["fc2.weight"][0]), want)
    np.testing.assert_array_equal(states["fluid-sufficient"]["fc2.weight"], states["frozen-sufficient"]["fc2.weight"])


def test_batched_start_shares_magnitudes_across_conditions():
    hp = XorHparams(epochs=1)
    cols = [(c, 10) for c in ("frozen-sufficient", "frozen-rand", "fluid-rand", "fluid-sufficient")]
    kw, _, _ = prepare_job(hp, [(0, 8), (3, 8)], cols)
    for k, v in kw["init"].items():
        a = v.abs()
        for ci in range(1, len(cols)):
            assert torch.equal(a[:, ci], a[:, 0]), k
        assert not torch.equal(a[0], a[1])  # different trials differ


def test_keras_eps_mode_only_moves_eps():
    # Keras' "epsilon hat" = torch's eps / sqrt(1 - beta2^t): with a negligible eps both agree,
    # with eps = 1e-7 they differ (early steps, small gradients)
    hp = XorHparams(epochs=2, dtype="float64", adam_eps=1e-14)
    kw, _, _ = prepare_job(hp, [(0, 40)], [("fluid-rand", 8)])
    a = train_batched(**kw)
    kw["eps_mode"] = "keras"
    b = train_batched(**kw)
    torch.testing.assert_close(a.params["fc1.weight"], b.params["fc1.weight"], rtol=1e-6, atol=1e-8)
    kw["eps"] = 1e-1
    c = train_batched(**kw)
    assert not torch.allclose(b.params["fc1.weight"], c.params["fc1.weight"])


def test_bad_condition_names():
    from polarity.experiments.base import ExperimentError

    for bad in ("frozen-foo", "frozen-rand@nope", "fluid-rand@flip"):
        with pytest.raises(ExperimentError, match="condition|reset"):
            parse_condition(bad)
    assert parse_condition("frozen-rand@flip").reset == "flip"
    assert parse_condition("frozen-rand", "zero").reset == "zero"


def test_threaded_kernels_give_the_serial_numbers():
    """With torch on 2 threads the trainer takes numba's parallel kernels (networks split over
    threads); every network computes exactly as on one thread."""
    hp = XorHparams(epochs=3)
    cols = [("frozen-sufficient", 7), ("frozen-rand", 12), ("fluid-rand", 12)]
    kw, _, _ = prepare_job(hp, GROUPS, cols)
    serial = train_batched(**kw, generator=torch.Generator().manual_seed(1))
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threaded = train_batched(**kw, generator=torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(old)
    for name in serial.params:
        assert torch.equal(serial.params[name], threaded.params[name]), name
    for field in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert torch.equal(getattr(serial, field), getattr(threaded, field)), field
