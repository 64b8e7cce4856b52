"""pycaffe's NetSpec (python/caffe/net_spec.py): the names, layer order and parameter placement that a
Caffe user's prototxt-generating script gets, and that the generated net builds and runs in caffessl.

Expected values follow pycaffe's rules: the assigned name names a layer and its first top, an in-place
layer writes its bottoms as tops, unnamed tops get ``<Type><n>`` (one counter per type, one count per
top), a keyword goes to the type's own ``*_param`` message when that has the field and to LayerParameter
otherwise, and keywords ending in ``param`` always go to LayerParameter."""
import importlib
import subprocess
import sys

import numpy as np
import pytest

import caffessl as caffe
from caffessl import layers as L
from caffessl import params as P
from caffessl.errors import LayerConfigError, NetGraphError
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2

BATCH = 2


def lenet(data_layer):
    """The net of Caffe's 01-learning-lenet tutorial; ``data_layer`` makes (data, label)."""
    n = caffe.NetSpec()
    n.data, n.label = data_layer()
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def input_data():
    return L.Input(shape=[dict(dim=[BATCH, 1, 28, 28]), dict(dim=[BATCH])], ntop=2)


def lmdb_data():  # the tutorial's own data layer
    return L.Data(batch_size=64, backend=P.Data.LMDB, source='mnist/mnist_train_lmdb',
                  transform_param=dict(scale=1. / 255), ntop=2)


def layer_table(net_param):
    return [(lp.name, lp.type, list(lp.bottom), list(lp.top)) for lp in net_param.layer]


LENET_TABLE = [
    ("data", None, [], ["data", "label"]),
    ("conv1", "Convolution", ["data"], ["conv1"]),
    ("pool1", "Pooling", ["conv1"], ["pool1"]),
    ("conv2", "Convolution", ["pool1"], ["conv2"]),
    ("pool2", "Pooling", ["conv2"], ["pool2"]),
    ("fc1", "InnerProduct", ["pool2"], ["fc1"]),
    ("relu1", "ReLU", ["fc1"], ["fc1"]),            # in place: its top is its bottom
    ("score", "InnerProduct", ["fc1"], ["score"]),  # a bottom is the top the producer writes
    ("loss", "SoftmaxWithLoss", ["score", "label"], ["loss"]),
]


@pytest.mark.parametrize("data_layer,data_type", [(input_data, "Input"), (lmdb_data, "Data")])
def test_lenet_tutorial_layers_names_and_params(data_layer, data_type):
    net = lenet(data_layer)
    expected = [(name, typ or data_type, b, t) for name, typ, b, t in LENET_TABLE]
    assert layer_table(net) == expected
    conv1, pool1, conv2 = net.layer[1], net.layer[2], net.layer[3]
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert conv1.convolution_param.num_output == 20
    assert conv1.convolution_param.weight_filler.type == "xavier"
    assert conv2.convolution_param.num_output == 50
    assert pool1.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert (pool1.pooling_param.kernel_size, pool1.pooling_param.stride) == (2, 2)
    assert net.layer[5].inner_product_param.num_output == 500
    assert net.layer[7].inner_product_param.num_output == 10
    # nothing set that the script did not say: schema defaults stay implicit
    assert not conv1.convolution_param.HasField("bias_term")
    assert not net.layer[6].HasField("relu_param") and len(net.layer[8].loss_weight) == 0
    data = net.layer[0]
    if data_type == "Data":
        assert data.data_param.batch_size == 64
        assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
        assert data.data_param.source == "mnist/mnist_train_lmdb"
        assert data.transform_param.scale == pytest.approx(1 / 255)
    else:
        assert [list(s.dim) for s in data.input_param.shape] == [[BATCH, 1, 28, 28], [BATCH]]


def test_lenet_text_is_prototxt_and_builds_a_net_that_trains(tmp_path):
    net_param = lenet(input_data)
    text = str(net_param)
    assert 'name: "relu1"' in text and "pool: MAX" in text and "kernel_size: 5" in text
    assert parse_text(text, caffe_pb2.NetParameter()) == net_param
    path = tmp_path / "lenet.prototxt"
    path.write_text(text)

    a = caffe.Net(net_param, caffe.TRAIN)
    b = caffe.Net(str(path), caffe.TRAIN)
    assert a._layer_names == b._layer_names == [row[0] for row in LENET_TABLE]
    assert a.params["conv1"][0].data.shape == (20, 1, 5, 5)
    assert a.params["fc1"][0].data.shape == (500, 50 * 4 * 4)
    assert a.params["score"][0].data.shape == (10, 500)
    for name in a.params:
        for pa, pb in zip(a.params[name], b.params[name]):
            pb.data[...] = pa.data

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 1, 28, 28)).astype(np.float32)
    y = np.array([3, 7], np.float32)
    losses = []
    for net in (a, b):
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = y
        losses.append(float(net.forward()["loss"]))
        net.backward()
    assert np.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=1e-6)
    for name in ("conv1", "fc1", "score"):
        assert np.abs(a.params[name][0].diff).sum() > 0
        np.testing.assert_allclose(a.params[name][0].diff, b.params[name][0].diff, rtol=1e-5, atol=1e-7)


