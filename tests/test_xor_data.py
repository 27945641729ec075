"""The XOR-5D generator (SPEC §4): quadrant balance, the 0.05 gap, labels, noise, nesting,
flooring to multiples of 4, determinism; the Keras-style initialisation."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from polarity.data.xor import GAP, floor4, generate, trial_data
from polarity.experiments.xor5d import epoch_permutations
from polarity.models.mlp import init_params

seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 700), seed=seeds)
def test_quadrant_balance_gap_labels(n, seed):
    x, y = generate(n, seed)
    m = n // 4 * 4
    assert x.shape == (m, 5) and y.shape == (m,) and x.dtype == np.float32
    x1, x2 = x[:, 0], x[:, 1]
    # every coordinate on [-1, 0) or [0.05, 1.05): nothing inside the gap
    for c in (x1, x2):
        assert np.all(((c >= -1) & (c < 0)) | ((c >= GAP - 1e-7) & (c < 1.05 + 1e-6)))
    q = (x1 > 0).astype(int) * 2 + (x2 > 0)
    counts = np.bincount(q, minlength=4)
    assert np.all(counts == m // 4)
    np.testing.assert_array_equal(y, (x1 * x2 > 0).astype(np.float32))


@settings(max_examples=30, deadline=None)
@given(a=st.integers(4, 400), b=st.integers(4, 400), seed=seeds)
def test_nested_prefixes(a, b, seed):
    small, big = sorted((a, b))
    xs, ys = generate(small, seed)
    xb, yb = generate(big, seed)
    np.testing.assert_array_equal(xs, xb[: len(xs)])
    np.testing.assert_array_equal(ys, yb[: len(ys)])
    d = trial_data(seed, big)
    xt, yt = d.train(small)
    np.testing.assert_array_equal(xt, xs)
    # every prefix that is a multiple of 4 is quadrant-balanced
    q = (xb[:, 0] > 0).astype(int) * 2 + (xb[:, 1] > 0)
    for k in range(4, len(q) + 1, 4):
        assert np.all(np.bincount(q[:k], minlength=4) == k // 4)
        if k > 40:
            break


@given(n=st.integers(4, 10_000))
def test_floor4(n):
    assert floor4(n) == n - n % 4 and floor4(n) % 4 == 0


def test_floor4_rejects_small_n():
    with pytest.raises(ValueError, match="at least 4"):
        floor4(3)


def test_noise_dims_and_validation_set():
    d = trial_data(7, 4000)
    noise = d.x_train[:, 2:]
    assert abs(noise.mean() - 1.0) < 0.05 and abs(noise.std() - 1.0) < 0.05
    assert d.x_val.shape == (1000, 5)
    assert not np.array_equal(d.x_val[:10], d.x_train[:10])  # a separate stream
    d2 = trial_data(7, 4000)
    np.testing.assert_array_equal(d.x_val, d2.x_val)  # deterministic
    assert not np.array_equal(trial_data(8, 8).x_train, trial_data(7, 8).x_train)


def test_gaussian_variant():
    x, y = generate(4000, 3, variant="gaussian")
    # centres at +-0.5 with label noise only where points cross an axis
    q = np.array([[1, 1], [-1, -1], [-1, 1], [1, -1]])[np.arange(4000) % 4]
    np.testing.assert_allclose((x[:, :2] * q).mean(0), [0.5, 0.5], atol=0.03)
    np.testing.assert_array_equal(y, (q[:, 0] * q[:, 1] > 0).astype(np.float32))
    with pytest.raises(ValueError, match="unknown XOR variant"):
        generate(8, 0, variant="circles")


@settings(max_examples=20, deadline=None)
@given(seed=seeds, n=st.integers(1, 600))
def test_permutations(seed, n):
    p = epoch_permutations(seed, n, 3)
    assert p.shape == (3, n)
    for row in p:
        np.testing.assert_array_equal(np.sort(row), np.arange(n))
    np.testing.assert_array_equal(p, epoch_permutations(seed, n, 3))


@pytest.mark.parametrize("width", [1, 2, 64])
def test_keras_init(width):
    p = init_params(123, width)
    assert p["fc1.weight"].shape == (width, 5) and p["fc2.weight"].shape == (1, width)
    for k in ("fc1.weight", "fc2.weight"):
        assert np.all(np.abs(p[k]) <= 0.5)  # truncated at two standard deviations of 0.25
    assert np.all(np.abs(p["fc1.bias"]) <= np.sqrt(3 / width))
    assert np.all(np.abs(p["fc2.bias"]) <= np.sqrt(3))
    np.testing.assert_array_equal(p["fc1.weight"], init_params(123, width)["fc1.weight"])


def test_truncated_normal_statistics():
    p = init_params(0, 20000)
    w = p["fc1.weight"].ravel()
    # a normal(0, .25) truncated at +-.5 has sd 0.25 * 0.8796 = 0.2199
    assert abs(w.std() - 0.2199) < 0.003 and abs(w.mean()) < 0.003
    b = p["fc1.bias"]
    assert abs(b.std() - np.sqrt(3 / 20000) / np.sqrt(3)) < 5e-4  # uniform sd = lim / sqrt(3)
