"""HDF5Output as BVLC Caffe's HDF5OutputLayer (hdf5_output_layer.cpp/.hpp, util/hdf5.cpp): two bottoms, no tops;
the file is created (truncated) at set-up; forward writes the datasets "data" and "label" through the legacy
4-axis view (num, channels, height, width) as H5T_NATIVE_FLOAT; the batch sizes must agree; a second forward
fails because the dataset exists; no backward."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffessl as caffe
from caffessl.errors import DataSourceError, LayerConfigError, ShapeMismatchError


def _net(tmp_path, data_dims, label_dims, file_name, phase=None, extra=""):
    def shape(dims):
        return "shape { " + " ".join(f"dim: {d}" for d in dims) + " }"

    out_param = f'hdf5_output_param {{ file_name: "{file_name}" }}' if file_name is not None else ""
    text = f"""
name: "save_net"
layer {{ name: "in" type: "Input" top: "x" top: "y" input_param {{ {shape(data_dims)} {shape(label_dims)} }} }}
{extra}
layer {{ name: "save" type: "HDF5Output" bottom: "x" bottom: "y" {out_param} }}
"""
    p = tmp_path / "net.prototxt"
    p.write_text(text)
    return caffe.Net(str(p), caffe.TEST if phase is None else phase)


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: (f[k].shape, f[k].dtype, f[k][()]) for k in f}


def test_setup_creates_and_truncates_the_file(tmp_path):
    out = tmp_path / "out.h5"
    with h5py.File(out, "w") as f:                     # an earlier run's file
        f.create_dataset("old", data=np.ones(3))
    _net(tmp_path, (2, 3), (2,), out)
    assert out.is_file() and _read(out) == {}          # H5Fcreate(H5F_ACC_TRUNC): empty until forward


@pytest.mark.parametrize("data_dims,label_dims,want_data,want_label", [
    ((2, 3, 4, 5), (2,), (2, 3, 4, 5), (2, 1, 1, 1)),   # Caffe's test: 4-D data, labels (N,) -> (N, 1, 1, 1)
    ((4, 7), (4, 2), (4, 7, 1, 1), (4, 2, 1, 1)),      # (N, K) -> num, channels, height=1, width=1
    ((3, 2, 6), (3, 1), (3, 2, 6, 1), (3, 1, 1, 1)),
])
def test_forward_round_trip_through_h5py(tmp_path, data_dims, label_dims, want_data, want_label):
    out = tmp_path / "out.h5"
    net = _net(tmp_path, data_dims, label_dims, out)
    rng = np.random.RandomState(7)
    x = rng.standard_normal(data_dims).astype(np.float32)
    y = rng.randint(0, 10, size=label_dims).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.blobs["y"].data[...] = y
    assert net.forward() == {}                         # no tops, no outputs
    got = _read(out)
    assert sorted(got) == ["data", "label"]            # HDF5_DATA_DATASET_NAME / HDF5_DATA_LABEL_NAME
    assert got["data"][0] == want_data and got["label"][0] == want_label
    assert got["data"][1] == np.float32 and got["label"][1] == np.float32   # H5LTmake_dataset_float
    # the values, row-major as the blob's memory: the bottoms reshaped to Caffe's legacy 4-axis view
    np.testing.assert_array_equal(got["data"][2], x.reshape(want_data))
    np.testing.assert_array_equal(got["label"][2], y.reshape(want_label))


def test_datasets_are_named_data_and_label_whatever_the_bottoms(tmp_path):
    out = tmp_path / "o.h5"
    extra = ('layer { name: "sc" type: "Power" bottom: "x" top: "feat" power_param { scale: 2 } }\n'
             'layer { name: "lab" type: "Power" bottom: "y" top: "target" power_param { shift: 1 } }')
    p = tmp_path / "n.prototxt"
    p.write_text(f"""
