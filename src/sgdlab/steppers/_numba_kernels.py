"""The numba kernels of the compiled stepper (``steppers.compiled``), and the buffered stepper's compiled
float32 sigmoid passes (``steppers.buffered``), at module level so that numba's on-disk cache
(``cache=True``) finds them again in a new process. Importing this module imports numba; the steppers
import it only when they run (``import sgdlab`` does not). Everything the kernels call is in this one
file, the LLVM IR of the intrinsics included: numba's cache checks the calling function's own file only,
so code compiled into it from another module could be reused from the cache after that module changed."""

import functools
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, overload

# error_model="numpy": a float division does not test for zero (the test would stop loops from vectorizing)
njit = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy")

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums


@intrinsic
def gemm(typingctx, addr, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C <- alpha op(A) op(B) + beta C by the CBLAS ``?gemm`` (64-bit integers) at address ``addr``, row-major;
    ``a``, ``b``, ``c`` are arrays (views) whose first element starts each matrix, ``alpha``/``beta`` in
    C's dtype (float32: sgemm, float64: dgemm). The address comes in as an argument, so that numba can
    cache the kernels that call it (a ctypes function object in the code would make them uncacheable)."""
    sig = types.void(addr, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i32, i64, vp = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        real = signature.args[12].dtype  # the function's precision is C's: alpha and beta are cast to it
        fl = context.get_value_type(real)
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, fl, vp, i64, vp, i64, fl, vp, i64])
        fn = builder.inttoptr(args[0], fnty.as_pointer())

        def data(i):
            return builder.bitcast(context.make_array(signature.args[i])(context, builder, args[i]).data, vp)

        def int64(i):
            return context.cast(builder, args[i], signature.args[i], types.int64)

        builder.call(fn, [ir.Constant(i32, ROW_MAJOR), builder.trunc(int64(1), i32), builder.trunc(int64(2), i32),
                          int64(3), int64(4), int64(5), context.cast(builder, args[6], signature.args[6], real),
                          data(7), int64(8), data(9), int64(10),
                          context.cast(builder, args[11], signature.args[11], real), data(12), int64(13)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def wide_vectors(typingctx):
    """Let the compiler vectorise the calling function with 512-bit registers where the CPU has them: LLVM
    prefers 256 bits on CPUs with AVX-512 (their clock once dropped under wide vectors), for every function
    numba compiles unless a process-wide setting (NUMBA_CPU_FEATURES) says otherwise; this sets LLVM's own
    per-function attribute ("prefer-vector-width"), for the function it is called in only. No effect where
    the CPU's vectors are narrower, nor on any value."""

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set accepts only plain names; LLVM reads this key=value pair as it is
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def _bits_to_float32(typingctx, i):
    """The float32 whose bits are the low 32 bits of the integer i."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(context.cast(builder, args[0], signature.args[0], types.int32), ir.FloatType())

    return types.float32(i), codegen


# e^x for float32 x <= 0 in Cephes' expf form: x = n ln 2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial, 2^n
# written into the exponent bits. Without a branch or a call, so that a loop over it vectorizes (numba has no
# vector exp of its own: np.exp is one libm call per element). Within 1 ulp of e^x (a test measures it over
# [-87.3, 0]); 0 below -87.3, where e^x leaves the normal float32 range; NaN gives NaN.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)
_P = [np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                               1.6666665459e-1, 5.0000001201e-1)]
_P0, _P1, _P2, _P3, _P4, _P5 = _P
_EXP_MIN = np.float32(-87.33654)


@numba.njit(cache=True, nogil=True, inline="always")
def exp_core32(x):
    """e^x for float32 x in [-87.3, 89] (above 88.72 the 2^128 written is inf): the range reduction, the
    polynomial and the scaling above, with no test of its own. Inlined into the caller, it takes the
    caller's compile flags (``sigmoid32`` contracts to fused multiply-adds; ``exp_nonpos32`` does not)."""
    n = np.floor(x * _LOG2E + np.float32(0.5))
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    e = (p * (r * r) + r) + np.float32(1.0)
    return e * _bits_to_float32((np.int32(n) + np.int32(127)) * np.int32(1 << 23))  # e^r 2^n


@numba.njit(cache=True, nogil=True, inline="always")
def exp_nonpos32(x):
    e = exp_core32(max(x, _EXP_MIN))
    return np.float32(0.0) if x < _EXP_MIN else (e if x == x else x)  # NaN stays NaN


def exp_nonpos(x):
    """e^x for x <= 0: ``exp_nonpos32`` in float32, ``np.exp`` otherwise (compiled code only)."""
    return np.exp(x)


@overload(exp_nonpos)
def _exp_nonpos(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: exp_nonpos32(x)
    return lambda x: np.exp(x)


@njit
def activate(z, lo, hi, code):
    """f(z) in place on z[lo:hi]. Loops run over a view from index 0: with indices of unknown sign numba
    wraps negative ones around, element by element, and the loop does not vectorize."""
    wide_vectors()
    one = z.dtype.type(1.0)  # arithmetic in the array's own precision
    w = z[lo:hi]
    k = w.shape[0]
    if code == 0:  # sigmoid, without overflow: e^{-|z|} <= 1
        for j in range(k):
            v = w[j]
            e = exp_nonpos(-abs(v))
            s = one / (one + e)
            w[j] = s if v >= 0 else e * s
    elif code == 1:
        for j in range(k):
            w[j] = np.tanh(w[j])
    elif code == 2:
        for j in range(k):
            if w[j] < 0:
                w[j] = 0.0
    elif code == 4:  # softmax over the row's slice
        mx = w[0]
        for j in range(1, k):
            mx = max(mx, w[j])
        s = 0.0
        for j in range(k):
            w[j] = exp_nonpos(w[j] - mx)
            s += w[j]
        for j in range(k):
            w[j] = w[j] / s


# slope, output_delta and row_cost are inlined where they are called (numba's inline="always"), so that the
# loops over rows see the branches on the activation and cost codes and the compiler can hoist them: in a loop
# over 8,000 rows, the output error and cost 0.79 against 0.45 ms. Per epoch (784-100-10 float32, 8,000 rows,
# the tree before against after, five alternating rounds, medians, one pinned core of the Intel Xeon; a
# throwaway script): batch 1 69.0 vs 69.3 ms, 10 36.6 vs 36.2, 128 28.0 vs 27.0.
@njit(inline="always")
def slope(a, code):
    """f'(z) from the activation's output a."""
    if code == 0:
        return a * (1.0 - a)
    if code == 1:
        return 1.0 - a * a
    if code == 2:
        return 1.0 if a > 0 else 0.0
    return 1.0


@njit
def block(gemm_at, P, V, H, offW, offb, sizes, uoff, X, T, idx, starts, etas, hidden, out, cost, nesterov,
          A, Z, D, acc, costs, want_costs, transposed):
    """Make len(etas) updates. P/V: flat params/velocity; H = [mu, lam] in the params' dtype;
    A, Z, D: (max batch, units) workspaces for activations, output logits and deltas; ``transposed``: plain
    SGD on one row, the first layer's weights held in P as W^T, (fan_out, fan_in), and passed over by
    ``sgd_column_pass`` (the stepper picks it, for the whole fit: ``compiled.ROW_COLUMNS_MAX_SKIP``).

    The first layer's weights are the largest array and are read twice per update, by the update and
    by the next update's forward pass. Both are made in one pass over its rows: row i is updated,
    then (still in cache) multiplied into the next batch's products. The arithmetic, and its order for
    every element, is that of updating all rows first and then starting the next forward pass.

    The layers above the first are small (100 x 10 for MNIST): with ``gemm_at`` (the BLAS ``?gemm``, as
    in ``blas_block``; 0: none) their forward and backward products, and their plain-SGD updates, are
    gemm calls, 0.3-0.6 us each for 1-3 rows against 1-3 us for these loops on rows of ten (measured);
    without it, and with momentum for the updates, they are the loops below."""
    wide_vectors()
    L = sizes.shape[0] - 1
    mu, lam = H[0], H[1]
    k_out = sizes[L]
    oo = uoff[L - 1]  # column offset of the output layer in A and D
    n_up = etas.shape[0]
    ld = A.shape[1]
    one, zero = P.dtype.type(1.0), P.dtype.type(0.0)
    local = np.arange(A.shape[0])  # rows of the workspaces
    G = np.empty((2, A.shape[0], X.shape[1]), X.dtype)  # this batch's and the next batch's inputs, gathered
    S = np.empty((8, sizes[1]), X.dtype)  # small_row_pass's deltas and products
    cur, gathered = 0, False
    if transposed:  # W^T of the first layer; c = eta x, and zeros where there is no update or no next row
        fi0, fo0 = sizes[0], sizes[1]
        WT = P[offW[0]:offW[0] + fi0 * fo0].reshape((fo0, fi0))
        c_in, nothing = np.zeros(fi0, P.dtype), np.zeros(max(fi0, fo0), P.dtype)
    want_z = want_costs and cost == 1  # the cross-entropy's value is computed from the logits
    ahead = False  # the first layer's products for this update were made during the previous one
    for u in range(n_up):
        r0, r1 = starts[u], starts[u + 1]
        m = r1 - r0
        eta = etas[u]
        total = 0.0
        # forward: z_l = a_{l-1} W_l + b_l, a_l = f(z_l); A[r] holds row r's layers side by side.
        # z += a_i W_i over the inputs i, each row W_i read once for all rows; zero inputs skipped (exact);
        # the layers above the first by gemm where it was given
        for l in range(L):
            fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
            W, b = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo)), P[offb[l]:offb[l] + fo]
            if l > 0 and gemm_at != 0:
                gemm(gemm_at, NO_TRANS, NO_TRANS, m, fo, fi, one, A[:, uoff[l - 1]:], ld, W, fo, zero, A[:, o:], ld)
            elif l == 0 and transposed:
                if not ahead:  # the block's first product: the pass's own sums, with no update (c = d = 0)
                    sgd_column_pass(WT, nothing[:fi], X[idx[r0]], nothing[:fo], A[0, :fo])
            elif l > 0 or not ahead:
                A[:m, o:o + fo] = 0.0
                for i in range(fi):
                    for r in range(m):
                        ai = X[idx[r0 + r], i] if l == 0 else A[r, uoff[l - 1] + i]
                        if ai != 0:
                            for j in range(fo):
                                A[r, o + j] += ai * W[i, j]
            for r in range(m):
                for j in range(fo):
                    A[r, o + j] += b[j]
                if l == L - 1 and want_z:  # the logits, for the costs that are computed from them
                    Z[r, :] = A[r, o:o + fo]
                activate(A[r], o, o + fo, out if l == L - 1 else hidden)
        for r in range(m):
            y = T[idx[r0 + r]]
            output_delta(A[r], D[r], y, oo, k_out, out, cost)
            if want_costs:
                total += row_cost(A[r], Z[r], y, oo, k_out, out, cost)
        # backward: delta_{l-1} = (delta_l W_l^T) * f'(a_{l-1})
        for l in range(L - 1, 0, -1):
            fi, fo, o, oi = sizes[l], sizes[l + 1], uoff[l], uoff[l - 1]
            W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
            if gemm_at != 0:
                backward_gemm(gemm_at, W, D, A, o, oi, m, hidden)
            else:
                for r in range(m):
                    for i in range(fi):
                        s = 0.0
                        for j in range(fo):
                            s += W[i, j] * D[r, o + j]
                        D[r, oi + i] = s * slope(A[r, oi + i], hidden)
        if want_costs:
            costs[u] = total / m
        # the updates, from the deltas of all m rows: the last layer first, so that the first layer's
        # pass can overwrite its activations with the next batch's products
        fm = P.dtype.type(m)
        ahead = u + 1 < n_up
        for l in range(L - 1, -1, -1):
            fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
            W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
            VW = V[offW[l]:offW[l] + fi * fo].reshape((fi, fo)) if mu != 0 else W
            if l > 0 and gemm_at != 0 and mu == 0:  # W <- (1 - eta lam) W - (eta/m) a^T delta, as blas_block
                gemm(gemm_at, TRANS, NO_TRANS, fi, fo, m, -(eta / fm), A[:, uoff[l - 1]:], ld, D[:, o:], ld,
                     one - eta * lam, W, fo)
            elif l > 0:  # inputs: the activations of the layer below, rows 0..m-1 of A
                update_layer(W, VW, A, local, uoff[l - 1], m, D, o, X, idx, 0, A, acc, eta, fm, mu, lam, nesterov)
            else:  # inputs: the batch's rows of X; and the next batch's products (into A, which is free now)
                mn = starts[u + 2] - starts[u + 1] if ahead else 0
                if transposed:  # one row, plain SGD: c = eta x
                    x = X[idx[r0]]
                    for i in range(fi):
                        c_in[i] = eta * x[i]
                    sgd_column_pass(WT, c_in, X[idx[r1]] if mn == 1 else nothing[:fi], D[0, :fo], A[0, :fo])
                elif mu == 0 and lam == 0 and (m > 1 or mn > 1):  # plain SGD on batches: rows gathered
                    A[:mn, :fo] = 0.0
                    if not gathered:
                        gather(X, idx[r0:r1], G[cur])
                    gather(X, idx[r1:r1 + mn], G[1 - cur])
                    if m <= 2 and mn <= 2:
                        small_row_pass(W, G[cur], m, D, eta / fm, G[1 - cur], mn, A, S, 2)
                    elif m <= 3 and mn <= 3:
                        small_row_pass(W, G[cur], m, D, eta / fm, G[1 - cur], mn, A, S, 3)
                    elif m <= 4 and mn <= 4:
                        small_row_pass(W, G[cur], m, D, eta / fm, G[1 - cur], mn, A, S, 4)
                    else:
                        batch_row_pass(W, G[cur], m, D, eta / fm, G[1 - cur], mn, A, acc)
                    cur, gathered = 1 - cur, True
                else:
                    A[:mn, :fo] = 0.0
                    update_layer(W, VW, X, idx[r0:r1], 0, m, D, o, X, idx[r1:r1 + mn], mn, A, acc, eta, fm, mu,
                                 lam, nesterov)
                    gathered = False
            update_bias(P[offb[l]:offb[l] + fo], V, offb[l], D, o, m, eta, mu, nesterov)


