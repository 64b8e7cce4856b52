"""Small nets with planted weights for the pruning tests."""
from __future__ import annotations

import numpy as np

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2

# conv1 (4 filters) -> BN -> Scale -> ReLU -> pool -> conv2 (4) -> ReLU -> ip (3) -> loss; DummyData inputs
BN_NET = """
name: "tiny_bn"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 8 dim: 2 dim: 10 dim: 10 } shape { dim: 8 dim: 3 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 2 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""

# conv1 (4) -> ReLU -> conv2 (4) -> ReLU -> ip (3): no BatchNorm
PLAIN_NET = """
name: "tiny_plain"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 8 dim: 2 dim: 8 dim: 8 } shape { dim: 8 dim: 3 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                        bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


def net_param(text=PLAIN_NET):
    return parse_text(text, caffe_pb2.NetParameter())


def make_net(text=PLAIN_NET, phase=caffe.TEST, seed=1):
    caffe.set_random_seed(seed)
    net = caffe.Net(net_param(text), phase)
    if "bn1" in net.layer_dict:
        for name in ("bn1", "bn2"):                    # planted global statistics: mean 0.1, var 2, factor 1
            c = net.params[name][0].data.shape[0]
            net.params[name][0].data[...] = 0.1
            net.params[name][1].data[...] = 2.0
            net.params[name][2].data[...] = 1.0
            assert c == 4
    return net


def outputs(net, blob="ip", data=None):
    """Run ``net`` on fixed data from its first non-data layer; the copy of ``blob``."""
    if data is not None:
        net.blobs["data"].data[...] = data
    start = next(l.name for l in net.layers if not l.is_data)
    net.forward(start=start)
    return np.array(net.blobs[blob].data, np.float64)


def fixed_data(net, seed=0):
    return np.random.default_rng(seed).standard_normal(net.blobs["data"].shape).astype(np.float32)


def rows(net, layer):
    w = net.params[layer][0].data
    return w.reshape(w.shape[0], -1)
