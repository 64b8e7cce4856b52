"""snapshot_diff: true -- Net::ToProto(write_diff) / ToHDF5(write_diff): each param blob carries its diff, which
after a step holds the update value Caffe's ApplyUpdate left there (W_before - W_after); the weights read back
as usual."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

import caffessl
from caffessl.proto import caffe_pb2

NET = '''
layer { name: "x" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 5
  weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "z" param { lr_mult: 1 } param { lr_mult: 0 }
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
'''


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("write_diff", [True, False])
def test_snapshot_diff_holds_the_last_update(fmt, write_diff, tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nweight_decay: 0.01\nlr_policy: "fixed"\n'
        f'max_iter: 3\ndisplay: 0\nsnapshot: 3\nsnapshot_prefix: "{tmp_path}/s"\nsnapshot_format: {fmt}\n'
        f'snapshot_diff: {str(write_diff).lower()}\n')
    s = caffessl.SGDSolver(str(tmp_path / "solver.prototxt"))
    s.step(2)
    before = {k: [b.data.copy() for b in v] for k, v in s.net.params.items()}
    s.step(1)                                                   # iteration 3: the snapshot
    after = {k: [b.data.copy() for b in v] for k, v in s.net.params.items()}
    if fmt == "HDF5":
        with h5py.File(tmp_path / "s_iter_3.caffemodel.h5", "r") as f:
            assert ("diff" in f) == write_diff
            for k in after:
                for i, w in enumerate(after[k]):
                    np.testing.assert_array_equal(f["data"][k][str(i)][()], w)
                    if write_diff:
                        np.testing.assert_allclose(f["diff"][k][str(i)][()], before[k][i] - w, rtol=1e-5, atol=1e-7)
    else:
        net = caffe_pb2.NetParameter.FromString((tmp_path / "s_iter_3.caffemodel").read_bytes())
        for lp in net.layer:
            for i, bp in enumerate(lp.blobs):
                w = after[lp.name][i]
                np.testing.assert_array_equal(np.array(bp.data, np.float32).reshape(w.shape), w)
                if not write_diff:
                    assert len(bp.diff) == 0
                    continue
                np.testing.assert_allclose(np.array(bp.diff, np.float32).reshape(w.shape), before[lp.name][i] - w,
                                           rtol=1e-5, atol=1e-7)
        assert any(len(bp.diff) for lp in net.layer for bp in lp.blobs) == write_diff
    # ip2's bias has lr_mult 0: no update, a zero diff
    assert np.array_equal(after["ip2"][1], before["ip2"][1])
    fresh = caffessl.Net(str(tmp_path / "net.prototxt"), caffessl.TEST)
    ext = ".caffemodel.h5" if fmt == "HDF5" else ".caffemodel"
    fresh.copy_from(str(tmp_path / f"s_iter_3{ext}"))
    for k in after:
        for i, w in enumerate(after[k]):
            np.testing.assert_array_equal(fresh.params[k][i].data, w)
