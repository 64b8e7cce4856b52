"""The GPU host-mirror protocol of caffessl.blob, exercised on the CPU by making every ``.data``/``.diff``
a host copy (as on a GPU): params written through ``net.params[...].data`` reach the next forward, and reads
after a solver update or a backward see the new values (no GPU: the CUDA device itself is not exercised)."""
import numpy as np
import pytest

import caffessl as caffe
import caffessl.blob as blob_mod

NET = """name: "t" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }
"""


@pytest.fixture
def host_copies(monkeypatch):
    def numpy_copy(self):               # _Mirror.numpy's off-CPU branch, taken for every tensor
        if self.host is None:
            self.host = self.t.detach().cpu().numpy().copy()
        return self.host
    monkeypatch.setattr(blob_mod._Mirror, "numpy", numpy_copy)


def test_param_writes_through_host_copies_reach_the_forward(tmp_path, host_copies):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    net = caffe.Net(str(p), caffe.TRAIN)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.params["ip"][0].data[...] = [[1, 0, 0], [0, 1, 1]]
    net.params["ip"][1].data[...] = [0.5, -1]
    net.forward(data=x, target=np.zeros((2, 2), np.float32))
    np.testing.assert_allclose(net.blobs["ip"].data, [[0.5, 3 - 1], [3.5, 9 - 1]])
    net.backward()
    d_ip = net.blobs["ip"].data / 2                                # EuclideanLoss: (ip - target) / N
    np.testing.assert_allclose(net.params["ip"][0].diff, d_ip.T @ x, rtol=1e-6)


def test_reads_after_a_solver_update_are_fresh(tmp_path, host_copies):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" '
                                              f'max_iter: 1 momentum: 0 display: 0 snapshot_after_train: false\n')
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    w0 = solver.net.params["ip"][0].data.copy()                  # hands out a host copy
    solver.net.blobs["data"].data[...] = 1
    solver.step(1)
    w1 = solver.net.params["ip"][0].data
    tensor = solver.net.layer_dict["ip"].params[0].detach().numpy()
    np.testing.assert_array_equal(w1, tensor)
    assert not np.array_equal(w1, w0)
