"""The ``Python`` layer: opt-in loading, pycaffe's API (setup/reshape/forward/backward over blobs with
.data/.diff/.reshape, param_str, phase, net, blobs.add_blob), and the autograd bridge."""
from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import LayerConfigError
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from tests.layers.gradcheck import check_layer_gradients

USER_MODULE = '''
import json
import numpy as np
import caffessl as caffe


class Scaled(caffe.Layer):
    """top = k * bottom0 + bottom1 (k from param_str); optional learnable per-column bias."""

    def setup(self, bottom, top):
        cfg = json.loads(self.param_str or "{}")
        self.k = cfg.get("k", 1.0)
        self.seen_phase = self.phase
        self.seen_net = self.net
        if cfg.get("bias"):
            self.blobs.add_blob(bottom[0].shape[1])
            self.blobs[0].data[...] = np.arange(bottom[0].shape[1])
        if len(bottom) != 2:
            raise Exception("needs two bottoms")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        y = self.k * bottom[0].data + bottom[1].data
        if len(self.blobs):
            y = y + self.blobs[0].data
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        self.last_propagate_down = list(propagate_down)
        if propagate_down[0]:
            bottom[0].diff[...] = self.k * top[0].diff
        if propagate_down[1]:
            bottom[1].diff[...] = top[0].diff
        if len(self.blobs):
            self.blobs[0].diff[...] += top[0].diff.sum(axis=0)


class SumSquares:
    """Not a caffe.Layer subclass: a loss-like layer with a scalar top."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        top[0].data[...] = (bottom[0].data ** 2).sum() / 2

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff[0] * bottom[0].data


class Source(caffe.Layer):
    """A data layer: no bottoms, one top filled from param_str."""

    def setup(self, bottom, top):
        self.n = int(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(self.n, 2)

    def forward(self, bottom, top):
        top[0].data[...] = np.arange(self.n * 2).reshape(self.n, 2)
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    name = "caffessl_test_user_layers"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    yield name
    sys.modules.pop(name, None)


def _net(text, **kw):
    p = caffe_pb2.NetParameter()
    parse_text(text, p, "<test>")
    return caffe.Net(p, caffe.TRAIN, **kw)


def _prototxt(module, cls="Scaled", param_str='{\\"k\\": 2.5}', extra=""):
    return f'''
force_backward: true
layer {{ name: "in" type: "Input" top: "a" top: "b" input_param {{ shape {{ dim: 3 dim: 4 }} }} }}
layer {{ name: "py" type: "Python" bottom: "a" bottom: "b" top: "y"
        python_param {{ module: "{module}" layer: "{cls}" param_str: "{param_str}" }} {extra} }}
