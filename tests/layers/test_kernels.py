"""The inference kernels (MAX pooling, LRN across channels without autograd) against real Caffe (golden
cases replayed without a graph), an independent numpy transcription of Caffe's loops, and the layers'
autograd path; small chunk budgets force several chunks, a partial last chunk and split images."""
import numpy as np
import pytest
import torch

from caffessl.layers import kernels
from tests.golden import case_names, run_layer_case
from tests.layers.gradcheck import build_net
from tests.layers.test_vision import POOL_GEOMS, _caffe_pool_ref, _pool_text


@pytest.mark.parametrize("name", case_names(prefixes=("pool_max", "pool_ave", "pool_global", "lrn_across",
                                                     "spp_", "net_"))
                         or ["pool_max_k3s2_7x9", "lrn_across_ls5_a1e-4_b0.75", "net_lenet_deploy"])
def test_golden_forward_without_graph(name, monkeypatch):
    calls = []
    for fn in ("pool2d", "lrn_across_channels"):
        orig = getattr(kernels, fn)
        monkeypatch.setattr(kernels, fn, lambda *a, _o=orig, **k: calls.append(1) or _o(*a, **k))
    with torch.no_grad():
        run_layer_case(name, check_grads=False)
    if "mask" not in name:   # a mask top keeps torch's op
        assert calls, "the inference kernel was not used"


EXTRA_GEOMS = [  # (h, w, k, s, p, round_mode)
    ((13, 13), (3, 3), (2, 2), (0, 0), "CEIL"),   # AlexNet pool5
    ((9, 11), (8, 7), (1, 3), (3, 2), "CEIL"),    # the widest separable window, stride 1 and 3
    ((6, 6), (1, 1), (1, 1), (0, 0), "CEIL"),     # identity
    ((10, 10), (9, 9), (1, 1), (0, 0), "CEIL"),   # too wide: torch's op
    ((9, 10), (9, 10), (1, 1), (0, 0), "CEIL"),   # global, wide: one reduction
    ((9, 10), (9, 10), (2, 2), (1, 1), "CEIL"),   # a padded whole-plane window is not global
]


@pytest.mark.parametrize("geom", POOL_GEOMS + EXTRA_GEOMS)
@pytest.mark.parametrize("chunk", [kernels.CHUNK_BYTES, 700])
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_without_graph_matches_caffe_loops(geom, chunk, method, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk)
    hw, k, s, p, rm = geom
    net, arrays, _, _ = build_net(_pool_text(k, s, p, method, rm), [(3, 5, *hw)])
    net.blobs["x"].data[...] = arrays["x"]
    with torch.no_grad():
        net.forward()
    ref, _ = _caffe_pool_ref(arrays["x"], k, s, p, method, rm)
    if method == "MAX":
        np.testing.assert_array_equal(net.blobs["y"].data, ref)
    else:   # the same sums in another order; Caffe divides an empty window's 0 by its size too
        np.testing.assert_allclose(net.blobs["y"].data, ref, rtol=1e-13, atol=1e-15)


def _lrn_ref(x, size, alpha, beta, k):
    alpha, beta, k = (float(np.float32(v)) for v in (alpha, beta, k))   # LRNParameter's float fields
    c, half = x.shape[1], (size - 1) // 2
    sq = np.pad(x ** 2, ((0, 0), (half, half), (0, 0), (0, 0)))
    win = sum(sq[:, j:j + c] for j in range(size))
    return x * (k + alpha / size * win) ** -beta