@njit
def blas_block(gemm_at, P, V, H, offW, offb, sizes, uoff, X, T, idx, starts, etas, hidden, out, cost, nesterov,
               A, Z, D, G, GS, WP, S, tile_fo, grad_fo, costs, want_costs, in_order):
    """``block`` for bigger batches: the same updates, formulas and order, with every matrix product made
    by the BLAS ``?gemm`` at address ``gemm_at`` (NumPy's own, on its threads): the forward products, the
    backward products delta_l W_l^T and the weights' gradients; or the forward products by register tiles
    (``forward_product``) for the layers at least ``tile_fo`` wide where WP, the padded weights
    (``pad_weights``, copied at each update), is not empty, with S its scratch rows. Everything between
    the products (bias, activations, output error, cost, the slopes, the bias sums) is compiled code on
    the same workspaces; nothing is allocated per update.

    A, Z, D (R rows) hold one block of rows: a batch of at most R rows is one block, and plain SGD then
    updates the weights inside gemm, W <- (1 - eta lam) W - (eta/m) a^T delta (the fused stepper's update).
    A bigger batch is made R rows at a time (the stepper picks R so that a block's inputs stay in the
    core's cache between its forward product and its gradient product): each block's gradient sums are
    added into GS (shaped as P: every layer's a^T delta and sum_rows delta), and once all rows are in, the
    update is made from the sums, W <- (1 - eta lam) W - (eta/m) sum, b <- b - eta (sum/m). With momentum
    the sums always go through GS (``apply_sums``: the reference chain's formulas). G: (R, fan_in) for a
    block's rows, gathered, unless ``in_order`` says that every batch's rows follow each other in X
    (idx[r0:r1] = idx[r0], idx[r0] + 1, ...: batch GD, or rows gathered beforehand), where the products
    read them in place. How a batch is split depends on R and m only, never on where a block of updates
    starts, so a resumed run stays bit-identical. The gradient sums of layers at least ``grad_fo`` wide are
    made by register tiles (``gradient_product``) instead of gemm, a batch then always through GS."""
    wide_vectors()
    L = sizes.shape[0] - 1
    mu, lam = H[0], H[1]
    R = A.shape[0]
    ld = A.shape[1]
    one = P.dtype.type(1.0)
    zero = P.dtype.type(0.0)
    fo_max = sizes[1:].max() if L > 0 else 0
    for u in range(etas.shape[0]):
        r0, r1 = starts[u], starts[u + 1]
        m = r1 - r0
        eta = etas[u]
        fm = P.dtype.type(m)
        total = 0.0
        if WP.shape[0] > 0:
            pad_weights(P, offW, sizes, WP, tile_fo)
        if m <= R and mu == 0 and grad_fo > fo_max:  # one block: the weights' update inside gemm
            Xb = block_rows(X, idx, r0, m, G, in_order)
            total = forward_backward(gemm_at, P, offW, offb, sizes, uoff, Xb, T, idx, r0, m, hidden, out, cost, A, Z,
                                     D, WP, S, tile_fo, want_costs)
            for l in range(L):
                fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
                W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
                a_in, lda = (Xb, fi) if l == 0 else (A[:, uoff[l - 1]:], ld)
                gemm(gemm_at, TRANS, NO_TRANS, fi, fo, m, -(eta / fm), a_in, lda, D[:, o:], ld, one - eta * lam, W, fo)
                bias_sums(GS, offb[l], D, o, fo, m, True)
                apply_bias(P, V, GS, offb[l], fo, fm, eta, mu, nesterov)
        else:  # block by block, the sums into GS, then the update
            for q0 in range(r0, r1, R):
                mb = min(R, r1 - q0)
                first = q0 == r0
                Xb = block_rows(X, idx, q0, mb, G, in_order)
                total += forward_backward(gemm_at, P, offW, offb, sizes, uoff, Xb, T, idx, q0, mb, hidden, out, cost,
                                          A, Z, D, WP, S, tile_fo, want_costs)
                for l in range(L):
                    fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
                    if fo >= grad_fo:
                        gradient_product(Xb if l == 0 else A, 0, 0 if l == 0 else uoff[l - 1], mb, fi, D, o, fo,
                                         GS[offW[l]:offW[l] + fi * fo].reshape((fi, fo)), not first, S)
                    else:
                        a_in, lda = (Xb, fi) if l == 0 else (A[:, uoff[l - 1]:], ld)
                        gemm(gemm_at, TRANS, NO_TRANS, fi, fo, mb, one, a_in, lda, D[:, o:], ld,
                             zero if first else one, GS[offW[l]:], fo)
                    bias_sums(GS, offb[l], D, o, fo, mb, first)
            apply_sums(P, V, GS, H, offW, offb, sizes, eta, fm, nesterov)
        if want_costs:
            costs[u] = total / m


