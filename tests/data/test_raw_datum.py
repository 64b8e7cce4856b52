"""RawDatumBatches: the batch decoder for raw Datum records equals protobuf's parse of each record, and gives
up (None: the caller parses record by record) whenever a record is laid out differently."""
from __future__ import annotations

import numpy as np
import pytest

from caffessl.data.datum import RawDatumBatches, array_to_datum, encoded_datum
from caffessl.proto import caffe_pb2

RNG = np.random.default_rng(7)


def _records(shape, labels):
    x = RNG.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    return x, [array_to_datum(x[i], lab).SerializeToString() for i, lab in enumerate(labels)]


def _parsed(values):
    out = []
    for v in values:
        d = caffe_pb2.Datum()
        d.ParseFromString(v)
        out.append(d)
    return out


@pytest.mark.parametrize("labels", [[0, 1, 2, 9], [100, 5, 127, 0], [300, 200, 129, 16383], [-1, -5, -100, -2 ** 31]])
def test_matches_protobuf(labels):
    x, values = _records((3, 4, 5), labels)
    pixels, got = RawDatumBatches().decode(values)
    np.testing.assert_array_equal(pixels, x)
    assert got.tolist() == [d.label for d in _parsed(values)] == labels


def test_no_label_field_means_label_zero():
    x = RNG.integers(0, 256, (2, 1, 3, 3), dtype=np.uint8)
    values = []
    for i in range(2):
        d = caffe_pb2.Datum(channels=1, height=3, width=3, data=x[i].tobytes())
        values.append(d.SerializeToString())
    pixels, labels = RawDatumBatches().decode(values)
    np.testing.assert_array_equal(pixels, x)
    assert labels.tolist() == [0, 0]


def test_gives_up_on_other_layouts():
    dec = RawDatumBatches()
    _, mixed_len = _records((1, 2, 2), [5, 300])                       # label varints of 1 and 2 bytes
    assert dec.decode(mixed_len) is None
    _, a = _records((1, 4, 6), [1])
    _, b = _records((1, 6, 4), [1])
    pixels, _ = dec.decode(a + b) or (None, None)                      # same size, another shape: rejected
    assert pixels is None
    enc = [encoded_datum(b"\x89PNG....", 1).SerializeToString()] * 2
    assert dec.decode(enc) is None
    fl = caffe_pb2.Datum(channels=1, height=1, width=2, label=1)
    fl.float_data.extend([1.0, 2.0])
    assert dec.decode([fl.SerializeToString()] * 2) is None
    twice = array_to_datum(np.zeros((1, 1, 2), np.uint8), 1).SerializeToString() + b"\x28\x02"  # label twice
    assert dec.decode([twice, twice]) is None
    assert dec.decode([]) is None


def test_layout_cache_follows_the_records():
    dec = RawDatumBatches()
    x1, v1 = _records((1, 4, 6), [1, 2])
    x2, v2 = _records((1, 6, 4), [3, 4])                               # same record size, other header
    np.testing.assert_array_equal(dec.decode(v1)[0], x1)
    p2, l2 = dec.decode(v2)
    assert p2.shape == (2, 1, 6, 4) and l2.tolist() == [3, 4]
    np.testing.assert_array_equal(p2, x2)
