"""LayerParameter fields that Net::Init reads: a layer's own ``phase``, ``blobs`` written in the prototxt,
more ``param {}`` entries than blobs, and a shared param's lr_mult / decay_mult set by a non-owner; the SSL
fork's refusal to train (or run a Deconvolution) in a sparse conv_mode, also before any weights were loaded."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import LayerConfigError, SparseTrainingError


def _net(tmp_path, text, phase=caffe.TEST):
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return caffe.Net(str(p), phase)


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 250 } } }\n'


def test_layer_phase_overrides_the_nets(tmp_path):
    # Net::Init sets a layer's phase to the net's only when the layer has none
    net = _net(tmp_path, INPUT + 'layer { name: "drop" type: "Dropout" bottom: "data" top: "y" phase: TRAIN }\n'
                                 'layer { name: "keep" type: "Dropout" bottom: "data" top: "z" }\n')
    net.blobs["data"].data[...] = 1
    net.forward()
    y, z = net.blobs["y"].data, net.blobs["z"].data
    np.testing.assert_array_equal(z, 1)                         # TEST: identity
    assert set(np.unique(y)) == {0.0, 2.0}                      # TRAIN: dropped or scaled by 1/(1-0.5)
    assert 300 < (y == 0).sum() < 700                           # ~half of 1000


def test_prototxt_blobs_are_the_initial_weights(tmp_path):
    text = INPUT.replace("dim: 250", "dim: 3") + """
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } }
  blobs { shape { dim: 2 dim: 3 } data: 1 data: 2 data: 3 data: 4 data: 5 data: 6 }
  blobs { num: 1 channels: 1 height: 1 width: 2 data: 0.5 data: -1 } }
"""
    net = _net(tmp_path, text)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    net.blobs["data"].data[...] = x
    out = net.forward()["y"]
    np.testing.assert_allclose(out, x @ np.array([[1, 2, 3], [4, 5, 6]]).T + [0.5, -1], rtol=1e-6)


def test_prototxt_blobs_of_the_wrong_shape(tmp_path):
    text = INPUT.replace("dim: 250", "dim: 3") + """
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" inner_product_param { num_output: 2 bias_term: false }
  blobs { shape { dim: 3 dim: 2 } data: 1 data: 2 data: 3 data: 4 data: 5 data: 6 } }
"""
    with pytest.raises(LayerConfigError, match=r"layer 'ip'.*shape mismatch.*\(3, 2\).*\(2, 3\).*net prototxt"):
        _net(tmp_path, text)


def test_too_many_param_specs(tmp_path):
    text = INPUT + ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "y" param { lr_mult: 1 } '
                    'param { lr_mult: 2 } param { lr_mult: 3 } inner_product_param { num_output: 2 } }\n')
    with pytest.raises(LayerConfigError, match=r"layer 'ip'.*too many params.*3.*2"):
        _net(tmp_path, text)


SHARED = INPUT.replace("dim: 250", "dim: 3") + """
layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" %s }
  inner_product_param { num_output: 3 bias_term: false weight_filler { type: "gaussian" std: 1 } } }
layer { name: "b" type: "InnerProduct" bottom: "a" top: "b" param { name: "w" %s }
  inner_product_param { num_output: 3 bias_term: false } }
layer { name: "loss" type: "EuclideanLoss" bottom: "b" bottom: "data" top: "loss" }
"""


def test_sharer_sets_the_mults_an_owner_left_unset(tmp_path):
    # Net::AppendParam: the owner's unset lr_mult/decay_mult is taken from the first sharer that sets it
    net = _net(tmp_path, SHARED % ("", "lr_mult: 0 decay_mult: 3"), caffe.TRAIN)
    (w,) = net.learnable_params
    assert (w.lr_mult, w.decay_mult) == (0, 3)
    solver_txt = tmp_path / "solver.prototxt"
    solver_txt.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 1 '
                          f'weight_decay: 0.1 momentum: 0 snapshot_after_train: false display: 0\n')
    solver = caffe.get_solver(str(solver_txt))
    solver.net.blobs["data"].data[...] = np.ones((4, 3))
    before = solver.net.params["a"][0].data.copy()
    solver.step(1)
    np.testing.assert_array_equal(solver.net.params["a"][0].data, before)   # lr 0.1 x lr_mult 0: frozen


def test_sharer_mult_mismatching_an_owners_explicit_one(tmp_path):
    with pytest.raises(LayerConfigError, match="shared param 'w' has mismatched lr_mult"):
        _net(tmp_path, SHARED % ("lr_mult: 1", "lr_mult: 2"))
    with pytest.raises(LayerConfigError, match="shared param 'w' has mismatched decay_mult"):
        _net(tmp_path, SHARED % ("decay_mult: 1", "decay_mult: 0"))
    net = _net(tmp_path, SHARED % ("lr_mult: 2", "lr_mult: 2"))               # equal: fine
    assert net.learnable_params[0].lr_mult == 2


CONV = INPUT.replace("dim: 250", "dim: 2 dim: 5 dim: 5") + """
layer { name: "conv" type: "%s" bottom: "data" top: "y"
  convolution_param { num_output: 3 kernel_size: 3 %s weight_filler { type: "gaussian" std: 1 } } }
