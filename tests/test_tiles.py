"""The register tiles of the ``blas`` kernel's forward and gradient products
(``_numba_kernels.forward_product``, ``gradient_product``): against a float64 product on every tile shape,
their bits independent of how rows are grouped, and where selection takes them."""

import numpy as np
import pytest

import sgdlab

pytest.importorskip("numba")
from sgdlab.steppers import _numba_kernels as nk  # noqa: E402
from sgdlab.steppers import compiled  # noqa: E402
from sgdlab.steppers._numba_kernels import MR, NV_MAX, VECTOR_BYTES  # noqa: E402

SENTINEL = -7.25


def padded_copy(W):
    vl = VECTOR_BYTES // W.itemsize
    Wp = np.zeros((W.shape[0], -(-W.shape[1] // vl) * vl), W.dtype)
    Wp[:, :W.shape[1]] = W
    return Wp


def product(X, xr, xc, m, K, W, Z, zr, zc):
    S = np.zeros((MR, NV_MAX * VECTOR_BYTES // X.itemsize), X.dtype)
    nk.forward_product(X, xr, xc, m, K, padded_copy(W), W.shape[1], Z, zr, zc, S)


def shapes_covered(vl):
    """Layer widths that make every tile shape for vectors of vl lanes: 1 to NV_MAX vectors, the last of vl or
    vl/2 lanes (``TAILS``), each with the most and the fewest lanes that take that width; then rows of tiles of
    several groups (4 vectors and more, ending in a partial last vector)."""
    edges = (vl, vl // 2 + 1, vl // 2, 1)
    return [vl * (nv - 1) + lanes for nv in range(1, NV_MAX + 1) for lanes in edges] + [100, 130]


WIDTHS = [(dtype, fo) for dtype, vl in (("float32", 16), ("float64", 8)) for fo in shapes_covered(vl)]


def test_the_tile_shapes_cover_every_width_and_the_narrowest_last_vector_is_taken():
    """``tile_variant`` picks the shape with the narrowest last vector that holds the lanes left (a wider one
    would give the same bits, only slower: the products' tests cannot tell), in ``tile_shapes``' order."""
    assert nk.TAILS == 2
    for vl in (16, 8):
        shapes = nk.tile_shapes(vl)
        assert len(shapes) == len(set(shapes)) == NV_MAX * nk.TAILS
        for nv in range(1, NV_MAX + 1):
            for lanes in range(1, vl + 1):
                assert shapes[nk.tile_variant(nv, lanes, vl)] == (nv, vl // 2 if lanes <= vl // 2 else vl)
    covered = set()  # (dtype, shape) of every group of tiles the widths below make, as tile_row splits them
    for dtype, fo in WIDTHS:
        vl = VECTOR_BYTES // np.dtype(dtype).itemsize
        nvt = -(-fo // vl)
        for g in range(0, nvt, NV_MAX):
            nv = min(NV_MAX, nvt - g)
            covered.add((dtype, nk.tile_shapes(vl)[nk.tile_variant(nv, fo - vl * (g + nv - 1), vl)]))
    assert len(covered) == 2 * NV_MAX * nk.TAILS


# m: tiles short of MR rows, whole tiles, a tile and a bit
@pytest.mark.parametrize(("dtype", "fo"), WIDTHS)
@pytest.mark.parametrize("m", [1, 5, 6, 13])
@pytest.mark.parametrize("K", [1, 2, 37])  # the k loop: one step only, one turn of two, a first step and turns
def test_forward_product_agrees_with_a_float64_product_and_writes_only_its_block(dtype, fo, m, K):
    rng = np.random.default_rng(fo * 100 + m + K)
    X = rng.standard_normal((m + 4, K + 3)).astype(dtype)  # the block at rows 2.., columns 3..
    W = rng.standard_normal((K, fo)).astype(dtype)
    Z = np.full((m + 3, fo + 9), SENTINEL, dtype)  # written at rows 1.., columns 5..
    product(X, 2, 3, m, K, W, Z, 1, 5)
    exact = X[2:2 + m, 3:].astype(np.float64) @ W.astype(np.float64)
    scale = np.abs(X[2:2 + m, 3:]).astype(np.float64) @ np.abs(W).astype(np.float64)  # bounds the rounding
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(Z[1:1 + m, 5:5 + fo] - exact) <= K * eps * scale)
    outside = np.ones(Z.shape, bool)
    outside[1:1 + m, 5:5 + fo] = False
    assert np.all(Z[outside] == SENTINEL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_product_bits_do_not_depend_on_how_rows_are_grouped(dtype):
    """Each element is its own sum over k in order, whatever tile or block its row falls in: made all at once,
    row by row, or from row 4 on, the bits are the same (so block cuts and resumes cannot change them)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((23, 784)).astype(dtype)
    W = rng.standard_normal((784, 100)).astype(dtype)
    whole, single, shifted = (np.zeros((23, 100), dtype) for _ in range(3))
    product(X, 0, 0, 23, 784, W, whole, 0, 0)
    for r in range(23):
        product(X, r, 0, 1, 784, W, single, r, 0)
    product(X, 0, 0, 4, 784, W, shifted, 0, 0)
    product(X, 4, 0, 19, 784, W, shifted, 4, 0)
    assert np.array_equal(whole, single) and np.array_equal(whole, shifted)


def test_forward_product_reads_and_writes_one_array_side_by_side():
    """A layer above the first reads its inputs from the activations' array and writes beside them."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((9, 30 + 20)).astype(np.float32)
    inputs = A[:, :30].copy()
    W = rng.standard_normal((30, 20)).astype(np.float32)
    product(A, 0, 0, 9, 30, W, A, 0, 30)
    assert np.array_equal(A[:, :30], inputs)
    np.testing.assert_allclose(A[:, 30:], inputs.astype(np.float64) @ W, rtol=1e-5, atol=1e-4)


def test_pad_weights_copies_the_tiled_layers_into_whole_vector_rows():
    sizes = np.array([5, 17, 3], np.int64)
    P = np.arange(5 * 17 + 17 + 17 * 3 + 3, dtype=np.float32)
    offW = np.array([0, 5 * 17 + 17], np.int64)
    WP = np.zeros(5 * 32 + 17 * 16, np.float32)
    nk.pad_weights(P, offW, sizes, WP, 0)
    for layer, (fi, fo) in enumerate([(5, 17), (17, 3)]):
        W = P[offW[layer]:offW[layer] + fi * fo].reshape(fi, fo)
        Wp = nk.padded(WP, sizes, layer, 4)
        assert np.array_equal(Wp, padded_copy(W))
    WP[:] = 0
    nk.pad_weights(P, offW, sizes, WP, 16)  # the 3-wide layer is not made by the tiles: not copied
    assert np.array_equal(nk.padded(WP, sizes, 0, 4), padded_copy(P[:85].reshape(5, 17)))
    assert not nk.padded(WP, sizes, 1, 4).any()
    with pytest.raises(ValueError, match="WP is shorter"):
        nk.pad_weights(P, offW, sizes, WP[:-1], 0)


def test_forward_product_refuses_rows_short_of_whole_vectors_and_strided_columns():
    X = np.ones((6, 4), np.float32)
    S = np.zeros((MR, NV_MAX * 16), np.float32)
    with pytest.raises(ValueError, match="whole vectors"):
        nk.forward_product(X, 0, 0, 6, 4, np.ones((4, 10), np.float32), 10, np.zeros((6, 10), np.float32), 0, 0, S)
    with pytest.raises(ValueError, match="unit column strides"):
        nk.forward_product(X, 0, 0, 6, 4, np.ones((4, 32), np.float32)[:, ::2], 10, np.zeros((6, 10), np.float32),
                           0, 0, S)


def ctx_for(dtype, batch_size):
    from sgdlab import optim
    from sgdlab.steppers import StepContext
    from sgdlab.train import _TrainingData

    rng = np.random.default_rng(0)
    net = sgdlab.Network([784, 100, 10], seed=0, dtype=dtype)
    data = _TrainingData.prepare(net, rng.random((200, 784)), rng.integers(0, 10, 200))
    return StepContext(net, data, optim.sgd(0.1), batch_size)


def test_tiles_are_chosen_for_float32_with_wide_vectors_from_their_least_batch(monkeypatch):
    monkeypatch.setattr(compiled, "wide_vector_code", lambda: True)
    monkeypatch.setattr(compiled, "row_block", lambda ctx: min(167, ctx.batch_size))
    monkeypatch.setattr(compiled, "blas_wide_kernels", lambda: True)
    assert compiled.tiled_products(ctx_for("float32", compiled.TILES_MIN_BATCH))
    assert not compiled.tiled_products(ctx_for("float32", compiled.TILES_MIN_BATCH - 1))
    assert not compiled.tiled_products(ctx_for("float64", 128))
    monkeypatch.setattr(compiled, "FORWARD_TILES", False)
    assert not compiled.tiled_products(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "FORWARD_TILES", True)
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 2)  # big products on two BLAS threads
    assert not compiled.tiled_products(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 1)
    assert compiled.tiled_products(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "wide_vector_code", lambda: False)
    assert not compiled.tiled_products(ctx_for("float32", 128))


def test_wide_vector_code_follows_the_features_numba_compiles_for(monkeypatch):
    """numba compiles for the host's features unless NUMBA_CPU_FEATURES lists others; NUMBA_CPU_NAME alone
    does not change them (numba.core.codegen), so it does not change the answer either."""
    import llvmlite.binding as llvm
    from numba.core import config

    check = compiled.wide_vector_code.__wrapped__
    host = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(config, "CPU_NAME", None)
    assert check() == host
    monkeypatch.setattr(config, "CPU_NAME", "haswell")
    assert check() == host
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+fma,+avx512f")
    assert check()
    monkeypatch.setattr(config, "CPU_FEATURES", "+avx2,+fma,-avx512f")
    assert not check()


def test_a_float32_fit_takes_the_tiles_where_they_pay_and_agrees_with_gemm(monkeypatch):
    """On this machine's numba target: tiles at batch 32 in float32 where the CPU has 512-bit vectors (one
    BLAS thread); the same updates as gemm's up to rounding."""
    from threadpoolctl import threadpool_limits

    if compiled.gemm_address("float32") is None:
        pytest.skip("NumPy's BLAS exports no CBLAS gemm with 64-bit integers here")
    rng = np.random.default_rng(3)
    X, y = rng.random((96, 784), dtype=np.float32), rng.integers(0, 10, 96)

    def fit():
        net = sgdlab.Network([784, 100, 10], seed=0, dtype="float32")
        h = sgdlab.fit(net, X, y, batch_size=32, epochs=2, lr=0.5, seed=1, stepper="compiled", eval_train=False)
        return net, h.config["stepper_info"]["forward_products"]

    with threadpool_limits(1):
        tiled, how = fit()
        assert how == ("tiles" if compiled.wide_vector_code() else "gemm")
        monkeypatch.setattr(compiled, "FORWARD_TILES", False)
        plain, how = fit()
    assert how == "gemm"
    for (W1, b1), (W2, b2) in zip(tiled.params, plain.params, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)


# ----- the gradient products a^T delta (``_numba_kernels.gradient_product``)
def gradient(X, xr, xc, K, fi, D, dc, fo, G, accumulate):
    S = np.zeros((MR, NV_MAX * VECTOR_BYTES // X.itemsize), X.dtype)
    nk.gradient_product(X, xr, xc, K, fi, D, dc, fo, G, accumulate, S)


# fo: partial vectors, whole ones, groups of 4 and more; fi: tiles short of MR, whole, and a bit more; K: none,
# one step, one turn, several k chunks (GRAD_KC rows each) with an odd last one
@pytest.mark.parametrize(("dtype", "fo"), WIDTHS)
@pytest.mark.parametrize("fi", [1, 5, 6, 13])
@pytest.mark.parametrize("K", [0, 1, 2, 2 * nk.GRAD_KC + 37])
def test_gradient_product_agrees_with_a_float64_product_and_writes_only_its_block(dtype, fo, fi, K):
    rng = np.random.default_rng(fo * 1000 + fi * 10 + K)
    X = rng.standard_normal((K + 5, fi + 3)).astype(dtype)
    D = rng.standard_normal((K + 1, fo + 2)).astype(dtype)
    big = np.full((fi + 2, fo + 20), SENTINEL, dtype)  # G is a view inside it, rows longer than fo
    G0 = rng.standard_normal((fi, fo)).astype(dtype)
    big[1:1 + fi, 3:3 + fo] = G0
    G = big[1:1 + fi, 3:3 + fo]
    ref = X[2:2 + K, 1:1 + fi].astype(np.float64).T @ D[1:1 + K, 2:2 + fo].astype(np.float64)
    gradient(X, 2, 1, K, fi, D[1:], 2, fo, G, True)
    tol = 1e-5 if dtype == "float32" else 1e-12
    scale = 1.0 + np.abs(X).max() * np.abs(D).max() * K
    np.testing.assert_allclose(G, G0 + ref, rtol=tol, atol=tol * scale)
    gradient(X, 2, 1, K, fi, D[1:], 2, fo, G, False)
    np.testing.assert_allclose(G, ref, rtol=tol, atol=tol * scale)
    outside = np.ones(big.shape, bool)
    outside[1:1 + fi, 3:3 + fo] = False
    assert (big[outside] == SENTINEL).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradient_product_bits_do_not_depend_on_how_rows_are_split(dtype):
    """One chain of fused multiply-adds per element over the rows in order, continued from G's value: rows in
    blocks of any size, added one after another, give the bits of one block of all of them."""
    rng = np.random.default_rng(7)
    X, D = rng.random((301, 40)).astype(dtype), rng.random((301, 70)).astype(dtype)
    whole = np.zeros((40, 70), dtype)
    gradient(X, 0, 0, 301, 40, D, 0, 70, whole, False)
    for size in (1, 7, 64, 167):
        G = np.zeros((40, 70), dtype)
        for q in range(0, 301, size):
            gradient(X, q, 0, min(size, 301 - q), 40, D[q:], 0, 70, G, q > 0)
        assert np.array_equal(G, whole), size


def test_gradient_product_refuses_strided_columns_and_short_scratch_rows():
    X, D, G = np.ones((4, 6), np.float32), np.ones((4, 10), np.float32), np.zeros((6, 10), np.float32)
    with pytest.raises(ValueError, match="S must hold MR rows of NV_MAX vectors"):
        nk.gradient_product(X, 0, 0, 4, 6, D, 0, 10, G, False, np.zeros((MR - 1, 64), np.float32))
    S = np.zeros((MR, 64), np.float32)
    with pytest.raises(ValueError, match="X, D and G need unit column strides"):
        nk.gradient_product(X, 0, 0, 4, 6, np.ones((4, 20), np.float32)[:, ::2], 0, 10, G, False, S)


class FakeBlas:
    def __init__(self, api, architecture):
        self.internal_api, self.architecture = api, architecture


def test_blas_wide_kernels_reads_the_core_openblas_runs(monkeypatch):
    from sgdlab.steppers import threads

    check = compiled.blas_wide_kernels.__wrapped__
    for api, arch, wide in [("openblas", "SkylakeX", True), ("openblas", "Haswell", False),
                            ("openblas", "Zen", False), ("openblas", "SapphireRapids", True), ("mkl", None, True),
                            ("openblas", None, True), ("openblas", "SomeNewCore", True)]:
        fake = FakeBlas(api, arch)
        monkeypatch.setattr(threads, "_numpy_blas", lambda fake=fake: fake)
        assert check() == wide, (api, arch)
    monkeypatch.setattr(threads, "_numpy_blas", lambda: None)
    assert check()


def test_gradient_tiles_are_chosen_where_numpys_blas_or_the_cpus_vectors_are_narrow(monkeypatch):
    monkeypatch.setattr(compiled, "wide_vector_code", lambda: True)
    monkeypatch.setattr(compiled, "row_block", lambda ctx: min(167, ctx.batch_size))
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 1)
    monkeypatch.setattr(compiled, "blas_wide_kernels", lambda: False)
    least = compiled.GRADIENT_TILES_MIN_BATCH
    assert compiled.gradient_tiles(ctx_for("float32", least))
    assert not compiled.gradient_tiles(ctx_for("float32", least - 1))
    assert not compiled.gradient_tiles(ctx_for("float64", 128))
    # the forward tiles start earlier where gemm has no wide kernels
    assert compiled.tiled_products(ctx_for("float32", compiled.TILES_MIN_BATCH_NARROW_BLAS))
    assert not compiled.tiled_products(ctx_for("float32", compiled.TILES_MIN_BATCH_NARROW_BLAS - 1))
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 2)
    assert not compiled.gradient_tiles(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "products_threads", lambda sizes, rows: 1)
    monkeypatch.setattr(compiled, "GRADIENT_TILES", False)
    assert not compiled.gradient_tiles(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "GRADIENT_TILES", True)
    monkeypatch.setattr(compiled, "wide_vector_code", lambda: False)
    assert not compiled.gradient_tiles(ctx_for("float32", 128))
    monkeypatch.setattr(compiled, "wide_vector_code", lambda: True)
    monkeypatch.setattr(compiled, "blas_wide_kernels", lambda: True)
    monkeypatch.setattr(compiled, "split_wide_vectors", lambda: False)
    assert not compiled.gradient_tiles(ctx_for("float32", 128))
    # NumPy's BLAS with 512-bit kernels, on a CPU that splits 512-bit vectors in two: from their own least batch
    monkeypatch.setattr(compiled, "split_wide_vectors", lambda: True)
    least = compiled.GRADIENT_TILES_MIN_BATCH_SPLIT
    assert compiled.gradient_tiles(ctx_for("float32", least))
    assert not compiled.gradient_tiles(ctx_for("float32", least - 1))
    assert not compiled.gradient_tiles(ctx_for("float64", least))
    monkeypatch.setattr(compiled, "GRADIENT_TILES", False)
    assert not compiled.gradient_tiles(ctx_for("float32", least))


def test_split_wide_vectors_reads_the_cpus_vendor_and_family(monkeypatch):
    from sgdlab import machine

    check = compiled.split_wide_vectors.__wrapped__
    for family, split in [(("AuthenticAMD", 25), True), (("AuthenticAMD", 26), False), (("AuthenticAMD", 23), False),
                          (("GenuineIntel", 6), False), (None, False)]:
        monkeypatch.setattr(machine, "cpu_family", lambda family=family: family)
        assert check() == split, family


def test_a_float32_fit_with_the_gradient_tiles_agrees_with_gemm(monkeypatch):
    """Batch GD in 2-row blocks and a mini-batch in one block, gradient products by the tiles against gemm's."""
    from threadpoolctl import threadpool_limits

    if compiled.gemm_address("float32") is None:
        pytest.skip("NumPy's BLAS exports no CBLAS gemm with 64-bit integers here")
    rng = np.random.default_rng(4)
    X, y = rng.random((96, 784), dtype=np.float32), rng.integers(0, 10, 96)

    def fit(**how):
        net = sgdlab.Network([784, 100, 10], seed=0, dtype="float32")
        h = sgdlab.fit(net, X, y, epochs=2, lr=0.5, seed=1, stepper="compiled", eval_train=False, **how)
        return net, h.config["stepper_info"]["gradient_products"]

    with threadpool_limits(1):
        for how in ({"batch_size": 32}, {"method": "batch"}):
            monkeypatch.setattr(compiled, "row_block", lambda ctx: min(40, ctx.batch_size))
            monkeypatch.setattr(compiled, "gradient_tiles", lambda ctx: True)
            tiled, used = fit(**how)
            assert used == "tiles"
            monkeypatch.setattr(compiled, "gradient_tiles", lambda ctx: False)
            plain, used = fit(**how)
            assert used == "gemm"
            for (W1, b1), (W2, b2) in zip(tiled.params, plain.params, strict=True):
                np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)


GUARDED = r"""
import ctypes, mmap, sys
import numpy as np
from sgdlab.steppers import _numba_kernels as nk

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def at_page_end(shape, dtype):
    # an array whose last element ends where an unreadable page begins
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-nbytes // PAGE) + 1
    buf = mmap.mmap(-1, (pages + 1) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert libc.mprotect(base + pages * PAGE, PAGE, 0) == 0
    a = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=pages * PAGE - nbytes)
    return a.reshape(shape), buf


rng = np.random.default_rng(0)
for dtype, fo in WIDTHS:
    vl = nk.VECTOR_BYTES // np.dtype(dtype).itemsize
    S = np.zeros((nk.MR, nk.NV_MAX * vl), dtype)
    for K in (1, 3, 70):
        fi = 7
        X, kx = at_page_end((K, fi), dtype)
        D, kd = at_page_end((K, fo), dtype)
        G, kg = at_page_end((fi, fo), dtype)
        X[:] = rng.random((K, fi)); D[:] = rng.random((K, fo)); G[:] = np.nan
        nk.gradient_product(X, 0, 0, K, fi, D, 0, fo, G, False, S)
        assert np.allclose(G, X.T.astype(np.float64) @ D, rtol=1e-4), ("gradient", dtype, fo, K)
        # the forward product: X (7 x K) and its padded weights end at unreadable pages, Z (7 x fo) too
        Wp, kw = at_page_end((K, -(-fo // vl) * vl), dtype)
        Z, kz = at_page_end((fi, fo), dtype)
        Wp[:] = 0.0; Wp[:, :fo] = rng.random((K, fo)); Z[:] = np.nan
        XT = np.ascontiguousarray(X.T)
        Xf, kf = at_page_end(XT.shape, dtype)
        Xf[:] = XT
        nk.forward_product(Xf, 0, 0, fi, K, Wp, fo, Z, 0, 0, S)
        assert np.allclose(Z, Xf.astype(np.float64) @ Wp[:, :fo], rtol=1e-4), ("forward", dtype, fo, K)
print("ok")
"""


def test_tile_products_touch_nothing_past_their_arrays():
    """The last vectors of D's, G's and Z's rows are read and written under a mask, of every width of every
    tile shape: with every array ending where an unreadable page begins, nothing past them is read or written
    (in a child process: a fault would end it)."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("mprotect through ctypes: Linux")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    script = f"WIDTHS = {WIDTHS!r}\n" + GUARDED
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_gradient_tiles_on_layers_above_the_first_agree_with_gemm(monkeypatch):
    """Two tiled layers (the second reads its inputs from the activations' workspace), rows in blocks of 130
    with a partial last one, more rows per block than a k chunk: the same updates as gemm's up to rounding."""
    from threadpoolctl import threadpool_limits

    if compiled.gemm_address("float32") is None:
        pytest.skip("NumPy's BLAS exports no CBLAS gemm with 64-bit integers here")
    rng = np.random.default_rng(5)
    X, y = rng.random((300, 60), dtype=np.float32), rng.integers(0, 10, 300)
    monkeypatch.setattr(compiled, "row_block", lambda ctx: min(130, ctx.batch_size))
    monkeypatch.setattr(compiled, "TILES_MIN_VECTORS", 2)  # the 40- and 35-wide layers, not the 10-wide one

    def fit(tiles):
        monkeypatch.setattr(compiled, "gradient_tiles", lambda ctx: tiles)
        net = sgdlab.Network([60, 40, 35, 10], seed=0, dtype="float32")
        h = sgdlab.fit(net, X, y, batch_size=150, epochs=2, lr=0.5, seed=1, stepper="compiled", eval_train=False)
        info = h.config["stepper_info"]
        assert info["gradient_tiled_layers"] == (2 if tiles else 0) and info["row_block"] == 130
        return net

    with threadpool_limits(1):
        tiled, plain = fit(True), fit(False)
    for (W1, b1), (W2, b2) in zip(tiled.params, plain.params, strict=True):
        np.testing.assert_allclose(W1, W2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b1, b2, rtol=1e-5, atol=1e-6)