'''


def test_python_layer_refused_without_opt_in(user_module):
    with pytest.raises(LayerConfigError, match=r"allow_python=True") as e:
        _net(_prototxt(user_module))
    assert "py" in str(e.value) and user_module in str(e.value)
    assert user_module not in sys.modules  # refused before importing anything


def test_forward_backward_param_str_phase_net(user_module):
    net = _net(_prototxt(user_module), allow_python=True)
    assert net.allow_python is True
    obj = net.layer_dict["py"].obj
    assert obj.k == 2.5 and obj.seen_phase == caffe.TRAIN and obj.seen_net.name == net.name
    assert net.blobs["y"].shape == (3, 4)
    a, b = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    net.blobs["a"].data[...] = a
    net.blobs["b"].data[...] = b
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, 2.5 * a + b, rtol=1e-6)
    g = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    net.blobs["y"].diff[...] = g
    net.backward()
    np.testing.assert_allclose(net.blobs["a"].diff, 2.5 * g, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["b"].diff, g, rtol=1e-6)
    assert obj.last_propagate_down == [True, True]


def test_propagate_down_false_is_passed_to_the_user(user_module):
    net = _net(_prototxt(user_module, extra="propagate_down: true propagate_down: false"), allow_python=True)
    net.forward()
    net.blobs["y"].diff[...] = 1
    net.backward()
    assert net.layer_dict["py"].obj.last_propagate_down == [True, False]
    np.testing.assert_array_equal(net.blobs["b"].diff, 0)


def test_learnable_blob_added_by_user_is_a_net_param(user_module):
    net = _net(_prototxt(user_module, param_str='{\\"k\\": 1, \\"bias\\": true}'), allow_python=True)
    assert [tuple(p.tensor.shape) for p in net.learnable_params] == [(4,)]
    np.testing.assert_array_equal(net.params["py"][0].data, np.arange(4))
    net.forward()
    np.testing.assert_allclose(net.blobs["y"].data, np.arange(4)[None].repeat(3, 0))
    net.clear_param_diffs()
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.params["py"][0].diff, 3.0)
    net.backward()  # param diffs accumulate across backward passes, as in Caffe
    np.testing.assert_allclose(net.params["py"][0].diff, 6.0)


def test_finite_differences_through_the_bridge(user_module, monkeypatch):
    import caffessl.net as net_mod
    orig = net_mod.Net.__init__

    def init(self, *a, **kw):
        kw["allow_python"] = True
        orig(self, *a, **kw)
    monkeypatch.setattr(net_mod.Net, "__init__", init)
    check_layer_gradients(f'type: "Python" bottom: "a" bottom: "b" top: "y" python_param {{ module: "{user_module}" '
                          f'layer: "Scaled" param_str: "{{\\"k\\": -1.5, \\"bias\\": true}}" }}',
                          [(3, 4), (3, 4)])
    check_layer_gradients(f'type: "Python" bottom: "a" top: "y" loss_weight: 1 python_param {{ '
                          f'module: "{user_module}" layer: "SumSquares" }}', [(2, 3)])


def test_data_layer_without_bottoms(user_module):
    net = _net(f'layer {{ name: "src" type: "Python" top: "d" python_param {{ module: "{user_module}" '
               f'layer: "Source" param_str: "3" }} }}', allow_python=True)
    net.forward()
    np.testing.assert_array_equal(net.blobs["d"].data, np.arange(6).reshape(3, 2))


@pytest.mark.parametrize("module,cls,match", [
    ("no_such_module_for_caffessl_tests", "X", "cannot import"),
    ("os.path", "NoSuchClass", "no class"),
    ("../evil", "X", "dotted module name"),
    ("__import__('os')", "X", "dotted module name"),
    ("", "X", "dotted module name"),
])
def test_bad_module_or_class_raises_typed_error(module, cls, match):
    text = f'''
layer {{ name: "in" type: "Input" top: "a" input_param {{ shape {{ dim: 1 }} }} }}
layer {{ name: "py" type: "Python" bottom: "a" top: "y" python_param {{ module: "{module}" layer: "{cls}" }} }}'''
    with pytest.raises(LayerConfigError, match=match):
        _net(text.replace("'", "\\'"), allow_python=True)


def test_missing_backward_raises_when_a_gradient_is_needed(user_module):
    net = _net(f'''
force_backward: true
layer {{ name: "in" type: "Input" top: "a" input_param {{ shape {{ dim: 2 dim: 2 }} }} }}
layer {{ name: "py" type: "Python" bottom: "a" top: "y" python_param {{ module: "{user_module}" layer: "Source"
        param_str: "2" }} }}''', allow_python=True)
    net.forward()
    net.blobs["y"].diff[...] = 1
    with pytest.raises(NotImplementedError, match="backward"):
        net.backward()


def test_caffessl_layer_is_pycaffes_base():
    assert caffe.Layer.__name__ == "Layer" and hasattr(caffe.Layer, "setup")


def test_layer_exposes_the_user_objects_attributes(user_module):
    # pycaffe: net.layers[i] is the user's object, so its own attributes are reachable
    net = _net(_prototxt(user_module), allow_python=True)
    layer = net.layer_dict["py"]
    assert layer.k == 2.5 and layer.seen_phase == caffe.TRAIN
    with pytest.raises(AttributeError):
        layer.no_such_attribute


def test_refusal_names_every_way_to_opt_in(user_module):
    with pytest.raises(LayerConfigError, match=r"allow_python=True to caffessl\.Net.*solver.*--allow-python"):
        _net(_prototxt(user_module))
