"""The fused CPU kernels of the batched XOR-5D trainer (numba): training step, validation, reset,
the epoch's train loss and sign-switch record.

One call of ``step_serial``/``step_parallel`` runs one optimizer step of every network of a job:
the forward pass, the hand-written backward pass of the batch-mean BCE and the Adam update.
``val_serial``/``val_parallel`` run every network's validation pass, ``reset_nets`` the
Freeze-SGD reset (the rule of ``polarity.freeze.numba_reset``, each network on its own posRand
stream).  Layout, vectorisation and the float32 exp/log: docs/xor5d.md.

Parameters live in a "transposed" layout: fc1.weight as ``w1t [G, C, d, Hp]``, ``b1`` and
``w2 [G, C, Hp]``, ``b2 [G, C]``; for one network (g, c), ``w1t[g, c]`` is a C-contiguous
``[d, Hp]`` matrix whose rows run over the hidden units, which is what the kernels vectorise over.
They are views of flat buffers that Adam updates block by block.

Arguments come in plain tuples of arrays, unpacked into named locals at the top of each kernel
(numba's dispatcher types a namedtuple argument in Python, about 1 µs per call and argument,
which the per-step calls would notice):

* ``net``, ``grad`` = ``(w1t, b1, w2, b2)``: every network's parameters / their gradients
* ``flat`` = ``(params, m, v, grad, offs)``: the flat buffers behind ``net`` and ``grad``, Adam's
  moments, and the block offsets (block b is ``offs[b]:offs[b + 1]``, each group's slice of it
  contiguous)
* ``batch`` = ``(x, y, rows, count)``: every trial's training data flattened (``[T * n_max, d]``,
  ``[T * n_max]``) and one step's batches: group g trains on rows ``rows[g, :count[g]]``
  (``count[g] == 0``: it has no batch left this epoch and sits out)
* ``scalars``: the step's :data:`ADAM_SCALARS`, one numpy record per group
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..._numba import f32_from_bits, f64_from_bits
from ...freeze.numba_reset import reset_value
from ...seeds import mix32


class Scratch(NamedTuple):
    """Per-thread work arrays of one group's step (B: batch size)."""

    xT: np.ndarray  # the gathered batch, [d, B]
    yb: np.ndarray  # its labels [B]
    A: np.ndarray   # pre-activations [Hp, B]
    zb: np.ndarray  # logits [B]
    db: np.ndarray  # d(mean BCE)/d(logit) [B]
    tb: np.ndarray  # exp(-|z|) [B]
    H: np.ndarray   # d(mean BCE)/d(pre-activation) of one unit [B]
    R: np.ndarray   # d(mean BCE)/d(logit) x relu(pre-activation) of one unit [B]


# The Adam scalars of one (epoch, step, group), computed in float64 on the host as
# torch.optim.Adam does, stored in the parameter dtype: a structured record per group.
ADAM_SCALARS = ("inv_count",        # 1 / (samples in the batch)
                "step_size",        # lr / (1 - beta1^t); 0 for a group that sits out
                "bc2_sqrt",         # sqrt(1 - beta2^t)
                "eps",              # Adam's eps (eps_mode="keras": eps / bc2_sqrt)
                "one_minus_beta1",
                "beta2",
                "one_minus_beta2")


# Every kernel is compiled with the same flags and only the fast-math flags that cannot change a
# finite result (no NaN, no infinity, no signed zeros): no reassociation, no contraction into
# fused multiply-adds, no reciprocal or approximate functions, so every float operation rounds as
# written whatever the instruction set and wherever an entry falls in a vector (docs/xor5d.md,
# "Bit-identical numbers").  Sums go through ``_sum8``/``_unit_grads5``: one fixed order.
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"nnan", "ninf", "nsz"})
_INLINE = dict(_JIT, inline="always")


def adam_scalars_dtype(dtype) -> np.dtype:
    """The record dtype of :data:`ADAM_SCALARS` in the parameter ``dtype``."""
    return np.dtype([(name, dtype) for name in ADAM_SCALARS])


