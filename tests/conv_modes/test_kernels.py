"""Every conv_mode kernel equals dense torch conv2d / linear (Caffe: every mode must produce LOWERED_GEMM's
output), for weight patterns from dense to all-zero, with groups, stride, pad and dilation."""
import warnings

import pytest
import torch
import torch.nn.functional as F

from caffessl.conv_modes import (CCNMMConv, CSRMMConv, ConvGeometry, LoweredGemmConv, auto, mkl)
from caffessl.conv_modes.inner_product import CCNMMIP, CSRMMIP, ip_structure
from caffessl.conv_modes.lowering import structure

PATTERNS = ["dense", "u50", "u75", "u90", "u95", "rc25", "rc50", "rc75", "zero"]
GEOMS = {  # channels, num_output, kernel, stride, pad, dilation, group
    "plain": (6, 8, 3, 1, 1, 1, 1),
    "group2_stride2": (8, 6, 3, 2, 0, 1, 2),
    "group2_pad2_dil2": (4, 6, 3, 1, 2, 2, 2),
    "rect_1x1_group3": (6, 9, 1, 1, 0, 1, 3),
    "k5_stride3_pad1": (3, 4, 5, 3, 1, 1, 1),
    "nopad_dil2": (4, 6, 3, 1, 0, 2, 1),     # stride 1, no pad: wide lowered rows read past the last image
}


