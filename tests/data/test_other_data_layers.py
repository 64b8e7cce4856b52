"""ImageData, MemoryData (pycaffe's set_input_arrays), DummyData, WindowData."""
from __future__ import annotations

import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import DataSourceError, LayerConfigError, NetGraphError, ShapeMismatchError

from .helpers import net_param, png_bytes


@pytest.fixture
def images(tmp_path):
    rs = np.random.RandomState(4)
    rgb = rs.randint(0, 256, size=(3, 6, 8, 3)).astype(np.uint8)
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"im {i}.png").write_bytes(png_bytes(rgb[i]))  # a space in the name
    (tmp_path / "list.txt").write_text("".join(f"im {i}.png {10 + i}\n" for i in range(3)))
    return tmp_path, rgb


def _image_net(tmp, batch, extra="", param_extra="", phase=caffe.TEST):
    return caffe.Net(net_param(
        f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" image_data_param {{ '
        f'source: "{tmp}/list.txt" root_folder: "{tmp}/img/" batch_size: {batch} {param_extra} }} {extra} }}'),
        phase)


def test_image_data_order_labels_bgr(images):
    tmp, rgb = images
    net = _image_net(tmp, 2)
    assert net.blobs["data"].shape == (2, 3, 6, 8)
    bgr = rgb[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32)
    for k in range(3):
        net.forward()
        idx = (np.arange(2) + 2 * k) % 3
        np.testing.assert_array_equal(net.blobs["data"].data, bgr[idx])
        np.testing.assert_array_equal(net.blobs["label"].data, 10 + idx)


def test_image_data_gray_resize_crop(images):
    tmp, rgb = images
    net = _image_net(tmp, 3, "transform_param { crop_size: 2 }",
                     "is_color: false new_height: 4 new_width: 4")
    assert net.blobs["data"].shape == (3, 1, 2, 2)
    net.forward()
    # independent reference: Pillow grey, then torch bilinear 6x8 -> 4x4 with half-pixel centres
    from PIL import Image
    grey = np.stack([np.asarray(Image.fromarray(im).convert("L"), np.float32) for im in rgb])[:, None]
    # exact 2x downscale in width (8->4) and 1.5x in height: compute the bilinear weights by hand
    def axis_weights(n_in, n_out):
        W = np.zeros((n_out, n_in))
        for o in range(n_out):
            x = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
            x0 = min(int(np.floor(x)), n_in - 1)
            x1 = min(x0 + 1, n_in - 1)
            W[o, x0] += 1 - (x - x0)
            W[o, x1] += x - x0
        return W
    Wh, Ww = axis_weights(6, 4), axis_weights(8, 4)
    resized = np.round(np.einsum("oh,nchw,pw->ncop", Wh, grey, Ww)).clip(0, 255)
    np.testing.assert_allclose(net.blobs["data"].data, resized[:, :, 1:3, 1:3], atol=1.0)


def test_image_data_shuffle_visits_every_image(images):
    tmp, _ = images
    caffe.set_random_seed(5)
    net = _image_net(tmp, 3, param_extra="shuffle: true", phase=caffe.TRAIN)
    labels = []
    for _ in range(4):
        net.forward()
        labels.append(sorted(net.blobs["label"].data.tolist()))
    assert all(l == [10, 11, 12] for l in labels)


def test_image_data_bad_input(images):
    tmp, _ = images
    (tmp / "empty.txt").write_text("\n")
    with pytest.raises(DataSourceError, match=r"layer 'd'.*empty\.txt.*empty"):
        caffe.Net(net_param(f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" '
                            f'image_data_param {{ source: "{tmp}/empty.txt" }} }}'), caffe.TEST)
    (tmp / "list.txt").write_text("missing.png 1\n")
    with pytest.raises(DataSourceError, match=r"layer 'd'.*missing\.png"):
        _image_net(tmp, 1)
    with pytest.raises(LayerConfigError, match="new_height and new_width"):
        _image_net(tmp, 1, param_extra="new_height: 4")


def _memory_net(batch=2):
    return caffe.Net(net_param(f'layer {{ name: "m" type: "MemoryData" top: "data" top: "label" '
                               f'memory_data_param {{ batch_size: {batch} channels: 1 height: 2 width: 3 }} }}'),
                     caffe.TEST)


