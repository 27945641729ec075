"""The batched XOR trainer against one-network-at-a-time training, template compliance, shared
initial magnitudes, padding and masking."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from polarity.experiments.xor5d import (XorHparams, initial_state, parse_condition, prepare_job,
                                        train_batched, train_single)
from polarity.models.mlp import XORNet

torch.set_num_threads(1)


def _reference(hp, job, groups, cols, conds, seeds, gi, ci):
    """Train network (group gi, column ci) alone: own XORNet + torch.optim.Adam + Freezer."""
    (t, n), (_, w), cond = groups[gi], cols[ci], conds[ci]
    dt = getattr(torch, hp.dtype)
    p, tm = initial_state(seeds[t], w, cond, hp.dim)
    net = XORNet(w, hp.dim).to(dt)
    net.load_state_dict({k: torch.from_numpy(v).to(dt) for k, v in p.items()})
    ti = job.group_trial[gi]
    x, y = job.x_train[ti, :n], job.y_train[ti, :n]
    hist = train_single(net, x, y, job.perms[gi], {k: torch.from_numpy(v) for k, v in tm.items()},
                        cond.reset, lr=hp.lr, batch_size=hp.batch_size, betas=(hp.beta1, hp.beta2),
                        eps=hp.adam_eps, reset_eps=hp.reset_eps, x_val=job.x_val[ti],
                        y_val=job.y_val[ti], reset_seed=int(job.reset_seeds[gi, ci]))
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
    job, seeds, conds = prepare_job(hp, GROUPS, cols)
    res = train_batched(job, check_violations=True, fused=fused)
    assert res.fused == fused
    for gi in range(len(GROUPS)):
        for ci, (_, w) in enumerate(cols):
            net, hist = _reference(hp, job, GROUPS, cols, conds, seeds, gi, ci)
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
    job, seeds, conds = prepare_job(hp, groups, cols)
    res = train_batched(job)
    net, hist = _reference(hp, job, groups, cols, conds, seeds, 0, 0)
    torch.testing.assert_close(res.params["fc1.weight"][0, 0], net.fc1.weight.detach(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(res.val_acc[:, 0, 0].numpy(), hist[:, 3], atol=2e-3)


def test_posrand_frozen_has_no_violations_after_every_step():
    hp = XorHparams(epochs=5, lr=0.1)  # a large rate makes many sign violations
    cols = [("frozen-sufficient", 16), ("frozen-rand", 9), ("fluid-rand", 16)]
    job, seeds, conds = prepare_job(hp, GROUPS, cols)
    res = train_batched(job, check_violations=True)
    assert res.violations.numel() == 5 * 4  # epochs x max batches per epoch
    assert int(res.violations.sum()) == 0
    T1 = job.templates["fc1.weight"].double()
    T2 = job.templates["fc2.weight"].double()
    assert bool(((res.params["fc1.weight"].double() * T1) >= 0).all())
    assert bool(((res.params["fc2.weight"].double() * T2) >= 0).all())
    # the fluid column, at this rate, does change signs against its initial pattern
    init_signs = torch.sign(job.init["fc1.weight"][:, 2])
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
    job, _, _ = prepare_job(hp, [(0, 8), (3, 8)], cols)
    for k, v in job.init.items():
        a = v.abs()
        for ci in range(1, len(cols)):
            assert torch.equal(a[:, ci], a[:, 0]), k
        assert not torch.equal(a[0], a[1])  # different trials differ


def test_keras_eps_mode_only_moves_eps():
    # Keras' "epsilon hat" = torch's eps / sqrt(1 - beta2^t): with a negligible eps both agree,
    # with eps = 1e-7 they differ (early steps, small gradients)
    hp = XorHparams(epochs=2, dtype="float64", adam_eps=1e-14)
    job, _, _ = prepare_job(hp, [(0, 40)], [("fluid-rand", 8)])
    a = train_batched(job)
    job = dataclasses.replace(job, eps_mode="keras")
    b = train_batched(job)
    torch.testing.assert_close(a.params["fc1.weight"], b.params["fc1.weight"], rtol=1e-6, atol=1e-8)
    c = train_batched(dataclasses.replace(job, eps=1e-1))
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
    job, _, _ = prepare_job(hp, GROUPS, cols)
    serial = train_batched(job)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        threaded = train_batched(job)
    finally:
        torch.set_num_threads(old)
    for name in serial.params:
        assert torch.equal(serial.params[name], threaded.params[name]), name
    for field in ("train_loss", "train_acc", "val_loss", "val_acc"):
        assert torch.equal(getattr(serial, field), getattr(threaded, field)), field


@pytest.mark.parametrize("kernels", [True, False])
@pytest.mark.parametrize("freezer_numba", [True, False])
def test_a_freezer_draws_what_the_batched_trainer_draws(kernels, freezer_numba, monkeypatch):
    """One seed rule (seeds.parameter_step_seed): a Freezer seeded with a network's
    ``reset_seeds[g, c]`` resets that network's violating entries, after the same step, to the
    very values the batched trainer's reset gives it (numba kernel or torch path), bit for bit."""
    from polarity import _numba
    from polarity.experiments.xor5d.trainer import _Buffers, _Resetter
    from polarity.freeze import Freezer
    from polarity.template import Template

    if (kernels or freezer_numba) and not _numba.NUMBA:
        pytest.skip("numba not installed")
    hp = XorHparams(epochs=1, reset="posRand")
    cols = [("frozen-sufficient", 7), ("frozen-rand", 12), ("fluid-rand", 12)]
    job, _, _ = prepare_job(hp, GROUPS, cols)
    buf = _Buffers(job.init)
    W1T, _, w2, _ = buf.net
    T1 = job.templates["fc1.weight"].transpose(2, 3).float()
    T2 = job.templates["fc2.weight"].float()
    W1T.copy_(-W1T)  # every constrained entry violates its template
    w2.copy_(-w2)
    before1, before2 = W1T.transpose(2, 3).clone(), w2.clone()
    step = 37
    _Resetter(buf, job, kernels=kernels)(np.full(len(GROUPS), step, dtype=np.int64))
    assert bool(((W1T * T1) >= 0).all() and ((w2 * T2) >= 0).all())
    monkeypatch.setattr(_numba, "AVAILABLE", freezer_numba)
    for gi in range(len(GROUPS)):
        for ci, (cond, w) in enumerate(cols):
            if cond.startswith("fluid"):
                continue
            net = XORNet(w, hp.dim)
            with torch.no_grad():
                net.fc1.weight.copy_(before1[gi, ci, :w])
                net.fc2.weight.copy_(before2[gi, ci, :w].unsqueeze(0))
            tmpl = Template({"fc1.weight": job.templates["fc1.weight"][gi, ci, :w],
                             "fc2.weight": job.templates["fc2.weight"][gi, ci, :w].unsqueeze(0)})
            f = Freezer(net, tmpl, reset="posRand", eps=hp.reset_eps, seed=int(job.reset_seeds[gi, ci]))
            f.load_state_dict({**f.state_dict(), "steps": step - 1})
            assert f.project(sync=True) == 6 * w  # every entry of both kernels was reset
            assert torch.equal(net.fc1.weight.detach(), W1T[gi, ci, :, :w].t()), (gi, ci)
            assert torch.equal(net.fc2.weight.detach()[0], w2[gi, ci, :w]), (gi, ci)