# ----- register tiles for the blas kernel's forward products (``forward_product``)
MR = 6
"""Rows of a tile: 6 rows x 4 vectors = 24 accumulators, with the 4 vectors of W and a broadcast, 29 of the 32
vector registers."""
NV_MAX = 4
"""Vectors of W's row per tile (64 float32 columns)."""
VECTOR_BYTES = 64
GRAD_KC = 64
"""Rows of a block per pass of ``gradient_product``'s tiles (the tiles continue from G's values between
passes, so the bits do not depend on it). Not a measured optimum: in throwaway runs on the AMD EPYC (medians of
7 rounds, one run per setting, the full batch's gradient products), chunks of 24 rows took 12.4 ms, and 48 to
1,000 rows differed by less than the runs' spread (8.9 at 48, 8.3-11.1 at 64, 7.9-10.4 at 96, 8.3-9.4 at 128,
9.3 unchunked)."""


TAILS = 2
"""Widths of a tile's last vector: VL or VL/2 lanes (``tile_variant`` takes the narrower where it holds the lanes
left). Where a 512-bit fused multiply-add takes a 256-bit unit for two cycles and a 128- or 256-bit one for
one (AMD's Zen 4), a 100-wide layer's last 4 columns cost half a 16-lane vector's time instead of all of it:
the forward tiles 13.1 -> 12.5 ms per 8,000 x 784 x 100 product, the gradient tiles 14.1 -> 13.7 (a throwaway
script, uncached 168-row blocks). A third width, VL/4, made no difference there (the forward and gradient
tiles of 168-row blocks together, three alternating runs, fastest of 25 each: 25.0 / 25.2 / 24.9 ms with it,
24.9 / 24.9 / 24.8 without), and where 512-bit units are full width a narrower vector costs the same."""


def tile_shapes(vl: int) -> list[tuple[int, int]]:
    """The tile shapes (vectors, lanes of the last vector) for VL = vl, in the order of their codes
    (``tile_variant``): the intrinsic's switch and ``tile_row`` agree through it."""
    return [(nv, vl >> t) for nv in range(1, NV_MAX + 1) for t in range(TAILS)]


@njit(inline="always")
def tile_variant(nv, lanes, vl):
    """The code of the tile shape for nv vectors of vl lanes whose last holds ``lanes`` of them: the narrowest
    last vector that holds them (``tile_shapes``)."""
    t = 0
    while t < TAILS - 1 and lanes <= vl >> (t + 1):
        t += 1
    return TAILS * (nv - 1) + t