def test_memory_data_set_input_arrays_cycles():
    net = _memory_net()
    assert net.blobs["data"].shape == (2, 1, 2, 3) and net.blobs["label"].shape == (2,)
    with pytest.raises(DataSourceError, match="set_input_arrays"):
        net.forward()
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 1, 2, 3)
    labels = np.array([3, 1, 4, 1], np.float32)
    net.set_input_arrays(data, labels)
    for k in range(3):
        net.forward()
        s = slice(2 * (k % 2), 2 * (k % 2) + 2)
        np.testing.assert_array_equal(net.blobs["data"].data, data[s])
        np.testing.assert_array_equal(net.blobs["label"].data, labels[s])
    net.set_input_arrays(data, labels.reshape(4, 1, 1, 1))  # pycaffe's 4-d labels
    with pytest.raises(ShapeMismatchError, match="multiple of batch_size 2"):
        net.set_input_arrays(data[:3], labels[:3])
    with pytest.raises(ShapeMismatchError, match=r"\(N, 1, 2, 3\)"):
        net.set_input_arrays(data.reshape(4, 2, 1, 3), labels)
    nomem = caffe.Net(net_param('layer { name: "i" type: "Input" top: "x" input_param { shape { dim: 1 } } }'),
                      caffe.TEST)
    with pytest.raises(NetGraphError, match="no MemoryData"):
        nomem.set_input_arrays(data, labels)


def test_dummy_data_shapes_and_fillers():
    caffe.set_random_seed(1)
    net = caffe.Net(net_param(
        'layer { name: "dd" type: "DummyData" top: "a" top: "b" top: "c" dummy_data_param { '
        'data_filler { type: "constant" value: 3 } data_filler { type: "gaussian" std: 2 } '
        'data_filler { type: "uniform" min: -1 max: 1 } '
        'shape { dim: 2 dim: 3 } shape { dim: 400 } shape { dim: 5 dim: 1 dim: 2 } } }'), caffe.TRAIN)
    assert (net.blobs["a"].shape, net.blobs["b"].shape, net.blobs["c"].shape) == ((2, 3), (400,), (5, 1, 2))
    net.forward()
    np.testing.assert_array_equal(net.blobs["a"].data, np.full((2, 3), 3, np.float32))
    b1 = net.blobs["b"].data.copy()
    assert 1.5 < b1.std() < 2.5
    c = net.blobs["c"].data
    assert (c >= -1).all() and (c <= 1).all()
    net.forward()
    assert not np.array_equal(net.blobs["b"].data, b1)  # non-constant fillers refill every forward
    # legacy dims, no filler -> zeros
    net = caffe.Net(net_param('layer { name: "dd" type: "DummyData" top: "x" top: "y" dummy_data_param { '
                              'num: 2 channels: 3 channels: 1 height: 4 width: 5 } }'), caffe.TEST)
    net.forward()
    assert net.blobs["x"].shape == (2, 3, 4, 5) and net.blobs["y"].shape == (2, 1, 4, 5)
    assert not net.blobs["x"].data.any()
    with pytest.raises(LayerConfigError, match="data fillers"):
        caffe.Net(net_param('layer { name: "dd" type: "DummyData" top: "x" top: "y" top: "z" dummy_data_param { '
                            'data_filler { type: "constant" } data_filler { type: "constant" } '
                            'shape { dim: 1 } } }'), caffe.TEST)


def test_dummy_data_does_not_draw_at_setup_for_random_fillers():
    """Caffe's DummyData set-up runs only the constant fillers: the filler stream is where the seed left it."""
    from caffessl import caffe_rng
    caffe.set_random_seed(9)
    ref = caffe_rng.get().rand()
    caffe.set_random_seed(9)
    net = caffe.Net(net_param('layer { name: "dd" type: "DummyData" top: "x" dummy_data_param { '
                              'data_filler { type: "gaussian" } shape { dim: 10 } } }'), caffe.TEST)
    assert caffe_rng.get().rand() == ref
    caffe.set_random_seed(9)
    net.forward()                       # each forward refills from the stream
    assert caffe_rng.get().rand() != ref


def test_window_data_needs_its_window_file(tmp_path):
    with pytest.raises(DataSourceError, match=r"layer 'w'.*window file"):
        caffe.Net(net_param('layer { name: "w" type: "WindowData" top: "data" top: "label" '
                            'transform_param { crop_size: 4 } window_data_param { batch_size: 1 } }'), caffe.TRAIN)