def test_a_job_checks_its_shapes():
    hp = XorHparams(epochs=1)
    job, _, _ = prepare_job(hp, [(0, 8), (1, 8)], [("frozen-rand", 4), ("fluid-rand", 4)])
    for bad, msg in [(dict(widths=(4,)), "one entry per column"), (dict(group_n=(8,)), "one entry per group"),
                     (dict(reset_seeds=job.reset_seeds[:1]), "reset_seeds"), (dict(eps=0.0), "eps"),
                     (dict(eps_mode="tf"), "eps_mode"), (dict(column_reset=("nope", None)), "nope")]:
        with pytest.raises(Exception, match=msg):
            dataclasses.replace(job, **bad)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.float64]))
def test_the_sign_switch_kernel_records_what_torch_records(data, dtype):
    """The fused path's sign-switch record (numba, int8 signs kept between epochs) gives the
    torch ops' fractions bit for bit: zeros of either sign, NaN (sign 0, as torch.sign has it),
    tiny and infinite weights."""
    from polarity import _numba
    from polarity.experiments.xor5d.trainer import _Buffers, _SignSwitch

    if not _numba.NUMBA:
        pytest.skip("numba not installed")
    hp = XorHparams(epochs=1, dtype=np.dtype(dtype).name)
    job, _, _ = prepare_job(hp, [(0, 8), (1, 8)], [("frozen-rand", 7), ("fluid-rand", 12)])
    bufs = [_Buffers(job.init) for _ in range(2)]
    recs = [_SignSwitch(b, job.widths, 3, fused=f) for b, f in zip(bufs, (True, False))]
    values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-30, -1e-30, np.nan, np.inf, -np.inf]) | st.floats(width=32)
    for e in range(3):
        w = torch.from_numpy(data.draw(arrays(dtype, bufs[0].flat.shape, elements=values)))
        for b, r in zip(bufs, recs):
            b.flat.copy_(w)
            r.record(e)
    assert recs[0].fractions.numpy().tobytes() == recs[1].fractions.numpy().tobytes()