def _tile(trans_a: bool = False):
    """An intrinsic tile(A, ar, ac, valid, B, bc, Z, zr, zc, S, K, variant, lanes, accumulate): for the tile's
    rows i < MR and its nv vectors v < nv, with VL = VECTOR_BYTES / itemsize lanes per vector and c = VL v + j,

        Z[zr + i, zc + c] = (Z[zr + i, zc + c] if accumulate else 0) + sum_{k < K} a_ik B[k, bc + c],

    a_ik = A[ar + i, ac + k], or with ``trans_a`` A[ar + k, ac + i] (the weights' gradient a^T delta reads
    the block's inputs so). ``variant`` (``tile_variant``) picks the tile's shape from ``tile_shapes``: nv
    vectors, 1 <= nv <= NV_MAX, the last of VL or VL/2 lanes (TAILS), of which only the first ``lanes``
    are written (and read from Z; with ``trans_a`` also from B, whose rows need not hold whole vectors then).
    Each shape is its own loop, compiled with the shape fixed; the call branches to it. The sum is taken over
    k in order, one fused multiply-add per term, continuing from Z's value when ``accumulate``: the same bits
    whatever the last vector's width. Rows i >= ``valid`` read A's row (column) valid - 1 and go to row i of
    S (MR x NV_MAX VL), so a short tile never touches rows outside it. K >= 0; 2-D arrays of one float dtype
    with unit column stride. The k loop makes two steps per turn (one first where K is odd): the forward
    product of 8,000 x 784 by 784 x 100 in 168-row blocks at 113-131 GFLOP/s (six runs) against 101-106 with
    one step per turn (five runs of six; one at 127), in a throwaway script on the Intel Xeon."""

    @intrinsic
    def tile(typingctx, A, ar, ac, valid, B, bc, Z, zr, zc, S, K, variant, lanes, accumulate):
        arrays = (A, B, Z, S)
        if not all(isinstance(a, types.Array) and a.ndim == 2 and a.dtype == A.dtype for a in arrays):
            return None
        if A.dtype not in (types.float32, types.float64):
            return None
        sig = types.void(A, ar, ac, valid, B, bc, Z, zr, zc, S, K, variant, lanes, accumulate)

        def codegen(context, builder, signature, args):
            dtype = signature.args[0].dtype
            ft = context.get_value_type(dtype)
            vl = VECTOR_BYTES // (4 if dtype == types.float32 else 8)
            i64, i32 = ir.IntType(64), ir.IntType(32)
            item = ir.Constant(i64, 2 if dtype == types.float32 else 3)  # log2 of the itemsize
            bits = 32 if dtype == types.float32 else 64
            align = ir.Constant(i32, 4)

            def c64(v):
                return ir.Constant(i64, v)

            def integer(i):
                return context.cast(builder, args[i], signature.args[i], types.int64)

            def element(i, row, col):  # pointer to element (row, col) of the array args[i], and its row stride
                a = context.make_array(signature.args[i])(context, builder, args[i])
                ld = builder.ashr(cgutils.unpack_tuple(builder, a.strides, 2)[0], item)
                return builder.gep(a.data, [builder.add(builder.mul(row, ld), col)]), ld

            ap, lda = element(0, integer(1), integer(2))
            valid = integer(3)
            bp, ldb = element(4, c64(0), integer(5))
            zp, ldz = element(6, integer(7), integer(8))
            sp, lds = element(9, c64(0), c64(0))
            K, variant, lanes = integer(10), integer(11), integer(12)
            accumulate = builder.icmp_signed("!=", integer(13), c64(0))
            last = builder.sub(valid, c64(1))
            arows, zrows = [], []  # A's rows (trans_a: A's row 0 at the tile's columns), Z's rows (or S's)
            for i in range(MR):
                ok = builder.icmp_signed("<", c64(i), valid)
                src = builder.select(ok, c64(i), last)
                arows.append(builder.gep(ap, [src if trans_a else builder.mul(src, lda)]))
                zrows.append(builder.select(ok, builder.gep(zp, [builder.mul(c64(i), ldz)]),
                                            builder.gep(sp, [builder.mul(c64(i), lds)])))

            def emit(nv, w):  # one tile shape: nv vectors, the first nv - 1 of vl lanes, the last of w
                vts = [ir.VectorType(ft, vl)] * (nv - 1) + [ir.VectorType(ft, w)]
                tv, mt = vts[-1], ir.VectorType(ir.IntType(1), w)
                lane = ir.Constant(ir.VectorType(i64, w), list(range(w)))
                mask = builder.icmp_signed("<", lane, builder.shuffle_vector(  # lanes < `lanes`
                    builder.insert_element(ir.Constant(ir.VectorType(i64, w), ir.Undefined), lanes,
                                           ir.Constant(i32, 0)),
                    ir.Constant(ir.VectorType(i64, w), ir.Undefined), ir.Constant(ir.VectorType(i32, w), None)))
                masked_load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                    tv, [tv.as_pointer(), i32, mt, tv]), f"llvm.masked.load.v{w}f{bits}.p0")
                masked_store = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [tv, tv.as_pointer(), i32, mt]),
                    f"llvm.masked.store.v{w}f{bits}.p0")
                fmas = [cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]),
                                                       f"llvm.fma.v{t.count}f{bits}") for t in vts]

                def vector(p, v):  # pointer to vector v (of its type) from element pointer p
                    return builder.bitcast(builder.gep(p, [c64(vl * v)]), vts[v].as_pointer())

                def load(p, v):  # vector v from element pointer p: the last one masked
                    if v < nv - 1:
                        return builder.load(vector(p, v), align=4)
                    return builder.call(masked_load, [vector(p, v), align, mask, ir.Constant(tv, None)])

                def splat(x, t):
                    undef = ir.Constant(t, ir.Undefined)
                    return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(i32, 0)), undef,
                                                  ir.Constant(ir.VectorType(i32, t.count), None))

                init = [[builder.select(accumulate, load(zrows[i], v), ir.Constant(vts[v], None))
                         for v in range(nv)] for i in range(MR)]

                def step(acc, k):  # acc + A[:, k] B[k]: one fused multiply-add per accumulator
                    brow = builder.gep(bp, [builder.mul(k, ldb)])
                    # B's rows hold whole vectors for the forward product (padded weights), but may end inside
                    # the last vector for the gradient's (delta's rows)
                    b = [load(brow, v) if trans_a else builder.load(vector(brow, v), align=4) for v in range(nv)]
                    out = []
                    koff = builder.mul(k, lda) if trans_a else k
                    for i in range(MR):
                        x = builder.load(builder.gep(arows[i], [koff]))
                        a = [splat(x, vts[0])] * (nv - 1) + [splat(x, tv)]
                        out.append([builder.call(fmas[v], [a[v], b[v], acc[i][v]]) for v in range(nv)])
                    return out

                def phis(incoming):  # phi values of accumulators from [(values, block)]
                    out = [[builder.phi(vts[v]) for v in range(nv)] for _ in range(MR)]
                    for values, block in incoming:
                        for i in range(MR):
                            for v in range(nv):
                                out[i][v].add_incoming(values[i][v], block)
                    return out

                entry = builder.block
                peel, pre = builder.append_basic_block("tile.peel"), builder.append_basic_block("tile.pre")
                loop, done = builder.append_basic_block("tile.loop"), builder.append_basic_block("tile.done")
                builder.cbranch(builder.trunc(K, ir.IntType(1)), peel, pre)  # K odd: k = 0 first
                builder.position_at_end(peel)
                peeled = step(init, c64(0))
                builder.branch(pre)
                builder.position_at_end(pre)
                acc0 = phis([(init, entry), (peeled, peel)])
                k0 = builder.phi(i64)
                k0.add_incoming(c64(0), entry)
                k0.add_incoming(c64(1), peel)
                builder.cbranch(builder.icmp_signed("<", k0, K), loop, done)
                builder.position_at_end(loop)  # K - k0 even: two steps per turn
                k = builder.phi(i64)
                acc = phis([(acc0, pre)])
                new = step(step(acc, k), builder.add(k, c64(1)))
                k2 = builder.add(k, c64(2))
                k.add_incoming(k0, pre)
                k.add_incoming(k2, loop)
                for i in range(MR):
                    for v in range(nv):
                        acc[i][v].add_incoming(new[i][v], loop)
                builder.cbranch(builder.icmp_signed("<", k2, K), loop, done)
                builder.position_at_end(done)
                res = phis([(acc0, pre), (new, loop)])
                for i in range(MR):
                    for v in range(nv - 1):
                        builder.store(res[i][v], vector(zrows[i], v), align=4)
                    builder.call(masked_store, [res[i][nv - 1], vector(zrows[i], nv - 1), align, mask])

            end = builder.append_basic_block("tile.end")
            shapes = tile_shapes(vl)
            starts = [builder.append_basic_block(f"tile.{nv}x{w}") for nv, w in shapes]
            # the default is never taken (tile_row passes codes of tile_shapes only): the widest shape
            switch = builder.switch(variant, starts[shapes.index((NV_MAX, vl))])
            for code, bb in enumerate(starts):
                switch.add_case(c64(code), bb)
            for (nv, w), bb in zip(shapes, starts, strict=True):
                builder.position_at_end(bb)
                emit(nv, w)
                builder.branch(end)
            builder.position_at_end(end)
            return context.get_dummy_value()

        return sig, codegen

    return tile