# ----------------------------------------------------------------------------- validation
@njit(**_JIT)
def _logits_one(xt, w1t, b1, w2, b2, width, z):
    # xt [d, nv] (samples contiguous, so the sample loop vectorises); w1t [d, Hp];
    # only the first ``width`` (real) hidden units are visited
    d, nv = xt.shape
    zero = z.dtype.type(0)
    for i in range(nv):
        z[i] = b2
    j = 0
    if d == 5:
        x0, x1, x2, x3, x4 = xt[0], xt[1], xt[2], xt[3], xt[4]
        while j + 4 <= width:  # four hidden units per pass over the samples
            c0, c1, c2, c3 = b1[j], b1[j + 1], b1[j + 2], b1[j + 3]
            v0, v1, v2, v3 = w2[j], w2[j + 1], w2[j + 2], w2[j + 3]
            p00, p01, p02, p03 = w1t[0, j], w1t[0, j + 1], w1t[0, j + 2], w1t[0, j + 3]
            p10, p11, p12, p13 = w1t[1, j], w1t[1, j + 1], w1t[1, j + 2], w1t[1, j + 3]
            p20, p21, p22, p23 = w1t[2, j], w1t[2, j + 1], w1t[2, j + 2], w1t[2, j + 3]
            p30, p31, p32, p33 = w1t[3, j], w1t[3, j + 1], w1t[3, j + 2], w1t[3, j + 3]
            p40, p41, p42, p43 = w1t[4, j], w1t[4, j + 1], w1t[4, j + 2], w1t[4, j + 3]
            for i in range(nv):
                e0, e1, e2, e3, e4 = x0[i], x1[i], x2[i], x3[i], x4[i]
                a0 = c0 + e0 * p00 + e1 * p10 + e2 * p20 + e3 * p30 + e4 * p40
                a1 = c1 + e0 * p01 + e1 * p11 + e2 * p21 + e3 * p31 + e4 * p41
                a2 = c2 + e0 * p02 + e1 * p12 + e2 * p22 + e3 * p32 + e4 * p42
                a3 = c3 + e0 * p03 + e1 * p13 + e2 * p23 + e3 * p33 + e4 * p43
                z[i] += (v0 * max(a0, zero) + v1 * max(a1, zero)) + (v2 * max(a2, zero) + v3 * max(a3, zero))
            j += 4
        while j < width:  # the remaining units one at a time
            bj, vj = b1[j], w2[j]
            u0, u1, u2, u3, u4 = w1t[0, j], w1t[1, j], w1t[2, j], w1t[3, j], w1t[4, j]
            for i in range(nv):
                a = bj + x0[i] * u0 + x1[i] * u1 + x2[i] * u2 + x3[i] * u3 + x4[i] * u4
                z[i] += vj * max(a, zero)
            j += 1
    while j < width:
        bj, vj = b1[j], w2[j]
        for i in range(nv):
            a = bj
            for k in range(d):
                a += xt[k, i] * w1t[k, j]
            z[i] += vj * max(a, zero)
        j += 1


_F32 = np.float32
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693145751953125)
_LN2_LO = np.float32(1.428606765330187e-06)


@njit(**_INLINE)
def _exp_neg_abs1(v):
    # exp(-|v|) in float32: range reduction, degree-7 polynomial (relative error < 1e-7) and
    # the power of two built from its bits; no libm call, so loops using it vectorise
    x = -min(abs(_F32(v)), _F32(80.0))
    k = np.floor(x * _LOG2E + _F32(0.5))
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _F32(1.0) + r * (_F32(1.0) + r * (_F32(0.5) + r * (_F32(1 / 6) + r * (_F32(1 / 24) + r * (
        _F32(1 / 120) + r * (_F32(1 / 720) + r * _F32(1 / 5040)))))))
    return p * f32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


_LOG2E64 = 1.4426950408889634
_LN2_HI64 = 6.93147180369123816490e-01  # fdlibm's split of ln 2: k * _LN2_HI64 is exact
_LN2_LO64 = 1.90821492927058770002e-10


