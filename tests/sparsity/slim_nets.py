"""Small test nets for slimming: the shipped/shared prototxts as TEST deploy nets with narrower layers and
small inputs, and generators of a ResNet-50-style bottleneck net, an Inception module and a DenseNet block;
random weights (BatchNorm statistics positive) and the checks every slimming test makes."""
import math

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.io.prototxt import read_net_prototxt, to_text
from caffessl.sparsity.slim import param_count, write



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These nets are tiny: one thread is fastest (and far faster on a busy machine). Import it into a
    test module to use it there."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DROP = ("Data", "ImageData", "Accuracy", "SoftmaxWithLoss")


def deploy(path, shape, factor=1):
    """The net of ``path`` with an Input of ``shape`` instead of its data layers, no loss/accuracy, and
    every Convolution/InnerProduct ``factor`` times narrower (a depthwise one keeps group == channels)."""
    p = read_net_prototxt(str(path))
    layers = [lp for lp in p.layer if lp.type not in DROP + ("Input",)]
    del p.layer[:]
    inp = p.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add(dim=list(shape))
    for lp in layers:
        sub = lp.convolution_param if lp.type == "Convolution" else lp.inner_product_param
        if lp.type in ("Convolution", "InnerProduct"):
            n = sub.num_output
            sub.num_output = max(1, n // factor)
            if lp.type == "Convolution" and sub.group == n and n > 1:
                sub.group = sub.num_output
    p.layer.extend(layers)
    return to_text(p)


def build(tmp_path, text, seed=0, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    randomize(net, seed)
    return net


def randomize(net, seed=0):
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        t = net.layer_type(name)
        for i, b in enumerate(blobs):
            s = b.data.shape
            if t == "BatchNorm":
                b.data[...] = [rng.standard_normal(s) * 0.1, 1 + 0.5 * np.abs(rng.standard_normal(s)), 1.0][i]
            elif t == "Scale":
                b.data[...] = 1 + 0.2 * rng.standard_normal(s) if i == 0 else 0.1 * rng.standard_normal(s)
            elif b.data.ndim > 1:
                b.data[...] = rng.standard_normal(s) * math.sqrt(2.0 / (b.data.size / s[0]))
            else:
                b.data[...] = 0.1 * rng.standard_normal(s)


def bn(c):
    return [(c,), (c,), (1,)]


def sc(c):
    return [(c,), (c,)]


def table(net, changes, removed=()):
    """Expected blob shapes of the slim net: ``net``'s, minus the ``removed`` layers, with ``changes``."""
    out = {n: [tuple(b.data.shape) for b in blobs] for n, blobs in net.params.items() if n not in removed}
    out.update(changes)
    return out


def reload(tmp_path, result):
    m, w = tmp_path / "slim.prototxt", tmp_path / "slim.caffemodel"
    write(result, m, w)
    return caffe.Net(str(m), str(w), caffe.TEST)


def outputs_of_both(a, b, seed):
    """The outputs of nets ``a`` and ``b`` for the same random normal inputs (``a``'s input shapes)."""
    rng = np.random.default_rng(seed)
    feeds = {n: rng.standard_normal(a.blobs[n].shape).astype(np.float32) for n in a.inputs}
    ra = {k: v.copy() for k, v in a.forward(**feeds).items()}
    rb = b.forward(**feeds)
    assert ra.keys() == rb.keys()
    return ra, rb


def same_outputs(a, b, seeds=(0, 1, 2), rtol=1e-4):
    """Every output of ``b`` equals ``a``'s within ``rtol`` of the output's scale, for random inputs."""
    for seed in seeds:
        ra, rb = outputs_of_both(a, b, seed)
        for k in ra:
            err = np.abs(rb[k].astype(np.float64) - ra[k]).max()
            assert err <= rtol * max(np.abs(ra[k]).max(), 1e-6), f"{k} seed {seed}: max |diff| {err:.3g}"


def same_in_onnxruntime(net, tmp_path, rtol=1e-4):
    """``net`` exported to ONNX runs in onnxruntime and matches caffessl's forward."""
    import onnxruntime as ort

    from caffessl.export.onnx import export
    path = tmp_path / "slim.onnx"
    export(net, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal(net.blobs["data"].shape).astype(np.float32)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
    want = net.forward(data=x)
    for k, v in want.items():
        err = np.abs(got[k] - v).max()
        assert err <= rtol * max(np.abs(v).max(), 1e-6), f"{k}: onnxruntime differs by {err:.3g}"


def verify(net, result, tmp_path, expected):
    """The slim net has exactly the ``expected`` blob shapes and their parameter count, computes what
    ``net`` computes (TEST phase, several seeds) and exports to ONNX exactly; returns it."""
    small = reload(tmp_path, result)
    got = {n: [tuple(b.data.shape) for b in blobs] for n, blobs in small.params.items()}
    assert got == expected
    assert param_count(result.arrays) == sum(math.prod(s) for shapes in expected.values() for s in shapes)
    same_outputs(net, small)
    same_in_onnxruntime(small, tmp_path)
    return small


def _conv(name, bottom, n, k=1, pad=0, stride=1, group=1, bias=True, top=None):
    extra = (f" pad: {pad}" if pad else "") + (f" stride: {stride}" if stride > 1 else "") + \
        (f" group: {group}" if group > 1 else "") + ("" if bias else " bias_term: false")
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k}{extra} }} }}\n')