tile, tile_t = _tile(), _tile(trans_a=True)


@njit(inline="always")
def tile_row(trans_a, A, ar, ac, valid, B, bc, Z, zr, zc, S, K, n, accumulate):
    """One row of tiles, Z[zr:zr + MR, zc:zc + n] (+)= a B[:K, bc:bc + n], NV_MAX vectors of B's rows at a time
    (the last group shorter, its last vector VL or VL/2 lanes wide as the lanes left need, ``tile_variant``):
    ``tile`` with a_ik = A[ar + i, ac + k], or ``tile_t`` with A[ar + k, ac + i] (``trans_a``)."""
    vl = VECTOR_BYTES // A.itemsize
    nvt = (n + vl - 1) // vl
    for g in range(0, nvt, NV_MAX):
        c = g * vl
        nv = min(NV_MAX, nvt - g)
        lanes = min(vl, n - c - vl * (nv - 1))
        code = tile_variant(nv, lanes, vl)
        if trans_a:
            tile_t(A, ar, ac, valid, B, bc + c, Z, zr, zc + c, S, K, code, lanes, accumulate)
        else:
            tile(A, ar, ac, valid, B, bc + c, Z, zr, zc + c, S, K, code, lanes, accumulate)


@njit
def padded_width(fo, itemsize):
    """Columns of a padded weight row: fo rounded up to whole vectors."""
    vl = VECTOR_BYTES // itemsize
    return (fo + vl - 1) // vl * vl


@njit
def pad_weights(P, offW, sizes, WP, tile_fo):
    """Copy the W (fan_in, fan_out) of every layer at least ``tile_fo`` wide, row-major in P at offW, into its
    place in WP (``padded``), rows padded to whole vectors; the padding columns are left as they are (zeros)."""
    wide_vectors()
    po = 0
    for l in range(sizes.shape[0] - 1):
        fi, fo = sizes[l], sizes[l + 1]
        pw = padded_width(fo, P.itemsize)
        if po + fi * pw > WP.shape[0]:
            raise ValueError("pad_weights: WP is shorter than the padded weights")
        if fo >= tile_fo:
            for i in range(fi):
                src, dst = P[offW[l] + i * fo:offW[l] + i * fo + fo], WP[po + i * pw:po + i * pw + fo]
                for j in range(fo):
                    dst[j] = src[j]
        po += fi * pw


@njit
def padded(WP, sizes, l, itemsize):
    """Layer l's padded weights in WP, (fan_in, padded_width)."""
    po = 0
    for q in range(l):
        po += sizes[q] * padded_width(sizes[q + 1], itemsize)
    pw = padded_width(sizes[l + 1], itemsize)
    return WP[po:po + sizes[l] * pw].reshape((sizes[l], pw))


@njit
def forward_product(X, xr, xc, m, K, Wp, fo, Z, zr, zc, S):
    """Z[zr:zr + m, zc:zc + fo] = X[xr:xr + m, xc:xc + K] Wp[:K, :fo] by register tiles, for the ``blas``
    kernel on CPUs with 512-bit vectors (``compiled.tiled_products``); Wp's rows padded to whole vectors
    (``pad_weights``), S a scratch array (MR, NV_MAX vectors).

    NumPy's OpenBLAS makes X W for a block of inputs X (rows, 784) and W (784, 100) at about 84 GFLOP/s on
    one core of the Intel Xeon where it makes a 1024^3 product at 130: W's 100 columns are 6 1/4 of its
    kernel's 16-wide panels. Here a tile of MR = 6 rows by up to NV_MAX = 4 vectors of W's row (64
    columns) is held in 24 of the 32 vector registers for the whole sum over k: each step loads the
    vectors of W's row k, broadcasts the 6 inputs x_rk and makes 24 fused multiply-adds (in an epoch,
    11.7-12.4 ms for the 8,000 rows, 101-107 GFLOP/s, by cycle counters in a throwaway copy). Rows outer,
    column groups inner: a tile's 6 rows of X stay in the first-level cache for all of W's columns. The
    tile is written in LLVM IR (``_tile``): numba's loop vectoriser keeps a tile of scalar accumulators
    scalar.

    Each element is its own sum over k in order, one fused multiply-add per term: it depends on its row
    of X and on W only, never on how rows fall into tiles or blocks (a tile's missing rows repeat its
    last row and are written to S), so a resumed run stays bit-identical. Wp's rows hold whole vectors (the
    tiles read them whole) and S at least MR rows of NV_MAX vectors; every array has unit column stride
    (checked: a ValueError otherwise)."""
    vl = VECTOR_BYTES // X.itemsize
    nvt = (fo + vl - 1) // vl
    if Wp.shape[1] < nvt * vl or S.shape[0] < MR or S.shape[1] < min(nvt, NV_MAX) * vl:
        raise ValueError("forward_product: Wp's rows must hold whole vectors, S MR rows of NV_MAX vectors")
    if X.strides[1] != X.itemsize or Wp.strides[1] != Wp.itemsize or Z.strides[1] != Z.itemsize:
        raise ValueError("forward_product: X, Wp and Z need unit column strides")
    for r in range(0, m, MR):
        tile_row(False, X, xr + r, xc, min(MR, m - r), Wp, 0, Z, zr + r, zc, S, K, fo, False)


