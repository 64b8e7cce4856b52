"""random_seed in a data-parallel world: rank r draws from the stream of random_seed + r (Caffe 1.0's
worker seed), so the ranks' streams are distinct and each is reproducible; only rank 0 builds test nets."""
from __future__ import annotations

import numpy as np

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.parallel import group
from caffessl.proto import caffe_pb2

SOLVER = '''
base_lr: 0.1 lr_policy: "fixed" max_iter: 1 random_seed: %d test_iter: 1 test_interval: 1
net_param {
  layer { name: "x" type: "DummyData" top: "x" top: "y"
          dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z"
          inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
}
'''


def _solver(monkeypatch, rank, seed):
    monkeypatch.setattr(group, "rank", lambda: rank)
    return caffe.get_solver(parse_text(SOLVER % seed, caffe_pb2.SolverParameter()))


def _weights(s):
    return s.net.params["ip"][0].data.copy()


def test_rank_r_uses_random_seed_plus_r(monkeypatch):
    r1 = _weights(_solver(monkeypatch, 1, 7))
    assert np.array_equal(r1, _weights(_solver(monkeypatch, 1, 7)))     # reproducible
    assert np.array_equal(r1, _weights(_solver(monkeypatch, 0, 8)))     # the stream of seed + rank
    assert not np.array_equal(r1, _weights(_solver(monkeypatch, 0, 7)))  # distinct from rank 0's


def test_only_rank_zero_has_test_nets(monkeypatch):
    assert len(_solver(monkeypatch, 0, 7).test_nets) == 1
    s = _solver(monkeypatch, 1, 7)
    assert s.test_nets == [] and s.parallel is None    # no process group: no data-parallel hook