def _bn_scale_relu(name, blob, relu=True):
    s = (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
         f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{blob}" top: "{blob}" scale_param {{ bias_term: true }} }}\n')
    return s + (f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n' if relu else "")


def _input(shape):
    return (f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in shape)} }} }} }}\n')


def _head(bottom, n):
    return (f'layer {{ name: "pool" type: "Pooling" bottom: "{bottom}" top: "pool" '
            f'pooling_param {{ pool: AVE global_pooling: true }} }}\n'
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param {{ num_output: {n} }} }}\n')


def bottleneck_net():
    """ResNet-50-style: stem conv (8), two stages of two bottleneck blocks (1x1 -> 3x3 -> 1x1, bias-less
    convs with BatchNorm/Scale), a projection shortcut in each stage's first block; 16 then 32 channels."""
    s = _input([2, 3, 8, 8]) + _conv("conv1", "data", 8, 3, pad=1, bias=False) + _bn_scale_relu("conv1", "conv1")
    x = "conv1"
    for stage, (mid, out, stride) in zip((2, 3), ((4, 16, 1), (8, 32, 2))):
        for blk in "ab":
            p = f"res{stage}{blk}"
            st = stride if blk == "a" else 1
            if blk == "a":
                s += _conv(f"{p}_branch1", x, out, 1, stride=st, bias=False) + _bn_scale_relu(f"{p}_branch1", f"{p}_branch1", False)
                short = f"{p}_branch1"
            else:
                short = x
            s += _conv(f"{p}_branch2a", x, mid, 1, stride=st, bias=False) + _bn_scale_relu(f"{p}_branch2a", f"{p}_branch2a")
            s += _conv(f"{p}_branch2b", f"{p}_branch2a", mid, 3, pad=1, bias=False) + _bn_scale_relu(f"{p}_branch2b", f"{p}_branch2b")
            s += _conv(f"{p}_branch2c", f"{p}_branch2b", out, 1, bias=False) + _bn_scale_relu(f"{p}_branch2c", f"{p}_branch2c", False)
            s += (f'layer {{ name: "{p}" type: "Eltwise" bottom: "{short}" bottom: "{p}_branch2c" top: "{p}" }}\n'
                  f'layer {{ name: "{p}_relu" type: "ReLU" bottom: "{p}" top: "{p}" }}\n')
            x = p
    return s + _head(x, 10)


def inception_net():
    """A GoogLeNet Inception module (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1) concatenated
    (4 + 6 + 3 + 3 = 16 channels), then a 1x1 convolution and a classifier."""
    s = _input([2, 3, 8, 8]) + _conv("conv0", "data", 8, 3, pad=1) + \
        'layer { name: "relu0" type: "ReLU" bottom: "conv0" top: "conv0" }\n'
    relu = lambda b: f'layer {{ name: "relu_{b}" type: "ReLU" bottom: "{b}" top: "{b}" }}\n'  # noqa: E731
    s += _conv("inc/1x1", "conv0", 4) + relu("inc/1x1")
    s += _conv("inc/3x3_reduce", "conv0", 4) + relu("inc/3x3_reduce")
    s += _conv("inc/3x3", "inc/3x3_reduce", 6, 3, pad=1) + relu("inc/3x3")
    s += _conv("inc/5x5_reduce", "conv0", 2) + relu("inc/5x5_reduce")
    s += _conv("inc/5x5", "inc/5x5_reduce", 3, 5, pad=2) + relu("inc/5x5")
    s += ('layer { name: "inc/pool" type: "Pooling" bottom: "conv0" top: "inc/pool" '
          'pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }\n')
    s += _conv("inc/pool_proj", "inc/pool", 3) + relu("inc/pool_proj")
    s += ('layer { name: "inc/output" type: "Concat" bottom: "inc/1x1" bottom: "inc/3x3" bottom: "inc/5x5" '
          'bottom: "inc/pool_proj" top: "inc/output" }\n')
    s += _conv("conv_after", "inc/output", 8) + relu("conv_after")
    return s + _head("conv_after", 5)


def densenet_net():
    """A DenseNet block: conv0 (6), two BN-Scale-ReLU-conv3x3 layers of growth 4 whose outputs are
    concatenated to their input (6 -> 10 -> 14 channels), a BN-Scale-ReLU-1x1 transition (7), a classifier."""
    s = _input([2, 3, 6, 6]) + _conv("conv0", "data", 6, 3, pad=1)
    x = "conv0"
    for i in (1, 2):
        s += (f'layer {{ name: "bn{i}" type: "BatchNorm" bottom: "{x}" top: "bn{i}" }}\n'
              f'layer {{ name: "scale{i}" type: "Scale" bottom: "bn{i}" top: "bn{i}" scale_param {{ bias_term: true }} }}\n'
              f'layer {{ name: "relu{i}" type: "ReLU" bottom: "bn{i}" top: "bn{i}" }}\n')
        s += _conv(f"conv{i}", f"bn{i}", 4, 3, pad=1)
        s += f'layer {{ name: "concat{i}" type: "Concat" bottom: "{x}" bottom: "conv{i}" top: "concat{i}" }}\n'
        x = f"concat{i}"
    s += ('layer { name: "bn3" type: "BatchNorm" bottom: "concat2" top: "bn3" }\n'
          'layer { name: "scale3" type: "Scale" bottom: "bn3" top: "bn3" scale_param { bias_term: true } }\n'
          'layer { name: "relu3" type: "ReLU" bottom: "bn3" top: "bn3" }\n')
    s += _conv("transition", "bn3", 7)
    return s + _head("transition", 3)