@njit
def gradient_product(X, xr, xc, K, fi, D, dc, fo, G, accumulate, S):
    """G[:fi, :fo] (+)= X[xr:xr + K, xc:xc + fi]^T D[:K, dc:dc + fo] by register tiles (``tile_t``): a layer's
    gradient sum a^T delta over a block of K rows into G (fan_in, fan_out), added to G's values when
    ``accumulate``. Each element is one chain of fused multiply-adds over the rows in order, continued from
    G's value: blocks added one after another give the same bits as one block of all their rows. Tiles of
    MR rows of G (MR inputs of a row of X, broadcast) by up to NV_MAX vectors of D's row; D's rows and G's
    need not hold whole vectors (the last vector is read and written under a mask). Unit column strides."""
    vl = VECTOR_BYTES // X.itemsize
    nvt = (fo + vl - 1) // vl
    if S.shape[0] < MR or S.shape[1] < min(nvt, NV_MAX) * vl:
        raise ValueError("gradient_product: S must hold MR rows of NV_MAX vectors")
    if X.strides[1] != X.itemsize or D.strides[1] != D.itemsize or G.strides[1] != G.itemsize:
        raise ValueError("gradient_product: X, D and G need unit column strides")
    if K == 0 and not accumulate:  # a sum over no rows
        for i in range(fi):
            for j in range(fo):
                G[i, j] = 0.0
    for k0 in range(0, K, GRAD_KC):  # chunks of rows: a chunk of D's rows stays in the first-level cache
        kc = min(GRAD_KC, K - k0)
        acc = accumulate or k0 > 0
        Dk = D[k0:]
        for i in range(0, fi, MR):
            tile_row(True, X, xr + k0, xc + i, min(MR, fi - i), Dk, dc, G, i, 0, S, kc, fo, acc)


@njit
def block_rows(X, idx, r0, m, G, in_order):
    """The m rows idx[r0:r0 + m] of X: in place where they follow each other (``in_order``), else gathered
    into G."""
    if in_order:
        return X[idx[r0]:idx[r0] + m]
    gather(X, idx[r0:r0 + m], G)
    return G[:m]


@njit
def forward_backward(gemm_at, P, offW, offb, sizes, uoff, Xb, T, idx, r0, m, hidden, out, cost, A, Z, D, WP, S,
                     tile_fo, want_costs):
    """Forward and backward passes of the m rows Xb (targets T[idx[r0 + r]]) into the workspaces: A the
    activations, D the deltas, layers side by side; every product by gemm, or the forward ones of layers at
    least ``tile_fo`` wide by register tiles from the padded weights WP where it is not empty (``blas_block``).
    Returns sum_x C_x over the rows when ``want_costs`` (else 0)."""
    wide_vectors()
    L = sizes.shape[0] - 1
    k_out, oo, ld = sizes[L], uoff[L - 1], A.shape[1]
    one, zero = P.dtype.type(1.0), P.dtype.type(0.0)
    want_z = want_costs and cost == 1
    for l in range(L):  # forward: z_l = a_{l-1} W_l + b_l, a_l = f(z_l)
        fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
        W, b = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo)), P[offb[l]:offb[l] + fo]
        if WP.shape[0] > 0 and fo >= tile_fo:
            if l == 0:
                forward_product(Xb, 0, 0, m, fi, padded(WP, sizes, l, P.itemsize), fo, A, 0, o, S)
            else:
                forward_product(A, 0, uoff[l - 1], m, fi, padded(WP, sizes, l, P.itemsize), fo, A, 0, o, S)
        elif l == 0:
            gemm(gemm_at, NO_TRANS, NO_TRANS, m, fo, fi, one, Xb, fi, W, fo, zero, A[:, o:], ld)
        else:
            gemm(gemm_at, NO_TRANS, NO_TRANS, m, fo, fi, one, A[:, uoff[l - 1]:], ld, W, fo, zero, A[:, o:], ld)
        for r in range(m):
            z = A[r, o:o + fo]
            for j in range(fo):
                z[j] += b[j]
            if l == L - 1 and want_z:
                Z[r, :] = z
            activate(z, 0, fo, out if l == L - 1 else hidden)
    total = 0.0
    for r in range(m):
        y = T[idx[r0 + r]]
        output_delta(A[r], D[r], y, oo, k_out, out, cost)
        if want_costs:
            total += row_cost(A[r], Z[r], y, oo, k_out, out, cost)
    for l in range(L - 1, 0, -1):  # backward: delta_{l-1} = (delta_l W_l^T) * f'(a_{l-1}), before any update
        fi, fo, o, oi = sizes[l], sizes[l + 1], uoff[l], uoff[l - 1]
        W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
        backward_gemm(gemm_at, W, D, A, o, oi, m, hidden)
    return total


@njit
def bias_sums(GS, ob, D, o, fo, m, first):
    """GS[ob:ob + fo] (+)= sum over rows 0..m-1 of D[:, o:o + fo], row by row (each column summed in row
    order, as ``update_bias`` does, reading D as it lies); ``first``: start from the first row."""
    wide_vectors()
    s = GS[ob:ob + fo]
    r = 0
    if first:
        for j in range(fo):
            s[j] = D[0, o + j]
        r = 1
    for rr in range(r, m):
        d = D[rr, o:o + fo]
        for j in range(fo):
            s[j] += d[j]


@njit
def apply_bias(P, V, GS, ob, fo, fm, eta, mu, nesterov):
    """b <- b - eta u from g = GS[ob:ob + fo] / m, as ``update_bias`` (u = g, or with momentum the velocity's)."""
    b = P[ob:ob + fo]
    for j in range(fo):
        sgd_step(b, V, ob, j, GS[ob + j] / fm, eta, mu, nesterov)


@njit
def apply_sums(P, V, GS, H, offW, offb, sizes, eta, fm, nesterov):
    """The update from the batch's gradient sums GS (shaped as P): plain SGD W <- (1 - eta lam) W - (eta/m) sum;
    with momentum the reference chain's g = sum/m + lam W; v <- mu v + g; W <- W - eta (v, or g + mu v)."""
    wide_vectors()
    mu, lam = H[0], H[1]
    one = P.dtype.type(1.0)
    c = eta / fm
    for l in range(sizes.shape[0] - 1):
        fi, fo = sizes[l], sizes[l + 1]
        W, gs = P[offW[l]:offW[l] + fi * fo], GS[offW[l]:offW[l] + fi * fo]
        if mu == 0:
            decay = one - eta * lam
            for i in range(fi * fo):
                W[i] = decay * W[i] - c * gs[i]
        else:
            VW = V[offW[l]:offW[l] + fi * fo]
            for i in range(fi * fo):
                sgd_step(W, VW, 0, i, gs[i] / fm + lam * W[i], eta, mu, nesterov)
        apply_bias(P, V, GS, offb[l], fo, fm, eta, mu, nesterov)


@njit
def backward_gemm(gemm_at, W, D, A, o, oi, m, hidden):
    """delta_{l-1} = (delta_l W_l^T) * f'(a_{l-1}) for rows 0..m-1, by gemm: W (fan_in, fan_out); delta_l in
    D[:, o:], delta_{l-1} into D[:, oi:], a_{l-1} in A[:, oi:] (workspaces of equal width)."""
    fi, fo = W.shape
    gemm(gemm_at, NO_TRANS, TRANS, m, fi, fo, W.dtype.type(1.0), D[:, o:], D.shape[1], W, fo, W.dtype.type(0.0),
         D[:, oi:], D.shape[1])
    for r in range(m):
        d, a = D[r, oi:oi + fi], A[r, oi:oi + fi]
        for i in range(fi):
            d[i] *= slope(a[i], hidden)