@njit(**_INLINE)
def _exp_neg_abs64(v):
    # exp(-|v|) in float64 the same way (degree-13 Taylor polynomial on |r| <= ln2/2, truncation
    # error < 1e-17): no libm call, so the vector and scalar code of a loop (and SVML, where numba
    # finds it) cannot disagree
    x = -min(abs(np.float64(v)), 700.0)
    k = np.floor(x * _LOG2E64 + 0.5)
    r = x - k * _LN2_HI64 - k * _LN2_LO64
    p = 1.0 + r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (1 / 720 + r * (
        1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (1 / 3628800 + r * (1 / 39916800 + r * (
            1 / 479001600 + r * (1 / 6227020800)))))))))))))
    return p * f64_from_bits((np.int64(k) + np.int64(1023)) << np.int64(52))


# ----------------------------------------------------------------------------- fixed-order sums
# A sum over samples runs on eight lanes: lane l adds the entries i = l mod 8 in increasing i (the
# last block's missing entries count as +0), and the lanes are added as
# ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).  The order is part of the numbers, not of the
# machine.  It is written as LLVM vector IR on <8 x T> with plain fmul/fadd/select (no fast-math
# flags), which every x86-64 target runs the same way (SSE as two halves, AVX in one register);
# numba's own loops do not vectorise a sum without reassociation.  The arrays read must be
# C-contiguous and readable up to the next multiple of 8 (the scratch arrays are padded).


def _block_loop(context, builder, count, body, vtypes):
    """Run ``body(builder, i)`` over the blocks i = 0, 8, ... < count, accumulating the vectors
    it returns into zeroed accumulators of ``vtypes`` (in the last block, if partial, the lanes
    i + l >= count add +0); returns each accumulator folded by the tree (a scalar).  Whole blocks
    run without a mask: selecting every lane is the identity, so the sums are the same bits."""
    i64 = ir.IntType(64)
    accs = [cgutils.alloca_once_value(builder, ir.Constant(t, None)) for t in vtypes]

    def add(vectors):
        for acc, v in zip(accs, vectors):
            builder.store(builder.fadd(builder.load(acc), v), acc)

    full = builder.sdiv(count, ir.Constant(i64, 8))
    with cgutils.for_range(builder, full, intp=i64) as loop:
        add(body(builder, builder.mul(loop.index, ir.Constant(i64, 8))))
    i = builder.mul(full, ir.Constant(i64, 8))
    with builder.if_then(builder.icmp_signed("<", i, count), likely=False):
        idx = builder.add(ir.Constant(ir.VectorType(i64, 8), list(range(8))), _splat(builder, i, 8))
        valid = builder.icmp_signed("<", idx, _splat(builder, count, 8))
        add([builder.select(valid, v, ir.Constant(v.type, None)) for v in body(builder, i)])
    return _fold8(builder, [builder.load(acc) for acc in accs])


def _fold8(builder, vectors):
    """Each <8 x T> vector's lanes added by the tree ((l0 + l1) + (l2 + l3)) + ((l4 + l5) +
    (l6 + l7)).  Several vectors are folded together, as a transpose: level by level, the even
    and odd lanes of two vectors are shuffled into two vectors and added, so one add serves
    several sums (the same additions of the same operands as folding each vector alone)."""
    if len(vectors) == 1:
        v = vectors[0]
        for half in (1, 2, 4):  # pairs, quads, halves: the tree, lane 0 holds the sum
            v = builder.fadd(v, builder.shuffle_vector(v, v, _mask([k ^ half for k in range(8)])))
        return [builder.extract_element(v, ir.Constant(ir.IntType(32), 0))]
    zero = ir.Constant(vectors[0].type, None)
    level = list(vectors) + [zero] * (8 - len(vectors))  # at most 8 sums at once
    assert len(level) == 8
    # level 1: [a0+a1, b0+b1, a2+a3, b2+b3, a4+a5, b4+b5, a6+a7, b6+b7] from (a, b)
    # level 2: [a01+a23, b01+b23, c01+c23, d01+d23, a45+a67, ...] from (ab, cd)
    # level 3: [a0123+a4567, b.., c.., ..., h..] from (abcd, efgh): lane k is the k-th sum
    for lo, hi in (([0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15]),
                   ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]),
                   ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])):
        level = [builder.fadd(builder.shuffle_vector(a, b, _mask(lo)), builder.shuffle_vector(a, b, _mask(hi)))
                 for a, b in zip(level[0::2], level[1::2])]
    return [builder.extract_element(level[0], ir.Constant(ir.IntType(32), k)) for k in range(len(vectors))]