layer {{ name: "in" type: "Input" top: "x" top: "y" input_param {{ shape {{ dim: 2 dim: 2 }} shape {{ dim: 2 }} }} }}
{extra}
layer {{ name: "save" type: "HDF5Output" bottom: "feat" bottom: "target" hdf5_output_param {{ file_name: "{out}" }} }}
""")
    net = caffe.Net(str(p), caffe.TEST)
    net.blobs["x"].data[...] = [[1, 2], [3, 4]]
    net.blobs["y"].data[...] = [5, 6]
    net.forward()
    got = _read(out)
    np.testing.assert_array_equal(got["data"][2].ravel(), [2, 4, 6, 8])    # 2 * x, by hand
    np.testing.assert_array_equal(got["label"][2].ravel(), [6, 7])         # y + 1


def test_v1_hdf5_output_and_no_backward(tmp_path):
    """The V1 name HDF5_OUTPUT upgrades to HDF5Output; the layer gives its bottoms no gradient."""
    out = tmp_path / "v1.h5"
    p = tmp_path / "v1.prototxt"
    p.write_text(f"""
name: "v1"
input: "x"
input_dim: 2 input_dim: 3 input_dim: 1 input_dim: 1
input: "y"
input_dim: 2 input_dim: 1 input_dim: 1 input_dim: 1
force_backward: true
layers {{ name: "ip" type: INNER_PRODUCT bottom: "x" top: "ip"
          inner_product_param {{ num_output: 2 weight_filler {{ type: "constant" value: 1 }} }} }}
layers {{ name: "save" type: HDF5_OUTPUT bottom: "ip" bottom: "y" hdf5_output_param {{ file_name: "{out}" }} }}
""")
    net = caffe.Net(str(p), caffe.TRAIN)
    assert [lay.type for lay in net.layers][-1] == "HDF5Output"
    net.blobs["x"].data[...] = np.array([1, 2, 3, 4, 5, 6], np.float32).reshape(2, 3, 1, 1)
    net.blobs["y"].data[...] = 0
    net.forward()
    # ip = x . ones(3) + bias 0 -> row sums 6 and 15, twice (num_output 2)
    np.testing.assert_array_equal(_read(out)["data"][2].reshape(2, 2), [[6, 6], [15, 15]])
    net.backward()
    assert not net.params["ip"][0].diff.any()


def test_second_forward_fails_like_caffe_and_keeps_the_first_batch(tmp_path):
    out = tmp_path / "out.h5"
    net = _net(tmp_path, (2, 3), (2,), out)
    net.blobs["x"].data[...] = 1
    net.forward()
    net.blobs["x"].data[...] = 2
    with pytest.raises(DataSourceError, match=r"layer 'save' \(HDF5Output\).*already holds dataset 'data'"):
        net.forward()
    got = _read(out)
    assert np.all(got["data"][2] == 1) and got["data"][0] == (2, 3, 1, 1)


def test_missing_file_name(tmp_path):
    with pytest.raises(LayerConfigError, match=r"layer 'save' \(HDF5Output\).*file_name is empty"):
        _net(tmp_path, (2, 3), (2,), None)


def test_unwritable_paths(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(DataSourceError, match=r"layer 'save' \(HDF5Output\).*Failed to open HDF5 file"):
        _net(tmp_path, (2, 3), (2,), blocker / "out.h5")           # the parent is a file
    with pytest.raises(DataSourceError, match=r"layer 'save'.*does not exist"):
        _net(tmp_path, (2, 3), (2,), tmp_path / "no" / "dir" / "out.h5")  # as H5Fcreate: no folder created
    (tmp_path / "adir").mkdir()
    with pytest.raises(DataSourceError, match=r"layer 'save'.*Failed to open HDF5 file"):
        _net(tmp_path, (2, 3), (2,), tmp_path / "adir")             # the path is a folder


def test_batch_size_mismatch_is_checked_at_forward(tmp_path):
    out = tmp_path / "out.h5"
    net = _net(tmp_path, (3, 4), (2,), out)     # Caffe's Reshape is empty: set-up passes, Forward CHECKs
    with pytest.raises(ShapeMismatchError, match=r"layer 'save' \(HDF5Output\).*same batch size.*'x'.*3.*'y'.*2"):
        net.forward()
    assert _read(out) == {}


def test_more_than_four_axes_is_an_error(tmp_path):
    net = _net(tmp_path, (2, 1, 1, 1, 3), (2,), tmp_path / "out.h5")
    with pytest.raises(ShapeMismatchError, match=r"layer 'save'.*legacy 4-axis"):
        net.forward()