@njit
def update_bias(b, V, vo, D, o, m, eta, mu, nesterov):
    """b <- b - eta u from g = (1/m) sum over the rows of D[:m, o:o + len(b)]: u = g, or with momentum
    (velocity V[vo:vo + len(b)]) v <- mu v + g and u = v, or g + mu v (Nesterov)."""
    wide_vectors()
    if m == 0:
        return
    fm = b.dtype.type(m)
    for j in range(b.shape[0]):
        s = D[0, o + j]
        for r in range(1, m):
            s += D[r, o + j]
        sgd_step(b, V, vo, j, s / fm, eta, mu, nesterov)


@njit(inline="always")
def sgd_step(p, V, vo, j, g, eta, mu, nesterov):
    """p[j] <- p[j] - eta u from its gradient g (decay included by the caller): u = g, or with momentum
    (velocity V[vo + j]) v <- mu v + g and u = v, or g + mu v (Nesterov): the reference chain's formulas, for a
    weight or a bias."""
    if mu != 0:
        v = mu * V[vo + j] + g
        V[vo + j] = v
        g = g + mu * v if nesterov else v
    p[j] -= eta * g


@njit(inline="always")
def output_delta(a_row, d_row, y, oo, k_out, out, cost):
    """The output error delta_L of one row into d_row[oo:oo + k_out], from its outputs a_row[oo:oo + k_out]."""
    if cost == 1:  # cross-entropy with its natural output: delta = a - y
        for j in range(k_out):
            d_row[oo + j] = a_row[oo + j] - y[j]
    elif out == 4:  # quadratic cost through the softmax Jacobian
        s = 0.0
        for j in range(k_out):
            s += (a_row[oo + j] - y[j]) * a_row[oo + j]
        for j in range(k_out):
            a = a_row[oo + j]
            d_row[oo + j] = a * ((a - y[j]) - s)
    else:
        for j in range(k_out):
            a = a_row[oo + j]
            d_row[oo + j] = (a - y[j]) * slope(a, out)


@njit
def update_layer(W, VW, S, rows, so, m, D, do, N, next_rows, mn, A, acc, eta, fm, mu, lam, nesterov):
    """One layer's update from its m inputs a_ri = S[rows[r], so + i] and deltas D[r, do:do + fo], with the
    formulas of ``optim.sgd`` (VW: the weights' velocity, momentum only); then, for the first layer, the
    next batch's products z_r = x_r W with the updated rows, x_r = N[next_rows[r]], into A[:mn, :fo]: one
    pass over W's rows, each updated and then used while it is in cache (the order of the arithmetic for
    every element is that of updating all rows first and then starting the next forward pass)."""
    wide_vectors()
    fi, fo = W.shape
    if m == 1 and mu == 0 and lam == 0 and mn <= 1:  # plain SGD, one example: w_i <- w_i - (eta a_i) delta
        x, d, z = S[rows[0], so:so + fi], D[0, do:do + fo], A[0, :fo]
        if mn == 1:
            sgd_row_pass(W, x, N[next_rows[0]], d, z, eta)
            return
        for i in range(fi):
            c = eta * x[i]
            if c != 0:
                for j in range(fo):
                    W[i, j] -= c * d[j]
        return
    for i in range(fi):
        w = W[i]
        for j in range(fo):
            acc[j] = 0.0
        for r in range(m):
            ai = S[rows[r], so + i]
            if ai != 0:
                d = D[r, do:do + fo]
                for j in range(fo):
                    acc[j] += ai * d[j]
        if mu != 0:
            vw = VW[i]
            for j in range(fo):
                sgd_step(w, vw, 0, j, acc[j] / fm + lam * w[j], eta, mu, nesterov)
        elif lam != 0:
            for j in range(fo):
                w[j] -= eta * (acc[j] / fm + lam * w[j])
        else:
            c = eta / fm
            for j in range(fo):
                w[j] -= c * acc[j]
        for r in range(mn):  # the next batch's products with the updated row
            xn = N[next_rows[r], i]
            if xn != 0:
                for j in range(fo):
                    A[r, j] += xn * w[j]


@njit
def gather(X, rows, out):
    """out[:len(rows)] = X[rows] (an explicit loop: 3x faster than numba's slice assignment, measured)."""
    wide_vectors()
    n = X.shape[1]
    for r in range(rows.shape[0]):
        row = rows[r]
        for i in range(n):
            out[r, i] = X[row, i]


@njit
def batch_row_pass(W, Xb, m, D, c, Xn, mn, A, acc):
    """Plain SGD on a batch, W <- W - c Xb[:m]^T D[:m, :fo] with c = eta/m, then the next batch's
    products A[:mn, :fo] = Xn[:mn] W with the new W, in one pass over W's rows (as ``update_layer``).

    The gradient's sums run over r in the plain order, four terms per statement so that a partial sum
    stays in a register instead of going to memory and back: the same roundings as one term at a time.
    A zero input adds nothing: four rows' zeros (an input unused by the batch, as MNIST's border
    pixels are) are skipped together."""
    wide_vectors()
    fi, fo = W.shape
    zero = W.dtype.type(0)
    for i in range(fi):
        for j in range(fo):
            acc[j] = zero
        r = 0
        while r + 4 <= m:
            a0, a1, a2, a3 = Xb[r, i], Xb[r + 1, i], Xb[r + 2, i], Xb[r + 3, i]
            if a0 != 0 or a1 != 0 or a2 != 0 or a3 != 0:
                for j in range(fo):
                    acc[j] = (((acc[j] + a0 * D[r, j]) + a1 * D[r + 1, j]) + a2 * D[r + 2, j]) + a3 * D[r + 3, j]
            r += 4
        while r < m:
            a0 = Xb[r, i]
            if a0 != 0:
                for j in range(fo):
                    acc[j] += a0 * D[r, j]
            r += 1
        for j in range(fo):
            W[i, j] -= c * acc[j]
        for r in range(mn):  # the next batch's products with the updated row, while it is in cache
            x0 = Xn[r, i]
            if x0 != 0:
                for j in range(fo):
                    A[r, j] += x0 * W[i, j]