def _mask(lanes):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes)


def _splat(builder, x, n):
    vt = ir.VectorType(x.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))


def _load8(context, builder, arrty, arr, offset):
    """The eight entries ``arr.flat[offset:offset + 8]`` as a vector."""
    elem = context.get_value_type(arrty.dtype)
    data = context.make_array(arrty)(context, builder, arr).data
    ptr = builder.bitcast(builder.gep(data, [offset]), ir.VectorType(elem, 8).as_pointer())
    return builder.load(ptr, align=context.get_abi_sizeof(elem))


def _row_length(context, builder, arrty, arr):
    """The length of a row of a 2-D array (its shape[1]) as an i64."""
    return cgutils.unpack_tuple(builder, context.make_array(arrty)(context, builder, arr).shape, 2)[1]


def _c_float_array(t):
    return isinstance(t, types.Array) and t.layout == "C" and isinstance(t.dtype, types.Float)


@intrinsic
def _sum8(typingctx, a, off, b, n, zero):
    """``sum_i a.flat[off + i] * b[i]`` (``b`` None: of ``a.flat[off + i]``) over i < n in the
    fixed order above, accumulated in the type of ``zero`` (e.g. float32 terms, float64 sum)."""
    with_b = not isinstance(b, types.NoneType)
    if not (_c_float_array(a) and isinstance(off, types.Integer) and isinstance(n, types.Integer)
            and isinstance(zero, types.Float) and (not with_b or (_c_float_array(b) and b.dtype == a.dtype))):
        return None

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        start = context.cast(builder, args[1], sig.args[1], types.int64)
        count = context.cast(builder, args[3], sig.args[3], types.int64)
        vacc = ir.VectorType(context.get_value_type(zero), 8)

        def body(builder, i):
            x = _load8(context, builder, sig.args[0], args[0], builder.add(start, i))
            if with_b:
                x = builder.fmul(x, _load8(context, builder, sig.args[2], args[2], i))
            return [builder.fpext(x, vacc) if x.type != vacc else x]

        return _block_loop(context, builder, count, body, [vacc])[0]

    return zero(a, off, b, n, zero), codegen


@intrinsic
def _unit_grads5(typingctx, A, j, db, xT, vj, n):
    """The backward sums of hidden unit j over the batch's n samples, for d = 5, in one pass:
    ``(sum dz * relu(a), sum h, sum x_k * h for k < 5)`` with ``a = A[j, i]``, ``dz = db[i]``,
    ``h = dz * vj if a > 0 else 0``, ``x_k = xT[k, i]``, each in the fixed order above."""
    if not (_c_float_array(A) and _c_float_array(db) and _c_float_array(xT) and A.dtype == db.dtype == xT.dtype
            and isinstance(j, types.Integer) and isinstance(n, types.Integer) and vj == A.dtype):
        return None
    T = A.dtype

    def codegen(context, builder, sig, args):
        Aa, ja, dba, xa, va, na = args
        i64 = ir.IntType(64)
        elem = context.get_value_type(T)
        vt = ir.VectorType(elem, 8)
        zero = ir.Constant(vt, None)
        rowA = builder.mul(context.cast(builder, ja, sig.args[1], types.int64), _row_length(context, builder, sig.args[0], Aa))
        rowX = _row_length(context, builder, sig.args[3], xa)
        count = context.cast(builder, na, sig.args[5], types.int64)
        vjv = _splat(builder, va, 8)

        def body(builder, i):
            a = _load8(context, builder, sig.args[0], Aa, builder.add(rowA, i))
            dz = _load8(context, builder, sig.args[2], dba, i)
            pos = builder.fcmp_ordered(">", a, zero)
            h = builder.select(pos, builder.fmul(dz, vjv), zero)
            r = builder.fmul(dz, builder.select(pos, a, zero))
            out = [r, h]
            for k in range(5):
                x = _load8(context, builder, sig.args[3], xa, builder.add(builder.mul(ir.Constant(i64, k), rowX), i))
                out.append(builder.fmul(x, h))
            return out

        return context.make_tuple(builder, sig.return_type, _block_loop(context, builder, count, body, [vt] * 7))

    return types.UniTuple(T, 7)(A, j, db, xT, vj, n), codegen


