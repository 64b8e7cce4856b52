"""Vision layers against real Caffe (golden cases), independent numpy formulas, finite differences and
Caffe's parameter checks."""
import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.errors import LayerConfigError, ShapeMismatchError
from tests.golden import case_names, need_shared, run_layer_case
from tests.layers.gradcheck import build_net, check_layer_gradients


# -- golden cases from real Caffe ---------------------------------------------------------------------

@pytest.mark.parametrize("name", case_names(prefixes=("conv_",)) or ["conv_3x3"])
def test_golden_convolution(name):
    run_layer_case(name)


@pytest.mark.parametrize("name", case_names(prefixes=("deconv_",)) or ["deconv_k3_stride2_pad1"])
def test_golden_deconvolution(name):
    run_layer_case(name)


@pytest.mark.parametrize("name", case_names(prefixes=("pool_", "spp_")) or ["pool_max_k3s2_7x9"])
def test_golden_pooling_and_spp(name):
    run_layer_case(name)


@pytest.mark.parametrize("name", case_names(prefixes=("lrn_",)) or ["lrn_across_ls5_a1e-4_b0.75"])
def test_golden_lrn(name):
    run_layer_case(name)


@pytest.mark.parametrize("name", case_names(prefixes=("crop_",)) or ["crop_axis1_single_offset"])
def test_golden_crop(name):
    run_layer_case(name)


def test_golden_net_cifar10_quick_deploy():
    run_layer_case("net_cifar10_quick_deploy")


def test_cifar10_quick_trained_weights_forward_backward_run():
    m = need_shared("models", "cifar10_quick")
    net = caffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_5000.caffemodel"), caffe.TEST)
    x = np.random.default_rng(0).standard_normal(net.blobs["data"].shape).astype(np.float32) * 50
    out = net.forward(data=x)
    prob = out[net.outputs[0]]
    assert prob.shape[1] == 10 and np.allclose(prob.sum(axis=1), 1, atol=1e-5)


def _conv_net(extra, shape, dtype=torch.float64):
    return build_net(f'type: "Convolution" bottom: "x" top: "y" convolution_param {{ {extra} '
                     f'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" }} }}',
                     [shape], dtype=dtype)


def test_force_nd_im2col_equals_2d_convolution():
    """Caffe's own force_nd_im2col path aborts (heap corruption in the fork); ours must equal the 2-D one."""
    d = need_shared("golden", "conv_force_nd_im2col")
    text = (d / "net.prototxt").read_text()
    assert "force_nd_im2col: true" in text
    nd = caffe.Net(str(d / "net.prototxt"), caffe.TEST)
    two_d = caffe.Net(caffe.io.prototxt.parse_text(text.replace("force_nd_im2col: true", ""),
                                                   caffe.caffe_pb2.NetParameter()), caffe.TEST)
    two_d.params["conv"][0].data[...] = nd.params["conv"][0].data
    two_d.params["conv"][1].data[...] = nd.params["conv"][1].data
    x = np.random.default_rng(3).standard_normal(nd.blobs["data"].shape).astype(np.float32)
    a, b = nd.forward(data=x)["out"].copy(), two_d.forward(data=x)["out"].copy()
    # and both equal an independent numpy convolution (pad 1, stride 2, k3)
    w, bias = nd.params["conv"][0].data, nd.params["conv"][1].data
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = a.shape[2:]
    ref = np.zeros_like(a, dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            ref[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w) + bias
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, ref, atol=1e-5)


# -- pooling against an independent numpy transcription of Caffe's loops ---------------------------------

