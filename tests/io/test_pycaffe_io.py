"""pycaffe's python/caffe/io.py protobuf helpers as caffe.io exposes them: BlobProto, BlobProtoVector and
Datum <-> numpy, with pycaffe's dtypes (float64 from the float fields, uint8 from Datum bytes)."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import CaffeSSLError, ShapeMismatchError
from caffessl.io.blobproto import blobproto_to_array as internal_blobproto_to_array


def test_caffe_pb2_is_exposed_like_pycaffe():
    assert isinstance(caffe.io.caffe_pb2.BlobProto(), caffe.io.caffe_pb2.BlobProto)
    assert hasattr(caffe.io.caffe_pb2, "BlobProtoVector") and hasattr(caffe.io.caffe_pb2, "Datum")


def test_array_to_blobproto_sets_shape_and_flat_data():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3) * 0.25
    bp = caffe.io.array_to_blobproto(arr)
    assert list(bp.shape.dim) == [2, 3]
    assert list(bp.data) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert len(bp.diff) == 0
    assert not bp.HasField("num")


def test_array_to_blobproto_diff_is_flattened_and_shape_checked():
    arr = np.zeros((2, 2))
    bp = caffe.io.array_to_blobproto(arr, diff=np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert list(bp.diff) == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(ShapeMismatchError):
        caffe.io.array_to_blobproto(arr, diff=np.zeros(4))


def test_blobproto_round_trip_returns_float64_of_the_blob_shape():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8
    out = caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(arr))
    assert out.dtype == np.float64 and out.shape == (2, 3, 4)
    assert np.array_equal(out, arr.astype(np.float64))


def test_blobproto_to_array_return_diff_reads_diff():
    bp = caffe.io.array_to_blobproto(np.ones((1, 3)), diff=np.array([[0.5, -1.5, 2.0]]))
    assert np.array_equal(caffe.io.blobproto_to_array(bp), [[1.0, 1.0, 1.0]])
    diff = caffe.io.blobproto_to_array(bp, return_diff=True)
    assert diff.dtype == np.float64 and diff.shape == (1, 3)
    assert np.array_equal(diff, [[0.5, -1.5, 2.0]])
    assert np.array_equal(caffe.io.blobproto_to_array(bp, True), diff)


def test_blobproto_to_array_legacy_4d_shape():
    bp = caffe.io.caffe_pb2.BlobProto()
    bp.num, bp.channels, bp.height, bp.width = 1, 2, 1, 3
    bp.data.extend([1, 2, 3, 4, 5, 6])
    out = caffe.io.blobproto_to_array(bp)
    assert out.shape == (1, 2, 1, 3) and out.dtype == np.float64
    assert np.array_equal(out.ravel(), [1, 2, 3, 4, 5, 6])
    assert out[0, 1, 0, 2] == 6.0


def test_blobproto_to_array_rejects_a_count_mismatch():
    bp = caffe.io.caffe_pb2.BlobProto()
    bp.shape.dim.extend([2, 2])
    bp.data.extend([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(bp)


def test_public_blobproto_to_array_rejects_the_internal_where_argument():
    with pytest.raises(TypeError):
        caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(np.zeros(2)), "layer 'x' blob 0")


def test_internal_blobproto_to_array_keeps_its_float32_where_signature():
    bp = caffe.io.array_to_blobproto(np.arange(4.0).reshape(2, 2))
    out = internal_blobproto_to_array(bp, "somewhere")
    assert out.dtype == np.float32 and out.shape == (2, 2)


def test_blobprotovector_round_trip_of_arrays_with_different_shapes():
    arrays = [np.arange(6).reshape(2, 3) * 0.5, np.array([7.0]), np.arange(24).reshape(1, 2, 3, 4) - 12.0]
    s = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(s, bytes)
    vec = caffe.io.caffe_pb2.BlobProtoVector()
    vec.ParseFromString(s)
    assert [list(b.shape.dim) for b in vec.blobs] == [[2, 3], [1], [1, 2, 3, 4]]
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert len(back) == 3
    for got, want in zip(back, arrays):
        assert got.dtype == np.float64 and got.shape == want.shape
        assert np.array_equal(got, want)


def test_blobprotovector_of_no_arrays_is_empty():
    assert caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str([])) == []


def test_array_to_datum_uint8_goes_into_data_bytes():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    d = caffe.io.array_to_datum(arr, label=7)
    assert (d.channels, d.height, d.width) == (3, 2, 2)
    assert d.data == bytes(range(12))
    assert len(d.float_data) == 0
    assert d.HasField("label") and d.label == 7
    back = caffe.io.datum_to_array(d)
    assert back.dtype == np.uint8 and np.array_equal(back, arr)


def test_array_to_datum_float_goes_into_float_data():
    arr = np.array([[[0.5, -1.25, 3.0]], [[4.0, 0.0, 2.5]]])  # (2, 1, 3) float64
    d = caffe.io.array_to_datum(arr)
    assert (d.channels, d.height, d.width) == (2, 1, 3)
    assert d.data == b""
    assert list(d.float_data) == [0.5, -1.25, 3.0, 4.0, 0.0, 2.5]
    assert not d.HasField("label")
    back = caffe.io.datum_to_array(d)
    assert back.shape == (2, 1, 3) and back.dtype.kind == "f"
    assert np.array_equal(back, arr)


def test_array_to_datum_other_integer_dtypes_use_float_data():
    arr = np.array([[[1, 300]]], dtype=np.int32)
    d = caffe.io.array_to_datum(arr, 0)
    assert d.data == b"" and list(d.float_data) == [1.0, 300.0]
    assert d.HasField("label") and d.label == 0


@pytest.mark.parametrize("shape", [(4,), (2, 3), (1, 1, 2, 2)])
def test_array_to_datum_needs_three_dimensions(shape):
    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.zeros(shape, np.uint8))
    with pytest.raises(CaffeSSLError):
        caffe.io.array_to_datum(np.zeros(shape))


def test_datum_to_array_reads_a_datum_built_by_hand():
    d = caffe.io.caffe_pb2.Datum()
    d.channels, d.height, d.width = 1, 2, 3
    d.data = bytes([9, 8, 7, 6, 5, 4])
    out = caffe.io.datum_to_array(d)
    assert out.dtype == np.uint8 and out.tolist() == [[[9, 8, 7], [6, 5, 4]]]