"""


@pytest.mark.parametrize("mode", ["LOWERED_CSRMM", "LOWERED_CCNMM", "DIRECT_SCONV", "DIRECT_DCONV"])
def test_sparse_conv_mode_cannot_train_even_without_loaded_weights(tmp_path, mode):
    # the fork's backward_cpu_gemm / backward_cpu_bias stop in every mode but LOWERED_GEMM, loaded or not
    net = _net(tmp_path, "force_backward: true\n" + CONV % ("Convolution", f"conv_mode: {mode}"), caffe.TRAIN)
    ref = _net(tmp_path, "force_backward: true\n" + CONV % ("Convolution", ""), caffe.TRAIN)
    ref.params["conv"][0].data[...] = net.params["conv"][0].data
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5))
    net.blobs["data"].data[...] = x
    ref.blobs["data"].data[...] = x
    np.testing.assert_allclose(net.forward()["y"], ref.forward()["y"], rtol=1e-5, atol=1e-6)  # dense forward
    ref.backward()
    with pytest.raises(SparseTrainingError, match=rf"layer 'conv'.*{mode}.*Training in sparse format"):
        net.backward()


def test_deconvolution_refuses_a_sparse_conv_mode(tmp_path):
    with pytest.raises(LayerConfigError, match=r"layer 'conv' \(Deconvolution\): conv_mode LOWERED_CCNMM"):
        _net(tmp_path, CONV % ("Deconvolution", "conv_mode: LOWERED_CCNMM"))
    _net(tmp_path, CONV % ("Deconvolution", "conv_mode: LOWERED_GEMM"))


def test_duplicate_layer_names_are_allowed_as_in_caffe(tmp_path):
    # Net::Init does not check names (BVLC's LRCN example has two "data" layers); layer_dict / params keep
    # the last of a name, CopyTrainedLayersFrom loads each record into the first layer of its name
    text = INPUT.replace("dim: 250", "dim: 3") + """
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "a"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "b" top: "b" }
"""
    net = _net(tmp_path, text)
    first, second = (l for l in net.layers if l.name == "ip")
    assert net.layer_dict["ip"] is second and net.params["ip"][0].data.shape == (3, 3)
    x = np.random.default_rng(0).standard_normal((4, 3))
    net.blobs["data"].data[...] = x
    w1, b1, w2, b2 = (p.detach().numpy().astype(np.float64) for p in first.params + second.params)
    out = net.forward()["b"]
    np.testing.assert_allclose(out, np.maximum(np.maximum(x @ w1.T + b1, 0) @ w2.T + b2, 0), rtol=1e-5, atol=1e-6)
    model = tmp_path / "dup.caffemodel"
    net.save(str(model))                                       # each layer's own blobs, in layer order
    from caffessl.io import read_weights
    recs = [(n, [a.copy() for a in arrs]) for n, _t, arrs in read_weights(str(model)) if n == "ip"]
    assert len(recs) == 2
    np.testing.assert_array_equal(recs[0][1][0], w1.astype(np.float32))
    np.testing.assert_array_equal(recs[1][1][0], w2.astype(np.float32))
    fresh = _net(tmp_path, text)
    fresh.copy_from(str(model))
    f1, f2 = (l for l in fresh.layers if l.name == "ip")
    np.testing.assert_array_equal(f1.params[0].detach().numpy(), w2.astype(np.float32))   # the last record won
