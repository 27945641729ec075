"""The fixed-order sums of the XOR-5D kernels (kernels._sum8, kernels._unit_grads5) against their
definition, written out in Python: eight lanes, lane l adding the entries i = l mod 8 in order,
the lanes added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); padding beyond n ignored."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polarity import _numba

pytestmark = pytest.mark.skipif(not _numba.NUMBA, reason="numba not installed")

if _numba.NUMBA:
    from numba import njit

    from polarity.experiments.xor5d.kernels import _sum8, _unit_grads5

    @njit
    def _dot(X, k, h, n):
        return _sum8(X, k * X.shape[1], h, n, X.dtype.type(0))

    @njit
    def _sum64(p, n):
        return _sum8(p, 0, None, n, 0.0)

    @njit
    def _grads(A, j, db, X, vj, n):
        return _unit_grads5(A, j, db, X, vj, n)


def _lanes(terms, acc):
    s = [acc(0)] * 8
    for i, t in enumerate(terms):
        s[i % 8] = acc(s[i % 8] + t)
    return acc(acc(acc(s[0] + s[1]) + acc(s[2] + s[3])) + acc(acc(s[4] + s[5]) + acc(s[6] + s[7])))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 70), seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_sums_run_in_the_defined_order(n, seed, dtype):
    rng = np.random.default_rng(seed)
    P = max(8, (n + 7) // 8 * 8)  # rows padded to whole blocks, as the kernels' scratch arrays
    X = rng.standard_normal((5, P)).astype(dtype)
    h = rng.standard_normal(P).astype(dtype)
    A = rng.standard_normal((3, P)).astype(dtype)
    db = rng.standard_normal(P).astype(dtype)
    for arr in (X, A):
        arr[:, n:] = 1e30   # padding is never summed
    db[n:] = -1e30
    assert _dot(X, 3, h, n) == _lanes([dtype(X[3, i] * h[i]) for i in range(n)], dtype)
    assert _sum64(X[2].copy(), n) == _lanes([np.float64(X[2, i]) for i in range(n)], np.float64)
    vj = dtype(0.7)
    hh = [dtype(db[i] * vj) if A[1, i] > 0 else dtype(0) for i in range(n)]
    want = (_lanes([dtype(db[i] * max(A[1, i], dtype(0))) for i in range(n)], dtype), _lanes(hh, dtype),
            *[_lanes([dtype(X[k, i] * hh[i]) for i in range(n)], dtype) for k in range(5)])
    assert _grads(A, 1, db, X, vj, n) == want
