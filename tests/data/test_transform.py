"""transform_param as Caffe's DataTransformer: crop (random in TRAIN, centre in TEST), mean_file cropped at
the same offset, mean_value (one or per channel), scale, mirror -- against a per-item numpy reference."""
from __future__ import annotations

import numpy as np
import pytest

from caffessl.data.transform import DataTransformer
from caffessl.errors import DataSourceError, LayerConfigError
from caffessl.proto import caffe_pb2

from .helpers import write_mean


def _tp(**kw):
    tp = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            tp.mean_value.extend(v)
        else:
            setattr(tp, k, v)
    return tp


def _reference(x, mean, mean_values, scale, crop, offsets, mirrors):
    """Caffe's formula item by item: top[c,h,w'] = (x[c,h_off+h,w_off+w] - mean[same]) * scale,
    w' = crop-1-w when mirrored."""
    n, c, H, W = x.shape
    ch, cw = (crop, crop) if crop else (H, W)
    out = np.empty((n, c, ch, cw), np.float32)
    for i in range(n):
        ho, wo = offsets[i]
        v = x[i, :, ho:ho + ch, wo:wo + cw].astype(np.float32)
        if mean is not None:
            v = v - mean[:, ho:ho + ch, wo:wo + cw]
        elif mean_values is not None:
            v = v - np.resize(np.asarray(mean_values, np.float32), c)[:, None, None]
        v = v * np.float32(scale)
        out[i] = v[:, :, ::-1] if mirrors[i] else v
    return out


@pytest.fixture
def batch():
    rs = np.random.RandomState(0)
    return rs.randint(0, 256, size=(5, 3, 9, 7)).astype(np.uint8)


def test_test_phase_centre_crop_mean_file_scale(batch, tmp_path):
    mean = np.random.RandomState(1).uniform(0, 255, size=(3, 9, 7)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean)
    t = DataTransformer(_tp(crop_size=4, scale=0.00390625, mean_file=str(tmp_path / "mean.binaryproto")),
                        caffe_pb2.TEST, np.random.RandomState(0), "t")
    got = t.transform(batch)
    # centre: ((9-4)//2, (7-4)//2) = (2, 1)
    want = _reference(batch, mean, None, 0.00390625, 4, [(2, 1)] * 5, [False] * 5)
    assert got.shape == (5, 3, 4, 4) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_mean_values_one_and_per_channel(batch):
    for mv in ([100.0], [104.0, 117.0, 123.0]):
        t = DataTransformer(_tp(mean_value=mv, scale=2.0), caffe_pb2.TEST, np.random.RandomState(0), "t")
        np.testing.assert_array_equal(t.transform(batch),
                                      _reference(batch, None, mv, 2.0, 0, [(0, 0)] * 5, [False] * 5))
    t = DataTransformer(_tp(mean_value=[1.0, 2.0]), caffe_pb2.TEST, np.random.RandomState(0), "t")
    with pytest.raises(LayerConfigError, match="mean_value"):
        t.transform(batch)


def test_train_random_crop_and_mirror_use_the_drawn_offsets(batch):
    seed = 7
    t = DataTransformer(_tp(crop_size=5, mirror=True, mean_value=[10.0]), caffe_pb2.TRAIN,
                        np.random.RandomState(seed), "t")
    got = t.transform(batch)
    rs = np.random.RandomState(seed)  # same draws, in Caffe's order: mirror coins, then h, w offsets
    mirrors = rs.randint(0, 2, size=5).astype(bool)
    hs, ws = rs.randint(0, 9 - 5 + 1, size=5), rs.randint(0, 7 - 5 + 1, size=5)
    want = _reference(batch, None, [10.0], 1.0, 5, list(zip(hs, ws)), mirrors)
    np.testing.assert_array_equal(got, want)
    # over many draws, every offset and both mirror states occur
    outs = {tuple(t.transform(batch[:1])[0, 0, 0]) for _ in range(200)}
    assert len(outs) > 10


def test_mirror_applies_in_test_phase_too_as_caffe(batch):
    t = DataTransformer(_tp(mirror=True), caffe_pb2.TEST, np.random.RandomState(3), "t")
    got = t.transform(batch)
    mirrors = np.random.RandomState(3).randint(0, 2, size=5).astype(bool)
    assert mirrors.any() and not mirrors.all()
    np.testing.assert_array_equal(got, _reference(batch, None, None, 1, 0, [(0, 0)] * 5, mirrors))


def test_uint8_scale_only_is_caffes_float32_product(batch):
    """The fast path casts and scales in one pass: the same bits as float(pixel) * scale in float32."""
    t = DataTransformer(_tp(scale=0.00390625), caffe_pb2.TRAIN, np.random.RandomState(0), "t")
    got = t.transform(batch)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _reference(batch, None, None, 0.00390625, 0, [(0, 0)] * 5, [False] * 5))
    t = DataTransformer(_tp(), caffe_pb2.TRAIN, np.random.RandomState(0), "t")
    np.testing.assert_array_equal(t.transform(batch), batch.astype(np.float32))


def test_float_input_and_errors(tmp_path):
    x = np.random.RandomState(2).randn(2, 1, 4, 4).astype(np.float32)
    t = DataTransformer(_tp(scale=0.5), caffe_pb2.TEST, np.random.RandomState(0), "t")
    np.testing.assert_array_equal(t.transform(x), x * np.float32(0.5))
    with pytest.raises(LayerConfigError, match="mean_file and mean_value"):
        DataTransformer(_tp(mean_file="m", mean_value=[1.0]), caffe_pb2.TEST, None, "t")
    write_mean(tmp_path / "m.binaryproto", np.zeros((1, 5, 5), np.float32))
    t = DataTransformer(_tp(mean_file=str(tmp_path / "m.binaryproto")), caffe_pb2.TEST, None, "layer 'x'")
    with pytest.raises(DataSourceError, match=r"layer 'x'.*\(1, 5, 5\).*\(1, 4, 4\)"):
        t.transform(x)
    t = DataTransformer(_tp(crop_size=5), caffe_pb2.TEST, None, "t")
    with pytest.raises(DataSourceError, match="crop_size 5"):
        t.transform(x)
