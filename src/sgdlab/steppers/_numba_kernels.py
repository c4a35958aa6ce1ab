"""The numba kernels of the compiled stepper (``steppers.compiled``), at module level so that
numba's on-disk cache (``cache=True``) finds them again in a new process. Importing this module
imports numba; ``steppers.compiled`` imports it only when the compiled stepper runs."""

import functools

import numba
import numpy as np

njit = functools.partial(numba.njit, cache=True, nogil=True)


@njit
def activate(z, lo, hi, code):
    if code == 0:  # sigmoid, without overflow: e^{-|z|} <= 1
        for j in range(lo, hi):
            v = z[j]
            if v >= 0:
                z[j] = 1.0 / (1.0 + np.exp(-v))
            else:
                e = np.exp(v)
                z[j] = e / (1.0 + e)
    elif code == 1:
        for j in range(lo, hi):
            z[j] = np.tanh(z[j])
    elif code == 2:
        for j in range(lo, hi):
            if z[j] < 0:
                z[j] = 0.0
    elif code == 4:  # softmax over the row's slice
        mx = z[lo]
        for j in range(lo + 1, hi):
            mx = max(mx, z[j])
        s = 0.0
        for j in range(lo, hi):
            z[j] = np.exp(z[j] - mx)
            s += z[j]
        for j in range(lo, hi):
            z[j] = z[j] / s


@njit
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
def block(P, V, H, offW, offb, sizes, uoff, X, T, idx, starts, etas, hidden, out, cost, nesterov,
          A, Z, D, acc, costs, want_costs):
    """Make len(etas) updates. P/V: flat params/velocity; H = [mu, lam] in the params' dtype;
    A, Z, D: (max batch, units) workspaces for activations, output logits and deltas."""
    L = sizes.shape[0] - 1
    mu, lam = H[0], H[1]
    k_out = sizes[L]
    oo = uoff[L - 1]  # column offset of the output layer in A and D
    for u in range(etas.shape[0]):
        r0, r1 = starts[u], starts[u + 1]
        m = r1 - r0
        eta = etas[u]
        total = 0.0
        # forward: z_l = a_{l-1} W_l + b_l, a_l = f(z_l); A[r] holds row r's layers side by side.
        # One row: z += a_i W_i over the inputs. Several: the same, each row W_i read once for all rows.
        for l in range(L):
            fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
            W, b = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo)), P[offb[l]:offb[l] + fo]
            A[:m, o:o + fo] = 0.0
            if m == 1:
                a_in = X[idx[r0]] if l == 0 else A[0, uoff[l - 1]:uoff[l - 1] + fi]
                z = A[0, o:o + fo]
                for i in range(fi):
                    ai = a_in[i]
                    if ai != 0:  # exact: a zero input adds nothing (sparse inputs such as MNIST pixels)
                        for j in range(fo):
                            z[j] += ai * W[i, j]
            else:
                for i in range(fi):
                    w = W[i]
                    for r in range(m):
                        ai = X[idx[r0 + r], i] if l == 0 else A[r, uoff[l - 1] + i]
                        if ai != 0:
                            z = A[r, o:o + fo]
                            for j in range(fo):
                                z[j] += ai * w[j]
            for r in range(m):
                z = A[r, o:o + fo]
                for j in range(fo):
                    z[j] += b[j]
                if l == L - 1:
                    Z[r, :] = z
                activate(A[r], o, o + fo, out if l == L - 1 else hidden)
        for r in range(m):
            # the output error delta_L and the cost of this row
            y = T[idx[r0 + r]]
            if cost == 1:  # cross-entropy with its natural output: delta = a - y
                for j in range(k_out):
                    D[r, oo + j] = A[r, oo + j] - y[j]
            elif out == 4:  # quadratic cost through the softmax Jacobian
                s = 0.0
                for j in range(k_out):
                    s += (A[r, oo + j] - y[j]) * A[r, oo + j]
                for j in range(k_out):
                    a = A[r, oo + j]
                    D[r, oo + j] = a * ((a - y[j]) - s)
            else:
                for j in range(k_out):
                    a = A[r, oo + j]
                    D[r, oo + j] = (a - y[j]) * slope(a, out)
            if want_costs:
                if cost == 0:
                    for j in range(k_out):
                        d = A[r, oo + j] - y[j]
                        total += 0.5 * d * d
                elif out == 4:  # logsumexp(z) sum_k y_k - sum_k y_k z_k
                    mx = Z[r, 0]
                    for j in range(1, k_out):
                        mx = max(mx, Z[r, j])
                    se, sy, syz = 0.0, 0.0, 0.0
                    for j in range(k_out):
                        se += np.exp(Z[r, j] - mx)
                        sy += y[j]
                        syz += y[j] * Z[r, j]
                    total += (mx + np.log(se)) * sy - syz
                else:  # sum_j softplus(z_j) - y_j z_j
                    for j in range(k_out):
                        z = Z[r, j]
                        total += max(z, 0.0) + np.log1p(np.exp(-abs(z))) - y[j] * z
            # backward: delta_{l-1} = (W_l delta_l) * f'(a_{l-1})
            for l in range(L - 1, 0, -1):
                fi, fo, o, oi = sizes[l], sizes[l + 1], uoff[l], uoff[l - 1]
                W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
                d, d_in, a_in = D[r, o:o + fo], D[r, oi:oi + fi], A[r, oi:oi + fi]
                for i in range(fi):
                    s = 0.0
                    for j in range(fo):
                        s += W[i, j] * d[j]
                    d_in[i] = s * slope(a_in[i], hidden)
        if want_costs:
            costs[u] = total / m
        # the update of every layer, from the deltas of all m rows
        fm = P.dtype.type(m)
        plain = mu == 0 and lam == 0
        for l in range(L):
            fi, fo, o = sizes[l], sizes[l + 1], uoff[l]
            W = P[offW[l]:offW[l] + fi * fo].reshape((fi, fo))
            acc_l = acc[:fo]
            for i in range(fi):
                if m == 1 and plain:  # W_i <- W_i - (eta a_i / 1) delta: one pass, nothing to add for a_i = 0
                    ai = X[idx[r0], i] if l == 0 else A[0, uoff[l - 1] + i]
                    if ai != 0:
                        c = eta * ai
                        d = D[0, o:o + fo]
                        for j in range(fo):
                            W[i, j] -= c * d[j]
                    continue
                acc_l[:] = 0.0
                for r in range(m):
                    ai = X[idx[r0 + r], i] if l == 0 else A[r, uoff[l - 1] + i]
                    if ai != 0:
                        d = D[r, o:o + fo]
                        for j in range(fo):
                            acc_l[j] += ai * d[j]
                if mu != 0:
                    vW = V[offW[l] + i * fo:offW[l] + (i + 1) * fo]
                    for j in range(fo):
                        g = acc_l[j] / fm + lam * W[i, j]
                        v = mu * vW[j] + g
                        vW[j] = v
                        W[i, j] -= eta * (g + mu * v if nesterov else v)
                elif lam != 0:
                    for j in range(fo):
                        W[i, j] -= eta * (acc_l[j] / fm + lam * W[i, j])
                else:
                    c = eta / fm
                    for j in range(fo):
                        W[i, j] -= c * acc_l[j]
            b = P[offb[l]:offb[l] + fo]
            for j in range(fo):
                s = D[0, o + j]
                for r in range(1, m):
                    s += D[r, o + j]
                g = s / fm
                if mu != 0:
                    v = mu * V[offb[l] + j] + g
                    V[offb[l] + j] = v
                    g = g + mu * v if nesterov else v
                b[j] -= eta * g