@njit(**_INLINE)
def _bce1(z, y):
    # BCE(logit z, label y) = softplus(-u), u = (2y - 1) z: relu(-u) + log1p(t), t = exp(-|u|)
    # in (0, 1], log1p(t) = 2 atanh(t / (2 + t)) by its series
    u = (_F32(2.0) * _F32(y) - _F32(1.0)) * _F32(z)
    t = _exp_neg_abs1(u)
    q = t / (_F32(2.0) + t)
    q2 = q * q
    lg = _F32(2.0) * q * (_F32(1.0) + q2 * (_F32(1 / 3) + q2 * (_F32(1 / 5) + q2 * (_F32(1 / 7) + q2 * (
        _F32(1 / 9) + q2 * (_F32(1 / 11) + q2 * (_F32(1 / 13) + q2 * _F32(1 / 15))))))))
    return max(-u, _F32(0.0)) + lg


@njit(**_JIT)
def _bce_hits(z, y, n, tb):
    """(sum over i < n of BCE(logit z_i, label y_i), number of i with sign(z_i) matching
    y_i): float32 terms (through the scratch ``tb``), a float64 sum in ``_sum8``'s order.
    Vectorises: numba's error_model="numpy" drops the division-by-zero branch, the count is an
    int32."""
    h = np.int32(0)
    for i in range(n):
        zi, yi = z[i], y[i]
        tb[i] = _bce1(zi, yi)
        h = np.int32(h + ((zi > 0) == (yi > 0.5)))
    return _sum8(tb, 0, None, n, 0.0), h


@njit(**_JIT)
def _val_one(xt, y, w1t, b1, w2, b2, width, z, tb, out):
    _logits_one(xt, w1t, b1, w2, b2, width, z)
    nv = z.shape[0]
    loss, hits = _bce_hits(z, y, nv, tb)
    out[0] = loss / nv
    out[1] = hits / nv


@njit(**_JIT)
def val_serial(xt, y, net, widths, out):
    """Validation loss and accuracy of every network, ``out [2, G, C]``: ``xt [G, d, nv]``,
    ``y [G, nv]`` each group's validation set."""
    w1t, b1, w2, b2 = net
    G, C = b2.shape
    nv = xt.shape[2]
    z = np.empty(nv, dtype=b1.dtype)
    tb = np.zeros(_padded(nv), dtype=np.float32)
    o = np.empty(2, dtype=np.float64)
    for g in range(G):
        for c in range(C):
            _val_one(xt[g], y[g], w1t[g, c], b1[g, c], w2[g, c], b2[g, c], widths[c], z, tb, o)
            out[0, g, c] = o[0]
            out[1, g, c] = o[1]


@njit(**_JIT, parallel=True)
def val_parallel(xt, y, net, widths, out):
    """``val_serial`` with the networks split over numba's threads (the same numbers)."""
    w1t, b1, w2, b2 = net
    G, C = b2.shape
    nv = xt.shape[2]
    for gc in prange(G * C):
        g, c = gc // C, gc % C
        z = np.empty(nv, dtype=b1.dtype)
        tb = np.zeros(_padded(nv), dtype=np.float32)
        o = np.empty(2, dtype=np.float64)
        _val_one(xt[g], y[g], w1t[g, c], b1[g, c], w2[g, c], b2[g, c], widths[c], z, tb, o)
        out[0, g, c] = o[0]
        out[1, g, c] = o[1]