def sparsify(w: torch.Tensor, pattern: str, group: int, gen) -> torch.Tensor:
    """Zero a weight (O, C/g, kh, kw) in place: unstructured fraction, or a fraction of rows and columns."""
    if pattern == "zero":
        return w.zero_()
    if pattern.startswith("u"):
        frac = int(pattern[1:]) / 100
        w[torch.rand(w.shape, generator=gen) < frac] = 0
    elif pattern.startswith("rc"):
        frac = int(pattern[2:]) / 100
        wm = w.view(group, w.shape[0] // group, -1)
        g, m, k = wm.shape
        rows = torch.randperm(m, generator=gen)[:round(frac * m)]
        cols = torch.randperm(k, generator=gen)[:round(frac * k)]
        wm[:, rows, :] = 0
        wm[:, :, cols] = 0
    return w


def conv_case(geom_name, pattern, seed=0):
    c, o, k, s, p, d, g = GEOMS[geom_name]
    gen = torch.Generator().manual_seed(seed)
    geom = ConvGeometry(c, o, (k, k), (s, s), (p, p), (d, d), g)
    w = sparsify(torch.randn(o, c // g, k, k, generator=gen), pattern, g, gen)
    b = torch.randn(o, generator=gen)
    x = torch.randn(2, c, 9, 11, generator=gen)
    return geom, w, b, x, F.conv2d(x, w, b, geom.stride, geom.pad, geom.dilation, g)


def assert_close(y, ref):
    assert y.shape == ref.shape
    tol = 1e-4 * float(ref.abs().max()) + 1e-6
    assert float((y - ref).abs().max()) <= tol


KERNELS = {
    "ccnmm": lambda geom, w: CCNMMConv(geom, w),
    "csrmm_mkl": lambda geom, w: CSRMMConv(geom, w, backend="mkl"),                 # direct at stride 1
    "csrmm_mkl_lowered": lambda geom, w: CSRMMConv(geom, w, backend="mkl", direct=False),
    "csrmm_torch": lambda geom, w: CSRMMConv(geom, w, backend="torch"),
    "lowered_gemm": lambda geom, w: LoweredGemmConv(geom, w),
}


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("geom_name", list(GEOMS))
def test_conv_kernel_matches_dense_conv2d(kernel, pattern, geom_name):
    if kernel.startswith("csrmm_mkl") and mkl.load() is None:
        pytest.skip("libmkl_rt is not loadable here (pip install mkl)")
    geom, w, b, x, ref = conv_case(geom_name, pattern)
    k = KERNELS[kernel](geom, w)
    assert_close(k(x, w, b), ref)
    assert_close(k(x, w, None), ref - b.view(1, -1, 1, 1))


def test_structure_counts_rows_and_columns_per_group():
    w = torch.ones(4, 3, 2, 2)          # group 2: two 2 x 12 blocks
    w[1] = 0                            # a zero filter in group 0
    w[2:, 0, 0, 0] = 0                  # column (c=0, 0, 0) of group 1 only
    st = structure(w, 2)
    assert st.zero_rows == 1 and st.zero_cols == 1
    assert st.row_kept.tolist() == [True, False, True, True]
    assert st.col_kept[1, 0].item() is False and st.col_kept[0, 0].item() is True
    # group 0: 1 row x 12 cols, group 1: 2 rows x 11 cols, out of 4 x 12
    assert st.remaining_fraction() == pytest.approx((12 + 22) / 48)


def test_ccnmm_gathers_only_kept_columns():
    geom, w, b, x, ref = conv_case("group2_stride2", "rc50")
    k = CCNMMConv(geom, w)
    assert sum(k.left_cols) == int(structure(w, 2).col_kept.sum()) < geom.group * geom.K
    assert k.rows == int(structure(w, 2).row_kept.sum())


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", ["ccnmm", "csrmm_mkl", "csrmm_torch"])
def test_inner_product_kernels_match_linear(kind, pattern, transpose):
    if kind == "csrmm_mkl" and mkl.load() is None:
        pytest.skip("libmkl_rt is not loadable here")
    gen = torch.Generator().manual_seed(1)
    wm = sparsify(torch.randn(12, 20, 1, 1, generator=gen), pattern, 1, gen).view(12, 20)
    w = wm.t().contiguous() if transpose else wm
    b = torch.randn(12, generator=gen)
    x = torch.randn(5, 20, generator=gen)
    ref = F.linear(x, wm, b)
    k = (CCNMMIP(wm, transpose) if kind == "ccnmm"
         else CSRMMIP(wm, transpose, backend=kind.split("_")[1]))
    assert_close(k(x, w, b), ref)


def test_auto_rule_picks_by_measured_sparsity():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(32, 16, 3, 3, generator=gen)
    assert auto.choose(structure(w, 1)) == "gemm"
    assert auto.choose(structure(sparsify(w.clone(), "rc50", 1, gen), 1)) == "ccnmm"   # f = 0.25
    assert auto.choose(structure(sparsify(w.clone(), "u95", 1, gen), 1)) == "csrmm"
    assert auto.choose(structure(sparsify(w.clone(), "u50", 1, gen), 1)) == "gemm"
    assert auto.choose(ip_structure(torch.zeros(4, 5))) == "ccnmm"


def _channel_sparse(w, group, gen, rows=0.25):
    """Zero whole input channels (all kh*kw columns) and some filters, differently per group."""
    g = group
    o, cg = w.shape[0], w.shape[1]
    for gi in range(g):
        blk = w[gi * (o // g):(gi + 1) * (o // g)]
        blk[:, torch.randperm(cg, generator=gen)[:max(1, cg // 2 - gi)]] = 0     # unequal counts per group
        blk[torch.randperm(blk.shape[0], generator=gen)[:round(rows * blk.shape[0]) + gi]] = 0
    return w


@pytest.mark.parametrize("variant", ["gather", "conv"])
@pytest.mark.parametrize("pattern", ["dense", "u75", "rc50", "chan", "zero"])
@pytest.mark.parametrize("geom_name", list(GEOMS))
def test_ccnmm_variants_and_image_chunks_match_conv2d(variant, pattern, geom_name, monkeypatch):
    """Both CCNMM variants, one grouped call or one call per group (unequal kept counts), with the batch
    split into one-image chunks (a tiny chunk budget) and whole."""
    from caffessl.conv_modes import ccnmm, lowering
    c, o, k, s, p, d, g = GEOMS[geom_name]
    gen = torch.Generator().manual_seed(3)
    geom = ConvGeometry(c, o, (k, k), (s, s), (p, p), (d, d), g)
    w = torch.randn(o, c // g, k, k, generator=gen)
    w = _channel_sparse(w, g, gen) if pattern == "chan" else sparsify(w, pattern, g, gen)
    b = torch.randn(o, generator=gen)
    x = torch.randn(3, c, 9, 11, generator=gen)
    ref = F.conv2d(x, w, b, geom.stride, geom.pad, geom.dilation, g)
    kern = CCNMMConv(geom, w, variant=variant)
    assert kern.variant == variant
    for budget in (1, 1 << 30):
        monkeypatch.setattr(ccnmm, "chunk_budget", lambda i, o, budget=budget: budget)
        monkeypatch.setattr(ccnmm, "LOWERED_BYTES", budget)
        monkeypatch.setattr(lowering, "CHUNK_BYTES", budget)
        oh, ow = geom.out_hw(9, 11)
        assert [m for _, m in kern._chunks(x, oh, ow)] == ([1, 1, 1] if budget == 1 else [3])
        assert_close(kern(x, w, b), ref)
        assert_close(kern(x[:1], w, None), ref[:1] - b.view(1, -1, 1, 1))
    if pattern == "chan" and g > 1:
        live = int(structure(w, g).row_kept.reshape(g, -1).any(1).sum())
        assert len(kern.parts) == live     # unequal kept counts per group: one call per group with a kept row


def test_ccnmm_rule_picks_conv_for_whole_channels_and_gather_for_scattered_columns():
    gen = torch.Generator().manual_seed(4)
    geom = ConvGeometry(16, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    w = torch.randn(8, 16, 3, 3, generator=gen)
    w[:, :8] = 0                                               # half the channels, whole
    assert CCNMMConv(geom, w).variant == "conv"
    w = torch.randn(8, 16, 3, 3, generator=gen)
    w[:, :, 0, :] = 0
    w[:, :, :, 0] = 0                                          # 5 of 9 columns of every channel
    st = structure(w, 1)
    assert st.col_kept.reshape(16, 9).any(1).all() and int(st.col_kept.sum()) == 16 * 4
    assert CCNMMConv(geom, w).variant == "gather"              # conv work 9/4 x the gather's > CONV_SLACK


@pytest.mark.parametrize("budget", [1, 1 << 30])
@pytest.mark.parametrize("geom_name", ["group2_stride2", "group2_pad2_dil2", "nopad_dil2"])
def test_csrmm_image_chunks_match_conv2d(budget, geom_name, monkeypatch):
    """Every CSRMM form (MKL direct at stride 1, MKL and torch lowered) with one-image chunks and whole."""
    from caffessl.conv_modes import csrmm
    monkeypatch.setattr(csrmm, "CHUNK_BYTES", budget)
    geom, w, b, x, ref = conv_case(geom_name, "u75")
    forms = [dict(backend="torch")]
    if mkl.load() is not None:
        forms += [dict(backend="mkl"), dict(backend="mkl", direct=False)]
    for form in forms:
        k = CSRMMConv(geom, w, **form)
        assert (k.direct is not None) == (form.get("direct", True) and form["backend"] == "mkl"
                                          and geom.stride == (1, 1))
        assert_close(k(x, w, b), ref)
        assert_close(k(x[1:], w, None), ref[1:] - b.view(1, -1, 1, 1))


def test_pad_buffer_matches_f_pad_across_reuse_and_new_sizes():
    """The reused zero-bordered buffer gives F.pad's result for shrinking, growing and reshaped chunks
    (its border is never written by a copy), and CCNMM stays exact across input sizes."""
    from caffessl.conv_modes.lowering import PadBuffer
    gen = torch.Generator().manual_seed(5)
    buf = PadBuffer()
    for shape in [(3, 4, 6, 5), (1, 4, 6, 5), (2, 4, 6, 5), (4, 4, 6, 5), (2, 4, 3, 7), (2, 4, 6, 5)]:
        x = torch.randn(shape, generator=gen) * 100
        got = buf(x, 2, 1)
        assert torch.equal(got, F.pad(x, (1, 1, 2, 2)))
    geom, w, b, _, _ = conv_case("plain", "rc50")
    kern = CCNMMConv(geom, w, variant="gather")
    for hw in [(9, 11), (5, 4), (9, 11), (12, 3)]:
        x = torch.randn(2, geom.channels, *hw, generator=gen)
        assert_close(kern(x, w, b), F.conv2d(x, w, b, geom.stride, geom.pad, geom.dilation, geom.group))


@pytest.mark.parametrize("geom_name", list(GEOMS))
def test_lowered_rows_are_caffes_im2col_rows(geom_name):
    """The kept lowered rows (wide at stride 1, cropped to ow) equal the matching rows of the full im2col,
    for a chunk in the middle of the batch and for the last one (the wide rows read past it)."""
    from caffessl.conv_modes.lowering import LoweredRows, PadBuffer, full_columns, padded_images
    geom, w, _, _, _ = conv_case(geom_name, "rc50")
    x = torch.randn(3, geom.channels, 9, 11, generator=torch.Generator().manual_seed(6))
    oh, ow = geom.out_hw(9, 11)
    st = structure(w, geom.group)
    low = LoweredRows(st.col_kept, geom)
    assert low.wide == (geom.stride == (1, 1))
    full = full_columns(x, geom, oh, ow).view(geom.group * geom.K, 3, oh, ow)
    kept = full[st.col_kept.reshape(-1)]
    buf = PadBuffer()
    for i, m in [(1, 1), (1, 2), (0, 3)]:
        rows = low(padded_images(x, geom, i, m, buf, low.slack), oh, ow)
        assert torch.equal(rows[..., :ow], kept[:, i:i + m])


def test_matmul_routes_agree_with_torch_mm(monkeypatch):
    """oneDNN's matmul (when torch has it) and the torch.mm fallback both give a @ b, b a row slice."""
    from caffessl.conv_modes import matmul
    gen = torch.Generator().manual_seed(7)
    a, b = torch.randn(37, 53, generator=gen), torch.randn(80, 301, generator=gen)
    ref = a.double() @ b[10:63].double()
    routes = [True, False] if matmul.onednn_available() else [False]
    for route in routes:
        monkeypatch.setattr(matmul, "_ONEDNN", route)
        torch.testing.assert_close(matmul.mm(a, b[10:63]).double(), ref, rtol=1e-5, atol=1e-4)


def test_linear_uses_a_differentiable_route_when_autograd_needs_it():
    """matmul.linear = F.linear; under no_grad it may take oneDNN's op, with grad it must stay on autograd."""
    from caffessl.conv_modes import matmul
    gen = torch.Generator().manual_seed(8)
    x, w, b = torch.randn(5, 33, generator=gen), torch.randn(7, 33, generator=gen), torch.randn(7, generator=gen)
    ref = F.linear(x.double(), w.double(), b.double())
    with torch.no_grad():
        torch.testing.assert_close(matmul.linear(x, w, b).double(), ref, rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():              # flags() warns about TF32 on Intel GPUs
        warnings.simplefilter("ignore", UserWarning)
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):   # the user's switch is honoured
            assert not matmul._onednn_ok(x, w)
            y = matmul.linear(x, w, b)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    w.requires_grad_(True)
    y = matmul.linear(x, w, b)
    assert y.grad_fn is not None
    y.sum().backward()
    torch.testing.assert_close(w.grad, x.sum(0).expand(7, 33))


@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, False),
                                   (False, True, False)])
def test_linear_training_route_gradients(needs):
    """Training through matmul.linear (oneDNN's op and its backward via mm when available) against the
    float64 formulas dx = dy.w, dw = dy^T.x, db = sum dy; no gradient for inputs that do not need one."""
    from caffessl.conv_modes import matmul
    gen = torch.Generator().manual_seed(9)
    x, w, b = (torch.randn(s, generator=gen) for s in ((6, 40), (9, 40), (9,)))
    dy = torch.randn(6, 9, generator=gen)
    for t, need in zip((x, w, b), needs):
        t.requires_grad_(need)
    y = matmul.linear(x, w, b)
    if matmul.onednn_available():
        assert type(y.grad_fn).__name__.startswith("_Linear")
    y.backward(dy)
    x64, w64, dy64 = x.detach().double(), w.detach().double(), dy.double()
    torch.testing.assert_close(y.detach().double(), x64 @ w64.T + b.detach().double(), rtol=1e-5, atol=1e-5)
    want = (dy64 @ w64, dy64.T @ x64, dy64.sum(0))
    for t, need, g in zip((x, w, b), needs, want):
        if need:
            torch.testing.assert_close(t.grad.double(), g, rtol=1e-5, atol=1e-5)
        else:
            assert t.grad is None


@pytest.mark.parametrize("dropped", [1, 2, 9])
@pytest.mark.parametrize("variant", ["gather", "conv"])
def test_ccnmm_dropped_filters_output_their_bias_both_fill_ways(dropped, variant):
    """Under 1/8 of the filters dropped their rows are written alone (index_copy_); from 1/8 on the whole
    output is filled with the bias first and the kept rows overwrite it."""
    gen = torch.Generator().manual_seed(6)
    geom = ConvGeometry(6, 16, (3, 3), (1, 1), (1, 1), (1, 1), 2)
    w = torch.randn(16, 3, 3, 3, generator=gen)
    w[torch.randperm(16, generator=gen)[:dropped]] = 0
    w[:, :, 0] = 0                                            # a third of the columns too
    b = torch.randn(16, generator=gen)
    x = torch.randn(3, 6, 7, 8, generator=gen)
    kern = CCNMMConv(geom, w, variant=variant)
    assert kern.dropped.numel() == dropped
    assert_close(kern(x, w, b), F.conv2d(x, w, b, 1, 1, 1, 2))
    assert_close(kern(x, w, None), F.conv2d(x, w, None, 1, 1, 1, 2))


def test_ccnmm_chunks_respect_the_memory_budget_and_the_lowered_cap(monkeypatch):
    """A chunk holds at most ``chunk_budget`` bytes of temporaries and ``LOWERED_BYTES`` of lowered rows
    (one image always fits in a chunk, whatever it needs)."""
    from caffessl.conv_modes import ccnmm
    gen = torch.Generator().manual_seed(7)
    geom = ConvGeometry(16, 12, (3, 3), (1, 1), (1, 1), (1, 1), 1)
    w = sparsify(torch.randn(12, 16, 3, 3, generator=gen), "rc50", 1, gen)
    kern = CCNMMConv(geom, w, variant="gather")
    x = torch.randn(40, 16, 10, 10, generator=gen)
    lowered = sum(kern.left_cols) * 10 * 12 * 4                   # kept rows x oh x padded width, float32
    per_image = lowered + kern.rows * 10 * 12 * 4 + 16 * 12 * 12 * 4
    for cap, budget, want in ((1 << 30, 1 << 30, 40), (3 * lowered, 1 << 30, 3), (1 << 30, 5 * per_image, 5),
                              (1, 1, 1)):
        monkeypatch.setattr(ccnmm, "LOWERED_BYTES", cap)
        monkeypatch.setattr(ccnmm, "chunk_budget", lambda i, o, budget=budget: budget)
        chunks = kern._chunks(x, 10, 10)
        assert chunks[0][1] == want and {m for _, m in chunks[:-1]} <= {want} and sum(m for _, m in chunks) == 40
    monkeypatch.undo()
    assert ccnmm.chunk_budget(10 << 20, 30 << 20) == 20 << 20       # half of input + output ...
    assert ccnmm.chunk_budget(1, 1) == ccnmm.lowering.CHUNK_BYTES   # ... or the fixed floor