def test_anonymous_tops_get_type_counter_names():
    data = L.Input(shape=dict(dim=[2, 4, 6, 6]))
    conv = L.Convolution(data, kernel_size=3, num_output=4)
    conv2 = L.Convolution(conv, kernel_size=1, num_output=4)
    relu = L.ReLU(conv2, in_place=True)
    pool = L.Pooling(relu, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    a, b = L.Slice(pool, axis=1, slice_point=[1], ntop=2)
    c, d = L.Slice(b, slice_point=[2], ntop=2)
    silence = L.Silence(a, c, d, ntop=0)
    assert isinstance(a, type(data)) and silence.ntop == 0 and silence.tops == ()
    net = caffe.to_proto(silence)
    assert layer_table(net) == [
        ("Input1", "Input", [], ["Input1"]),
        ("Convolution1", "Convolution", ["Input1"], ["Convolution1"]),
        ("Convolution2", "Convolution", ["Convolution1"], ["Convolution2"]),
        ("ReLU1", "ReLU", ["Convolution2"], ["Convolution2"]),   # in place, named after its own type
        ("Pooling1", "Pooling", ["Convolution2"], ["Pooling1"]),
        ("Slice1", "Slice", ["Pooling1"], ["Slice1", "Slice2"]),  # one count per top
        ("Slice3", "Slice", ["Slice2"], ["Slice3", "Slice4"]),
        ("Silence1", "Silence", ["Slice1", "Slice3", "Slice4"], []),
    ]
    assert net.layer[5].slice_param.axis == 1 and list(net.layer[5].slice_param.slice_point) == [1]
    # Top.to_proto is to_proto(top): only what the top needs
    assert [lp.name for lp in pool.to_proto().layer] == ["Input1", "Convolution1", "Convolution2",
                                                         "ReLU1", "Pooling1"]
    # the generated net runs
    out = caffe.Net(net, caffe.TEST)
    out.blobs["Input1"].data[...] = 1.0
    out.forward()
    assert out.blobs["Slice3"].data.shape == (2, 2, 2, 2) and out.blobs["Slice4"].data.shape == (2, 1, 2, 2)


def test_netspec_names_mixed_with_automatic_ones():
    n = caffe.NetSpec()
    n["data"] = L.DummyData(shape=dict(dim=[2, 3]))
    hidden = L.InnerProduct(n.data, num_output=4)
    n.out = L.InnerProduct(L.TanH(hidden), num_output=2)
    n.first, n.second = L.Slice(n.out, axis=1, ntop=2)
    _, n.tail = L.Slice(n.data, axis=1, slice_point=[1], ntop=2)
    n.silence = L.Silence(n.first, n.second, n.tail, ntop=0)
    assert "tail" in n and n.keys() == ["data", "out", "first", "second", "tail", "silence"]
    assert layer_table(n.to_proto()) == [
        ("data", "DummyData", [], ["data"]),
        ("InnerProduct1", "InnerProduct", ["data"], ["InnerProduct1"]),
        ("TanH1", "TanH", ["InnerProduct1"], ["TanH1"]),
        ("out", "InnerProduct", ["TanH1"], ["out"]),
        ("first", "Slice", ["out"], ["first", "second"]),
        ("Slice1", "Slice", ["data"], ["Slice1", "tail"]),   # layer named after its first top
        ("silence", "Silence", ["first", "second", "tail"], []),
    ]
    with pytest.raises(NetGraphError, match="tuple"):
        n.pair = L.Slice(n.data, axis=1, ntop=2)
    with pytest.raises(AttributeError):
        n.missing


def test_param_name_dict_from_the_schema():
    d = caffe.net_spec.param_name_dict()
    assert d["Convolution"] == "convolution"
    assert d["InnerProduct"] == "inner_product"
    assert d["Transformation"] == "transform"
    assert d["ReLU"] == "relu"
    assert d["HDF5Data"] == "hdf5_data"
    assert d["Python"] == "python"
    assert "SoftmaxWithLoss" not in d and "Deconvolution" not in d


def test_keywords_fall_back_to_layer_parameter():
    n = caffe.NetSpec()
    n.data, n.label = L.Data(source="train_lmdb", batch_size=4, backend=P.Data.LMDB,
                             transform_param=dict(scale=1 / 255., mirror=True),
                             include=dict(phase=caffe.TEST), ntop=2)
    n.ip = L.InnerProduct(n.data, num_output=10, param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                          bias_filler=dict(type="constant", value=0.5), loss_weight=0.25)
    n.relu = L.ReLU(n.ip, negative_slope=0.1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.relu, n.label, loss_weight=2, loss_param=dict(ignore_label=255),
                               exclude=[dict(stage="deploy")])
    n.pool_enum = L.Pooling(n.data, kernel_size=2, pool=P.Pooling.AVE)
    n.pool_name = L.Pooling(n.data, kernel_size=2, pool="AVE", include=dict(phase="TRAIN"))
    n.sum = L.Eltwise(n.pool_enum, n.pool_name, operation=P.Eltwise.SUM, coeff=[1, -1])
    n.py = L.Python(n.sum, module="my_layers", layer="MyLayer", param_str="{'k': 1}")
    layer = {lp.name: lp for lp in n.to_proto().layer}

    data = layer["data"]
    assert (data.data_param.source, data.data_param.batch_size) == ("train_lmdb", 4)
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert data.transform_param.scale == pytest.approx(1 / 255) and data.transform_param.mirror
    assert len(data.include) == 1 and data.include[0].phase == caffe_pb2.TEST

    ip = layer["ip"]
    assert [p.lr_mult for p in ip.param] == [1, 2]
    assert not ip.param[0].HasField("decay_mult")
    assert ip.param[1].HasField("decay_mult") and ip.param[1].decay_mult == 0
    assert ip.inner_product_param.bias_filler.type == "constant"
    assert ip.inner_product_param.bias_filler.value == 0.5
    assert list(ip.loss_weight) == [0.25]          # InnerProductParameter has no loss_weight: LayerParameter

    assert layer["relu"].relu_param.negative_slope == pytest.approx(0.1)
    assert list(layer["relu"].top) == ["ip"]
    loss = layer["loss"]                           # no SoftmaxWithLossParameter: all on LayerParameter
    assert list(loss.bottom) == ["ip", "label"]
    assert list(loss.loss_weight) == [2] and loss.loss_param.ignore_label == 255
    assert [r.stage for r in loss.exclude] == [["deploy"]]

    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX and P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert layer["pool_enum"].pooling_param.pool == layer["pool_name"].pooling_param.pool \
        == caffe_pb2.PoolingParameter.AVE
    assert layer["pool_name"].include[0].phase == caffe_pb2.TRAIN
    assert layer["sum"].eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM
    assert list(layer["sum"].eltwise_param.coeff) == [1, -1]
    py = layer["py"].python_param
    assert (py.module, py.layer, py.param_str) == ("my_layers", "MyLayer", "{'k': 1}")


def test_explicit_name_keyword_overrides_the_generated_one():
    # pycaffe assigns keywords after naming the layer: name= renames the layer, not its top
    top = L.InnerProduct(L.Input(shape=dict(dim=[1, 2])), num_output=3, name="shared_ip")
    assert layer_table(top.to_proto())[1] == ("shared_ip", "InnerProduct", ["Input1"], ["InnerProduct1"])


@pytest.mark.parametrize("kwargs,named", [
    (dict(kernel_sise=3), "kernel_sise"),
    (dict(weight_filler=dict(tpye="xavier")), "tpye"),
    (dict(foo_param=dict(x=1)), "foo_param"),
    (dict(param=[dict(lr_mul=1)]), "lr_mul"),
    (dict(engine="FAST"), "engine"),              # not a value of the Engine enum
    (dict(num_output="ten"), "num_output"),
])
def test_bad_keyword_raises_layer_config_error_naming_it(kwargs, named):
    data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(LayerConfigError, match="Convolution") as e:
        caffe.to_proto(L.Convolution(data, **kwargs))
    assert named in str(e.value)


def test_bottom_that_is_not_a_top_is_a_graph_error():
    with pytest.raises(NetGraphError, match="bottom 0"):
        L.ReLU("data")
    with pytest.raises(LayerConfigError, match="ntop"):
        L.ReLU(ntop=-1)


def test_layers_package_is_also_pycaffe_layers():
    assert L.base is importlib.import_module("caffessl.layers.base")
    assert L.vision is importlib.import_module("caffessl.layers.vision")
    assert L.LAYERS is L.base.LAYERS and callable(L.register) and callable(L.get_layer_class)
    assert "Convolution" in L.layer_type_list()
    assert callable(L.Convolution) and L.Convolution.__name__ == "Convolution"
    for name in ("_x", "__wrapped__", "__all__"):
        with pytest.raises(AttributeError):
            getattr(L, name)
    with pytest.raises(ImportError):
        importlib.import_module("caffessl.layers.no_such_module")
    # pycaffe's other spellings
    from caffessl.net_spec import layers as L2, params as P2
    assert caffe.params.Pooling.MAX == P2.Pooling.MAX == 0 and L2.Convolution.__name__ == "Convolution"
    assert caffe.net_spec.NetSpec is caffe.NetSpec and caffe.to_proto is caffe.net_spec.to_proto
    with pytest.raises(AttributeError):
        P.NoSuchThing
    with pytest.raises(AttributeError):
        P.Pooling.NOT_A_METHOD


def test_layer_submodules_import_lazily_in_a_fresh_interpreter():
    code = (
        "import sys\n"
        "from caffessl import layers as L\n"
        "assert 'caffessl.layers.recurrent' not in sys.modules\n"
        "m = L.recurrent\n"
        "assert m is sys.modules['caffessl.layers.recurrent'], m\n"
        "assert 'LSTM' in L.layer_type_list()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