@pytest.mark.parametrize("shape,lrn", [
    ((2, 6, 4, 5), dict(size=3, alpha=2.0, beta=0.75, k=2.0)),
    ((3, 7, 5, 3), dict(size=5, alpha=1e-4 * 5e3, beta=0.75, k=1.0)),
    ((2, 3, 4, 4), dict(size=7, alpha=1.5, beta=0.6, k=1.0)),      # window wider than the channels
    ((1, 1, 3, 3), dict(size=5, alpha=1.0, beta=0.5, k=3.0)),      # one channel
])
@pytest.mark.parametrize("chunk", [kernels.CHUNK_BYTES, 5 * 8 * 6, 1])
def test_lrn_across_channels_without_graph_matches_numpy(shape, lrn, chunk, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk)
    x = np.random.default_rng(3).standard_normal(shape) * 2
    text = (f'type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {lrn["size"]} alpha: {lrn["alpha"]} '
            f'beta: {lrn["beta"]} k: {lrn["k"]} }}')
    net, _, _, _ = build_net(text, [x])
    net.blobs["x"].data[...] = x
    with torch.no_grad():
        net.forward()
    fast = net.blobs["y"].data.copy()
    np.testing.assert_allclose(fast, _lrn_ref(x, **lrn), rtol=1e-12)
    net.forward()                         # the autograd path (the input requires grad: force_backward)
    np.testing.assert_allclose(fast, net.blobs["y"].data, rtol=1e-12)


def test_kernels_apply_only_without_a_graph_on_cpu():
    x = torch.ones(1, 1, 2, 2, requires_grad=True)
    assert not kernels.applies(x)
    with torch.no_grad():
        assert kernels.applies(x)
    assert kernels.applies(x.detach())


def test_float32_beta_075_matches_pow():
    s = torch.rand(4096, dtype=torch.float32) * 100 + 1
    want = s.double().pow(-0.75)
    got = kernels._pow_neg_(s.clone(), 0.75, torch.empty_like(s)).double()
    assert ((got - want).abs() / want).max() < 5e-7


def test_empty_batch_and_strided_input():
    import torch.nn.functional as F
    empty = torch.zeros(0, 3, 5, 5)
    assert kernels.pool2d(empty, (3, 3), (2, 2), (1, 1), (3, 3), "MAX", -1.0).shape == (0, 3, 3, 3)
    assert kernels.lrn_across_channels(empty, 5, 1.0, 0.75, 1.0).shape == (0, 3, 5, 5)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64).transpose(2, 3)      # not contiguous
    assert torch.equal(kernels.pool2d(x, (3, 3), (2, 2), (0, 0), (2, 3), "MAX", -1.0),
                       F.max_pool2d(x, 3, 2, ceil_mode=True))
    torch.testing.assert_close(kernels.lrn_across_channels(x, 5, 1.0, 0.75, 1.0),
                               F.local_response_norm(x, 5, 1.0, 0.75, 1.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape,lrn", [((2, 6, 4, 5), (3, 2.0, 0.75, 2.0)), ((2, 3, 3, 4), (7, 1.5, 0.6, 1.0)),
                                       ((1, 9, 2, 3), (5, 0.9, 1.3, 0.5))])
@pytest.mark.parametrize("chunk", [kernels.CHUNK_BYTES, 5 * 8 * 6, 1])
def test_lrn_training_function_gradcheck(shape, lrn, chunk, monkeypatch):
    """Caffe's backward formula (chunked) against finite differences of the forward."""
    monkeypatch.setattr(kernels, "CHUNK_BYTES", chunk)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: kernels.LRNAcrossChannels.apply(t, *lrn), (x,))


def test_lrn_training_function_matches_autograd_of_the_formula():
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 16, 9, 7, generator=g) * 10).requires_grad_(True)
    dy = torch.randn(3, 16, 9, 7, generator=g)
    y = kernels.LRNAcrossChannels.apply(x, 5, 1e-4, 0.75, 1.0)
    (dx,) = torch.autograd.grad(y, x, dy)
    x64 = x.detach().double().requires_grad_(True)
    y64 = torch.nn.functional.local_response_norm(x64, 5, 1e-4, 0.75, 1.0)
    (dx64,) = torch.autograd.grad(y64, x64, dy.double())
    torch.testing.assert_close(y.double(), y64, rtol=2e-6, atol=1e-6)
    torch.testing.assert_close(dx.double(), dx64, rtol=2e-5, atol=1e-6)