@njit
def small_row_pass(W, Xb, m, D, c, Xn, mn, A, S, K):
    """``batch_row_pass`` for batches of at most K rows (m, mn <= K, K = 2, 3 or 4), with its results (equal
    values; only the sign of an exact zero can differ, as its sums start from the first term, not from +0):
    one loop per row of W makes the gradient's sum, the update and the next batch's products, with K terms
    and K products whatever m and mn, so that it vectorizes without a branch. S, (8, fan_out): rows 0..K-1
    take D's m rows, zeros after them (adding 0 * 0 is exact), rows 4..4+K-1 the products, copied to A[:mn]
    at the end; three arrays in the loop, so that the compiler checks once that they do not overlap. K is
    a compile-time constant (``numba.literally``): each K is its own loop."""
    numba.literally(K)
    wide_vectors()
    fi, fo = W.shape
    zero = W.dtype.type(0)
    S[:, :fo] = zero
    for r in range(m):
        S[r, :fo] = D[r, :fo]
    for i in range(fi):
        a0 = Xb[0, i] if m > 0 else zero
        a1 = Xb[1, i] if m > 1 else zero
        a2 = Xb[2, i] if m > 2 else zero
        a3 = Xb[3, i] if m > 3 else zero
        x0 = Xn[0, i] if mn > 0 else zero
        x1 = Xn[1, i] if mn > 1 else zero
        x2 = Xn[2, i] if mn > 2 else zero
        x3 = Xn[3, i] if mn > 3 else zero
        if a0 == 0 and a1 == 0 and a2 == 0 and a3 == 0 and x0 == 0 and x1 == 0 and x2 == 0 and x3 == 0:
            continue  # an input no row uses: nothing to update or to add
        w = W[i]
        if K == 2:
            for j in range(fo):
                v = w[j] - c * (a0 * S[0, j] + a1 * S[1, j])
                w[j] = v
                S[4, j] += x0 * v
                S[5, j] += x1 * v
        elif K == 3:
            for j in range(fo):
                v = w[j] - c * ((a0 * S[0, j] + a1 * S[1, j]) + a2 * S[2, j])
                w[j] = v
                S[4, j] += x0 * v
                S[5, j] += x1 * v
                S[6, j] += x2 * v
        else:
            for j in range(fo):
                v = w[j] - c * (((a0 * S[0, j] + a1 * S[1, j]) + a2 * S[2, j]) + a3 * S[3, j])
                w[j] = v
                S[4, j] += x0 * v
                S[5, j] += x1 * v
                S[6, j] += x2 * v
                S[7, j] += x3 * v
    for r in range(mn):
        A[r, :fo] = S[4 + r, :fo]


@njit
def sgd_row_pass(W, x, xn, d, z, eta):
    """W <- W - eta x d^T, then z = xn W with the new W, in one pass over W's rows."""
    wide_vectors()
    fi, fo = W.shape
    for i in range(fi):
        c, a = eta * x[i], xn[i]
        if c == 0 and a == 0:  # a zero input (sparse data): nothing to update or to add
            continue
        for j in range(fo):
            v = W[i, j] - c * d[j]
            W[i, j] = v
            z[j] += a * v


@functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def sgd_column_pass(WT, c, xn, d, z):
    """``sgd_row_pass`` on the first layer's weights held transposed, WT = W^T (fan_out, fan_in), with c = eta x:
    w_ij <- w_ij - c_i d_j, then z_j = sum_i xn_i w_ij with the new weights, one column j of W at a time (a
    row of WT, contiguous, in cache from its update to its sum). z is set, not added to.

    Each z_j is a dot product of two contiguous runs, which the compiler vectorises when it may reorder the
    sum (fastmath "reassoc": several partial sums, added at the end, in an order fixed by the compiled code,
    the same in every call) and fuse multiply-adds ("contract": one rounding instead of two). Against the row
    pass over W, whose z is a vector of partial sums loaded and stored once per input row and whose loops
    restart 784 times: ``benchmarks/bench_batch1.py``, 70.2 against 94.4 ms per dense batch-1 epoch of 8,000
    rows, 784-100-10 float32 (Intel Xeon, one core, 512-bit vectors: ``wide_vectors``; 81 against 108 without
    them). It cannot skip the zero inputs that the row pass
    skips, so it is for inputs with few of them (``compiled.ROW_COLUMNS_MAX_SKIP``).

    Four columns per pass over c and xn (the rest, fan_out mod 4, one at a time): each c_i and xn_i is loaded
    once for four columns, and four sums run side by side. The column passes of a batch-1 epoch (784-100-10
    float32, 8,000 rows, a throwaway script on the AMD EPYC, Zen 5) took 30.9-32.8 ms against 42.7-44.0 one
    column at a time (33.1-33.9 two at a time). Which loop makes a column depends on fan_out only, so its
    bits do not depend on the data, the block or a resume."""
    wide_vectors()
    fo, fi = WT.shape
    j = 0
    while j + 3 < fo:
        d0, d1, d2, d3 = d[j], d[j + 1], d[j + 2], d[j + 3]
        w0, w1, w2, w3 = WT[j], WT[j + 1], WT[j + 2], WT[j + 3]
        s0 = s1 = s2 = s3 = WT.dtype.type(0)
        for i in range(fi):
            ci, xi = c[i], xn[i]
            v0, v1, v2, v3 = w0[i] - ci * d0, w1[i] - ci * d1, w2[i] - ci * d2, w3[i] - ci * d3
            w0[i], w1[i], w2[i], w3[i] = v0, v1, v2, v3
            s0 += xi * v0
            s1 += xi * v1
            s2 += xi * v2
            s3 += xi * v3
        z[j], z[j + 1], z[j + 2], z[j + 3] = s0, s1, s2, s3
        j += 4
    while j < fo:
        dj = d[j]
        w = WT[j]
        s = WT.dtype.type(0)
        for i in range(fi):
            v = w[i] - c[i] * dj
            w[i] = v
            s += xn[i] * v
        z[j] = s
        j += 1


@njit(inline="always")
def row_cost(a_row, z, y, oo, k_out, out, cost):
    """C_x of one row from its outputs a_row[oo:oo + k_out] and logits z (as in ``sgdlab.costs``)."""
    total = 0.0
    if cost == 0:
        for j in range(k_out):
            d = a_row[oo + j] - y[j]
            total += 0.5 * d * d
    elif out == 4:  # logsumexp(z) sum_k y_k - sum_k y_k z_k
        mx = z[0]
        for j in range(1, k_out):
            mx = max(mx, z[j])
        se, sy, syz = 0.0, 0.0, 0.0
        for j in range(k_out):
            se += np.exp(z[j] - mx)
            sy += y[j]
            syz += y[j] * z[j]
        total += (mx + np.log(se)) * sy - syz
    else:  # sum_j softplus(z_j) - y_j z_j
        for j in range(k_out):
            total += max(z[j], 0.0) + np.log1p(np.exp(-abs(z[j]))) - y[j] * z[j]
    return total


# The buffered stepper's elementwise passes over whole float32 arrays (``steppers.buffered``: batch GD and big
# batches). Loops over flat arrays, compiled with fused multiply-adds ("contract", no other license: nothing is
# reordered), so that they vectorize: 0.39 ms for the sigmoid of 8000 x 100 float32 against 1.45 ms for NumPy's
# four passes (np.exp is 1.05 ms of them), one pinned core, measured.
njit_vector: Any = functools.partial(numba.njit, cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
_EXP_OVER = np.float32(89.0)  # above 88.72 e^x overflows: 2^128 is written as inf, as np.exp gives


@njit_vector
def sigmoid32(w):
    """w <- 1/(1+e^{-w}) in place on a flat float32 array, the form and the saturation of NumPy's four passes
    (``activations``): e^{-w} inf where it overflows (sigma 0), 1 where w > 87.3 (sigma 1). e^x by
    ``exp_core32``, over [-87.3, 89]; NaN stays NaN (max and min keep a NaN first argument)."""
    wide_vectors()
    one = np.float32(1.0)
    for j in range(w.shape[0]):
        w[j] = one / (one + exp_core32(min(max(-w[j], _EXP_MIN), _EXP_OVER)))


@njit_vector
def sigmoid_times_grad32(d, a):
    """d <- d * a(1-a) on flat float32 arrays of one length: sigma' from the sigmoid's output a, the
    roundings of NumPy's three passes (1-a, times a, then d times that)."""
    wide_vectors()
    one = np.float32(1.0)
    for j in range(d.shape[0]):
        d[j] = d[j] * (a[j] * (one - a[j]))