def _caffe_pool_ref(x, k, s, p, method, round_mode="CEIL"):
    n, c, h, w = x.shape
    rnd = np.ceil if round_mode == "CEIL" else np.floor
    oh = int(rnd((h + 2 * p[0] - k[0]) / s[0])) + 1
    ow = int(rnd((w + 2 * p[1] - k[1]) / s[1])) + 1
    if p[0] or p[1]:
        if (oh - 1) * s[0] >= h + p[0]:
            oh -= 1
        if (ow - 1) * s[1] >= w + p[1]:
            ow -= 1
    out = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            size = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs0:he0, ws0:we0].reshape(n, c, -1)
            if method == "AVE":
                with np.errstate(invalid="ignore"):   # Caffe divides 0 by an empty window size too
                    out[:, :, i, j] = win.sum(-1) / size
            elif win.shape[-1] == 0:
                out[:, :, i, j] = -np.finfo(np.float32).max
            else:
                out[:, :, i, j] = win.max(-1)
                a = win.argmax(-1)
                mask[:, :, i, j] = (hs0 + a // (we0 - ws0)) * w + ws0 + a % (we0 - ws0)
    return out, mask


POOL_GEOMS = [  # (h, w, k, s, p, round_mode)
    ((8, 10), (3, 3), (2, 2), (1, 1), "CEIL"),
    ((7, 9), (2, 2), (2, 2), (0, 0), "CEIL"),
    ((4, 7), (2, 2), (3, 3), (1, 1), "CEIL"),     # the clip rule
    ((5, 5), (3, 3), (2, 2), (2, 2), "CEIL"),     # pad > kernel/2: torch refuses, explicit padding path
    ((6, 5), (3, 2), (2, 1), (1, 0), "CEIL"),     # rectangular, pad only on h
    ((5, 6), (1, 1), (3, 3), (0, 0), "CEIL"),     # stride > kernel without pad: empty last windows
    ((5, 6), (2, 2), (3, 3), (0, 1), "CEIL"),     # pad on w only also clips h (Caffe checks "pad_h || pad_w")
    ((8, 10), (3, 3), (2, 2), (1, 1), "FLOOR"),
]


def _pool_text(k, s, p, method, rm, tops=1):
    t = ' top: "mask"' if tops == 2 else ""
    return (f'type: "Pooling" bottom: "x" top: "y"{t} pooling_param {{ pool: {method} kernel_h: {k[0]} '
            f'kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} round_mode: {rm} }}')


@pytest.mark.parametrize("geom", POOL_GEOMS)
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_matches_caffe_loops(geom, method):
    hw, k, s, p, rm = geom
    tops = 2 if method == "MAX" else 1
    net, arrays, top_names, _ = build_net(_pool_text(k, s, p, method, rm, tops), [(2, 3, *hw)])
    net.blobs["x"].data[...] = arrays["x"]
    net.forward()
    ref, mask = _caffe_pool_ref(arrays["x"], k, s, p, method, rm)
    np.testing.assert_allclose(net.blobs["y"].data, ref, rtol=1e-12, atol=1e-12)
    if method == "MAX":
        np.testing.assert_array_equal(net.blobs["mask"].data, mask)


@pytest.mark.parametrize("geom", [POOL_GEOMS[i] for i in (0, 2, 3, 6)])
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_gradients(geom, method):
    hw, k, s, p, rm = geom
    check_layer_gradients(_pool_text(k, s, p, method, rm), [(2, 2, *hw)])


def test_global_pooling_gradients():
    check_layer_gradients('type: "Pooling" bottom: "x" top: "y" pooling_param { pool: AVE global_pooling: true }',
                          [(2, 3, 4, 5)])


def test_stochastic_pooling_test_phase_is_sum_sq_over_sum():
    """Caffe's CPU aborts on STOCHASTIC (golden pool_stochastic_test_cpu); we follow its GPU kernel."""
    x = np.random.default_rng(5).uniform(0, 1, (2, 3, 7, 9))
    x[0, 0, :3, :3] = 0  # an all-zero window gives 0
    net, arrays, _, _ = build_net('type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC '
                                  'kernel_size: 3 stride: 2 }', [x])
    net.blobs["x"].data[...] = x
    net.forward()
    oh, ow = 3, 4   # ceil((7-3)/2)+1, ceil((9-3)/2)+1
    ref = np.zeros((2, 3, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(2, 3, -1)
            ssum = win.sum(-1)
            ref[:, :, i, j] = np.where(ssum > 0, (win ** 2).sum(-1) / np.where(ssum > 0, ssum, 1), 0)
    np.testing.assert_allclose(net.blobs["y"].data, ref, rtol=1e-12)
    assert net.blobs["y"].data[0, 0, 0, 0] == 0


def test_stochastic_pooling_train_samples_proportionally():
    torch.manual_seed(0)
    x = np.zeros((1, 1, 2, 2))
    x[0, 0] = [[1.0, 3.0], [0.0, 4.0]]
    x = np.repeat(x, 4000, axis=0)
    net, _, _, _ = build_net('type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC '
                             'kernel_size: 2 stride: 2 }', [x], phase=caffe.TRAIN)
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data.reshape(-1)
    freq = np.array([(y == v).mean() for v in (1.0, 3.0, 0.0, 4.0)])
    np.testing.assert_allclose(freq, [0.125, 0.375, 0.0, 0.5], atol=0.03)
    # the gradient reaches only the sampled cell
    net.blobs["y"].diff[...] = 1.0
    net.backward()
    g = net.blobs["x"].diff.reshape(len(y), 4)
    assert np.all(g.sum(1) == 1)
    np.testing.assert_array_equal(x.reshape(len(y), 4)[g == 1], y)


def test_stochastic_test_phase_gradients():
    x = np.random.default_rng(2).uniform(0.1, 1, (2, 2, 5, 6))
    check_layer_gradients('type: "Pooling" bottom: "x" top: "y" pooling_param { pool: STOCHASTIC '
                          'kernel_size: 3 stride: 2 }', [x])


# -- finite differences --------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,shape", [
    ("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2", (2, 4, 6, 5)),
    ("num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 stride_w: 2 stride_h: 1 dilation: 2", (1, 3, 7, 7)),
    ("num_output: 3 kernel_size: 2 axis: 2", (2, 2, 3, 5, 5)),          # leading axes fold into the batch
    ("num_output: 2 kernel_size: 3 stride: 2", (2, 3, 7)),               # 1-D
    ("num_output: 2 kernel_size: 2 pad: 1 bias_term: false", (1, 2, 3, 4, 3)),  # 3-D
])
def test_convolution_gradients(extra, shape):
    check_layer_gradients(f'type: "Convolution" bottom: "x" top: "y" convolution_param {{ {extra} '
                          f'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" }} }}',
                          [shape])


@pytest.mark.parametrize("extra,shape,out", [
    ("num_output: 4 kernel_size: 3 stride: 2 pad: 1", (2, 3, 4, 5), (2, 4, 7, 9)),
    ("num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 dilation: 2", (1, 2, 3, 3), (1, 4, 9, 9)),
    ("num_output: 2 kernel_size: 3 stride: 2", (1, 2, 4), (1, 2, 9)),
])
def test_deconvolution_shapes_and_gradients(extra, shape, out):
    text = (f'type: "Deconvolution" bottom: "x" top: "y" convolution_param {{ {extra} '
            f'weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "gaussian" }} }}')
    net, _, _, _ = build_net(text, [shape])
    assert net.blobs["y"].shape == out
    check_layer_gradients(text, [shape])


def test_im2col_matches_numpy_and_gradients():
    text = 'type: "Im2col" bottom: "x" top: "y" convolution_param { kernel_size: 3 pad: 1 stride: 2 }'
    net, arrays, _, _ = build_net(text, [(2, 3, 5, 6)])
    x = arrays["x"]
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    assert y.shape == (2, 27, 3, 3)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for c in range(3):
        for ki in range(3):
            for kj in range(3):
                np.testing.assert_array_equal(y[:, c * 9 + ki * 3 + kj], xp[:, c, ki:ki + 5:2, kj:kj + 6:2])
    check_layer_gradients(text, [(1, 2, 4, 5)])


@pytest.mark.parametrize("shape,extra", [((2, 3, 4, 3, 5), "kernel_size: 2 stride: 2 pad: 1"),
                                         ((2, 3, 7), "kernel_size: 3 dilation: 2")])
def test_im2col_nd_equals_unfold_definition(shape, extra):
    net, arrays, _, _ = build_net(f'type: "Im2col" bottom: "x" top: "y" convolution_param {{ {extra} }}', [shape])
    x = arrays["x"]
    net.blobs["x"].data[...] = x
    net.forward()
    y = net.blobs["y"].data
    # column (c, k...) at output position o is x[c, o*s - p + k*d] (0 outside)
    p_ = net.layers[1]
    nsp = len(shape) - 2
    ks = np.array(list(np.ndindex(*p_.kernel)))
    for o in np.ndindex(*y.shape[2:]):
        for c in range(shape[1]):
            for kidx, kk in enumerate(ks):
                pos = [o[i] * p_.stride[i] - p_.pad[i] + kk[i] * p_.dilation[i] for i in range(nsp)]
                inside = all(0 <= pos[i] < shape[2 + i] for i in range(nsp))
                want = x[(slice(None), c, *pos)] if inside else 0.0
                np.testing.assert_array_equal(y[(slice(None), c * len(ks) + kidx, *o)], want)


@pytest.mark.parametrize("lrn", ["local_size: 3 alpha: 2 beta: 0.75 k: 2",
                                 "local_size: 5 alpha: 1.5 beta: 0.6 norm_region: WITHIN_CHANNEL"])
def test_lrn_gradients(lrn):
    check_layer_gradients(f'type: "LRN" bottom: "x" top: "y" lrn_param {{ {lrn} }}', [(2, 6, 4, 5)])


def test_lrn_within_channel_formula_numpy():
    x = np.random.default_rng(9).standard_normal((1, 2, 5, 6))
    net, _, _, _ = build_net('type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 3 alpha: 2 beta: 0.75 '
                             'k: 7 norm_region: WITHIN_CHANNEL }', [x])
    net.blobs["x"].data[...] = x
    net.forward()
    sq = np.pad(x ** 2, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = sum(sq[:, :, i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    np.testing.assert_allclose(net.blobs["y"].data, x / (1 + 2 / 9 * win) ** 0.75, rtol=1e-12)


def test_spp_gradients_and_shape():
    text = 'type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 3 pool: AVE }'
    net, _, _, _ = build_net(text, [(2, 3, 9, 8)])
    assert net.blobs["y"].shape == (2, 3 * (1 + 4 + 16))
    check_layer_gradients(text, [(2, 2, 9, 8)])
    net1, _, _, _ = build_net('type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 1 }', [(2, 3, 5, 4)])
    assert net1.blobs["y"].shape == (2, 3, 1, 1)


def test_crop_gradients_and_offsets():
    text = 'type: "Crop" bottom: "x" bottom: "r" top: "y" crop_param { axis: 2 offset: 1 offset: 2 }'
    net, arrays, _, _ = build_net(text, [(2, 3, 6, 7), (1, 1, 4, 3)])
    net.blobs["x"].data[...] = arrays["x"]
    net.forward()
    assert net.blobs["y"].shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(net.blobs["y"].data, arrays["x"][:, :, 1:5, 2:5])
    check_layer_gradients(text, [(2, 3, 6, 7), (1, 1, 4, 3)], check_bottoms=[0])


# -- Caffe's parameter and shape checks -----------------------------------------------------------------

def _build(text, shapes):
    return build_net(text, shapes, dtype=torch.float32)


@pytest.mark.parametrize("text,shapes,err", [
    # wrong bottom / top counts
    ('type: "Crop" bottom: "x" top: "y"', [(1, 2, 3, 3)], LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" top: "m" top: "z" pooling_param { kernel_size: 2 }',
     [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Convolution" bottom: "x" bottom: "z" top: "y" convolution_param { num_output: 2 kernel_size: 1 }',
     [(1, 2, 3, 3), (1, 2, 3, 3)], LayerConfigError),
    # incompatible shapes
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 1 group: 2 }',
     [(1, 3, 4, 4)], ShapeMismatchError),
    ('type: "Convolution" bottom: "x" bottom: "z" top: "y" top: "w" convolution_param { num_output: 2 '
     'kernel_size: 1 }', [(1, 2, 3, 3), (1, 2, 4, 3)], ShapeMismatchError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 5 }',
     [(1, 1, 4, 4)], ShapeMismatchError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { kernel_size: 2 }', [(1, 4, 4)], ShapeMismatchError),
    ('type: "LRN" bottom: "x" top: "y"', [(2, 3, 4)], ShapeMismatchError),
    ('type: "Crop" bottom: "x" bottom: "r" top: "y" crop_param { offset: 2 }', [(1, 1, 4, 4), (1, 1, 3, 3)],
     ShapeMismatchError),
    ('type: "Crop" bottom: "x" bottom: "r" top: "y"', [(1, 1, 4, 4), (1, 4, 4)], ShapeMismatchError),
    ('type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 2 }', [(2, 3, 4)], ShapeMismatchError),
    # unsupported parameter values
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 }', [(1, 1, 4, 4)],
     LayerConfigError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 '
     'kernel_w: 3 }', [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 3 stride: 0 }',
     [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 kernel_size: 1 '
     'kernel_size: 1 kernel_size: 1 }', [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 3 kernel_size: 1 group: 2 }',
     [(1, 2, 4, 4)], LayerConfigError),
    ('type: "Convolution" bottom: "x" top: "y" convolution_param { kernel_size: 1 }', [(1, 2, 4, 4)],
     LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { kernel_size: 2 pad: 2 }', [(1, 1, 4, 4)],
     LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { kernel_h: 2 }', [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { kernel_size: 2 pad_h: 1 }', [(1, 1, 4, 4)],
     LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { global_pooling: true kernel_size: 2 }',
     [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" pooling_param { global_pooling: true stride: 2 }',
     [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y" top: "m" pooling_param { pool: AVE kernel_size: 2 }',
     [(1, 1, 4, 4)], LayerConfigError),
    ('type: "Pooling" bottom: "x" top: "y"', [(1, 1, 4, 4)], LayerConfigError),
    ('type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 4 }', [(1, 3, 4, 4)], LayerConfigError),
    ('type: "SPP" bottom: "x" top: "y"', [(1, 3, 4, 4)], LayerConfigError),
    ('type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 3 }', [(1, 3, 5, 5)], LayerConfigError),
    ('type: "Crop" bottom: "x" bottom: "r" top: "y" crop_param { offset: 1 offset: 1 offset: 1 }',
     [(1, 1, 4, 4), (1, 1, 3, 3)], LayerConfigError),
])
def test_bad_configurations_raise_typed_errors(text, shapes, err):
    with pytest.raises(err, match="under_test"):
        _build(text, shapes)


def test_4d_spatial_convolution_is_not_implemented():
    with pytest.raises(NotImplementedError, match="under_test"):
        _build('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 1 kernel_size: 1 }',
               [(1, 1, 2, 2, 2, 2)])


def test_conv_mode_hook_uses_engine_when_set():
    net, arrays, _, _ = _build('type: "Convolution" bottom: "x" top: "y" convolution_param { num_output: 2 '
                               'kernel_size: 1 conv_mode: LOWERED_CCNMM }', [(1, 2, 3, 3)])
    layer = net.layer_dict["under_test"]
    assert layer.conv_mode == caffe.caffe_pb2.ConvolutionParameter.LOWERED_CCNMM and layer.engine is None
    net.forward()   # no engine: the dense path

    class Engine:
        def __call__(self, x, w, b):
            return x[:, :1] * 0 + 7
    layer.engine = Engine()
    net.forward()
    assert np.all(net.blobs["y"].data == 7)