@njit(**_JIT)
def train_loss(zt, y, rows, gn, out):
    """Epoch train loss per network from the logits recorded during the epoch: zt [G, C, S*B],
    sample s*B + b of group g being row ``rows[s, g, b]`` of the labels ``y`` (the epoch's
    batches), gn [G] valid samples (the first gn[g] of each group)."""
    G, C, L = zt.shape
    B = rows.shape[2]
    tb = np.zeros(_padded(L), dtype=np.float32)
    ys = np.empty(L, dtype=y.dtype)
    for g in range(G):
        for i in range(gn[g]):
            ys[i] = y[rows[i // B, g, i % B]]
        for c in range(C):
            out[g, c] = _bce_hits(zt[g, c], ys, gn[g], tb)[0] / gn[g]


# Signs as torch.sign gives them on the CPU: -1, 0 (either zero, and NaN), 1.  No fast-math
# flags here: under "nnan" a NaN's comparisons would be undefined.
_EXACT = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_EXACT, inline="always")
def _switched(w, prev):
    s = np.int8((w > 0) - (w < 0))
    return s, s != prev


@njit(**_EXACT)
def sign_switch(W1T, W2, prev1, prev2, denom1, denom2, out1, out2):
    """The fraction of each network's fc1.weight and fc2.weight entries whose sign changed since
    ``prev1``/``prev2`` (int8 sign codes in the layout of ``W1T``/``W2``, updated to the current
    signs): ``out1[g, c]`` = changes (float32) / ``denom1[c]``, likewise fc2."""
    G, C, d, Hp = W1T.shape
    for g in range(G):
        for c in range(C):
            n1 = 0
            for k in range(d):
                for j in range(Hp):
                    prev1[g, c, k, j], ch = _switched(W1T[g, c, k, j], prev1[g, c, k, j])
                    n1 += ch
            n2 = 0
            for j in range(Hp):
                prev2[g, c, j], ch = _switched(W2[g, c, j], prev2[g, c, j])
                n2 += ch
            out1[g, c] = np.float32(n1) / denom1[c]
            out2[g, c] = np.float32(n2) / denom2[c]


# ----------------------------------------------------------------------------- Freeze-SGD
@njit(**_JIT)
def reset_nets(W1T, W2, T1, T2, codes, eps, seeds, steps):
    """The Freeze-SGD reset of every frozen column (``codes[c]`` >= 0, a code of
    ``polarity.freeze.methods``) of every group, each network with its own posRand stream
    ``seeds[g, c]``: after its step ``steps[g]``, fc1.weight entry (j, k) draws from
    (mix32(seed, step, 0), j*d + k) and fc2.weight entry j from (mix32(seed, step, 1), j)
    (``seeds.parameter_step_seed``), exactly as a ``Freezer`` with that seed does on the
    network's own nn.Linear weights (``train_single(reset_seed=)``).  ``T1``, ``T2``: int8 templates in the layout of ``W1T``,
    ``W2``; fluid columns and padding have template 0."""
    G, C, d, Hp = W1T.shape
    zero = W1T.dtype.type(0)
    for g in range(G):
        for c in range(C):
            code = codes[c]
            if code < 0:
                continue
            s1 = mix32(seeds[g, c], steps[g], 0)
            s2 = mix32(seeds[g, c], steps[g], 1)
            for k in range(d):
                for j in range(Hp):
                    wi = W1T[g, c, k, j]
                    tf = W1T.dtype.type(T1[g, c, k, j])
                    if wi * tf < 0:
                        W1T[g, c, k, j] = reset_value(code, wi, tf, eps, zero, s1, j * d + k)
            for j in range(Hp):
                wi = W2[g, c, j]
                tf = W2.dtype.type(T2[g, c, j])
                if wi * tf < 0:
                    W2[g, c, j] = reset_value(code, wi, tf, eps, zero, s2, j)


# ----------------------------------------------------------------------------- training step
@njit(**_INLINE)
def _adam_group(flat, G, g, s):
    """torch.optim.Adam (single tensor) on group g's slice of every parameter block of the
    flat buffers, with the group's :data:`ADAM_SCALARS` record ``s``: m.lerp_(g, 1-b1);
    v.mul_(b2).addcmul_(g, g, 1-b2); p.addcdiv_(m, sqrt(v)/bc2s + eps, value=-ss).  Padding
    has zero gradient, so it stays 0."""
    P, M, V, GR, offs = flat
    ss, bc2s, eps = s.step_size, s.bc2_sqrt, s.eps
    omb1, b2_, omb2 = s.one_minus_beta1, s.beta2, s.one_minus_beta2
    for b in range(4):
        per = (offs[b + 1] - offs[b]) // G
        lo = offs[b] + g * per
        p, m, v, gr = P[lo:lo + per], M[lo:lo + per], V[lo:lo + per], GR[lo:lo + per]
        for i in range(per):
            gi = gr[i]
            mi = m[i] + omb1 * (gi - m[i])
            vi = v[i] * b2_ + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - ss * (mi / (math.sqrt(vi) / bc2s + eps))


@njit(**_INLINE)
def _net_grads(g, c, net, grad, scratch, cnt, inv, width, ZO, f64):
    """Forward and backward of network (g, c) on its batch of ``cnt`` samples (gathered into
    ``scratch.xT`` and ``scratch.yb``; ``inv`` = 1/cnt): the gradients of the batch-mean BCE go
    to ``grad`` (only the first ``width`` units), the logits to ZO[g, c]; returns #correct.
    Vectorised over the samples; arrays are indexed in place (no views: creating a numba
    view costs as much as the arithmetic of a narrow network)."""
    W1T, B1, W2, B2 = net
    GW1, GB1, GW2, GB2 = grad
    xT, yb, A, zb, db, tb, H, R = scratch
    d = xT.shape[0]
    zero = B1.dtype.type(0)
    b2v = B2[g, c]
    for i in range(cnt):
        zb[i] = b2v
    for j in range(width):  # forward: A = pre-activations, zb = logits
        bj, vj = B1[g, c, j], W2[g, c, j]
        if d == 5:  # the XOR-5D case in one pass over the samples
            u0, u1, u2 = W1T[g, c, 0, j], W1T[g, c, 1, j], W1T[g, c, 2, j]
            u3, u4 = W1T[g, c, 3, j], W1T[g, c, 4, j]
            for i in range(cnt):
                a = (bj + xT[0, i] * u0 + xT[1, i] * u1 + xT[2, i] * u2 + xT[3, i] * u3
                     + xT[4, i] * u4)
                A[j, i] = a
                zb[i] += vj * max(a, zero)
        else:
            for i in range(cnt):
                A[j, i] = bj
            for k in range(d):
                u = W1T[g, c, k, j]
                for i in range(cnt):
                    A[j, i] += xT[k, i] * u
            for i in range(cnt):
                zb[i] += vj * max(A[j, i], zero)
    hits = 0
    if f64:  # float64 runs: the float64 exp (the exactness tests, 1e-9 against torch)
        for i in range(cnt):
            tb[i] = _exp_neg_abs64(zb[i])
        for i in range(cnt):
            z = zb[i]
            y = yb[i]
            ZO[g, c, i] = z
            hits += (z > 0) == (y > 0.5)
            t = tb[i]
            db[i] = ((1.0 if z >= 0 else t) / (1.0 + t) - y) * inv
    else:  # vectorised float32 exp: sigmoid(z) = 1/(1+t) or t/(1+t), t = exp(-|z|)
        for i in range(cnt):
            tb[i] = _exp_neg_abs1(zb[i])
        for i in range(cnt):
            z = zb[i]
            y = yb[i]
            ZO[g, c, i] = z
            hits += (z > 0) == (y > 0.5)
            t = tb[i]
            s = (_F32(1.0) if z >= 0 else t) / (_F32(1.0) + t)
            db[i] = (s - y) * inv
    GB2[g, c] = _sum8(db, 0, None, cnt, zero)
    for j in range(width):  # backward: fixed-order sums over the samples
        vj = W2[g, c, j]
        if d == 5:  # the seven sums of the XOR-5D case in one pass
            sw, sb, s0, s1, s2, s3, s4 = _unit_grads5(A, j, db, xT, vj, cnt)
            GW1[g, c, 0, j] = s0
            GW1[g, c, 1, j] = s1
            GW1[g, c, 2, j] = s2
            GW1[g, c, 3, j] = s3
            GW1[g, c, 4, j] = s4
        else:
            for i in range(cnt):
                a = A[j, i]
                dz = db[i]
                H[i] = dz * vj if a > zero else zero
                R[i] = dz * max(a, zero)
            sw = _sum8(R, 0, None, cnt, zero)
            sb = _sum8(H, 0, None, cnt, zero)
            for k in range(d):
                GW1[g, c, k, j] = _sum8(xT, k * xT.shape[1], H, cnt, zero)
        GW2[g, c, j] = sw
        GB1[g, c, j] = sb
    return hits


@njit(**_INLINE)
def _gather(xs, ys, rows, cnt, xT, yb):
    for i in range(cnt):
        r = rows[i]
        for k in range(xs.shape[1]):
            xT[k, i] = xs[r, k]
        yb[i] = ys[r]


@njit(**_INLINE)
def _padded(n):
    return (n + 7) // 8 * 8


@njit(**_JIT)
def _scratch(d, Hp, B, dtype_like):
    # rows padded to a multiple of 8: the fixed-order sums read whole blocks (and mask the rest)
    dt = dtype_like.dtype
    Bp = _padded(B)
    return Scratch(np.zeros((d, Bp), dtype=dt), np.zeros(Bp, dtype=dt), np.zeros((Hp, Bp), dtype=dt),
                   np.zeros(Bp, dtype=dt), np.zeros(Bp, dtype=dt), np.zeros(Bp, dtype=dt),
                   np.zeros(Bp, dtype=dt), np.zeros(Bp, dtype=dt))


@njit(**_INLINE)
def _group_step(batch, net, grad, inv, widths, ZO, hits, f64, g, scratch):
    # the batch of group g is gathered once for all its columns
    xs, ys, rows, count = batch
    cnt = count[g]
    _gather(xs, ys, rows[g], cnt, scratch.xT, scratch.yb)
    for c in range(net[0].shape[1]):
        hits[g, c] += _net_grads(g, c, net, grad, scratch, cnt, inv, widths[c], ZO, f64)


@njit(**_JIT)
def step_serial(batch, net, grad, flat, scalars, widths, logits, hits, f64):
    """One Adam step of every network (the tuples: module docstring); ``widths [C]``: each
    column's true width.  Records the logits in ``logits [G, C, B]`` and adds the correct
    predictions to ``hits [G, C]``.  ``f64``: the float64 exp for the sigmoid (float64 runs)
    instead of the float32 one."""
    w1t, b1 = net[0], net[1]
    rows, count = batch[2], batch[3]
    G, C, d, Hp = w1t.shape
    scratch = _scratch(d, Hp, rows.shape[1], b1)
    for g in range(G):
        if count[g] > 0:
            s = scalars[g]
            _group_step(batch, net, grad, s.inv_count, widths, logits, hits, f64, g, scratch)
            _adam_group(flat, G, g, s)


@njit(**_JIT, parallel=True)
def step_parallel(batch, net, grad, flat, scalars, widths, logits, hits, f64):
    """``step_serial`` with the groups split over numba's threads (the same numbers)."""
    w1t, b1 = net[0], net[1]
    rows, count = batch[2], batch[3]
    G, C, d, Hp = w1t.shape
    for g in prange(G):
        if count[g] > 0:
            scratch = _scratch(d, Hp, rows.shape[1], b1)
            s = scalars[g]
            _group_step(batch, net, grad, s.inv_count, widths, logits, hits, f64, g, scratch)
            _adam_group(flat, G, g, s)


__all__ = ["Scratch", "ADAM_SCALARS", "adam_scalars_dtype", "step_serial",
           "step_parallel", "val_serial", "val_parallel", "train_loss", "sign_switch", "reset_nets"]
