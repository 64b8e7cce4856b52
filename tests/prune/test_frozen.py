"""What pruning removed stays exactly zero while fine-tuning with the generated _ft net, for every solver type,
and the solver history of removed values is zeroed."""
import numpy as np
import pytest

import caffessl as caffe
from caffessl.io.prototxt import parse_text
from caffessl.proto import caffe_pb2
from caffessl.prune import prune, save, zero_history
from caffessl.io.solverstate import SolverStateData
from tests.prune.helpers import BN_NET, make_net

SOLVERS = {
    "SGD": "momentum: 0.9",
    "Nesterov": "momentum: 0.9",
    "AdaGrad": "delta: 1e-8",
    "RMSProp": "rms_decay: 0.98 delta: 1e-8",
    "AdaDelta": "momentum: 0.95 delta: 1e-6",
    "Adam": "momentum: 0.9 momentum2: 0.999 delta: 1e-8",
}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """BN net, conv1 and conv2 pruned to half their filters; ip's columns of conv2's removed channels too."""
    d = tmp_path_factory.mktemp("frozen")
    net = make_net(BN_NET)
    res = prune(net, "reduction-rate", 0.5)
    save(res, net, str(d / "p.caffemodel"), str(d / "p_ft.prototxt"))
    return d, res, net


def _removed(net):
    """(conv1 rows, conv2 rows) removed, from the pruned weights."""
    r1 = ~net.params["conv1"][0].data.reshape(4, -1).any(axis=1)
    r2 = ~net.params["conv2"][0].data.reshape(4, -1).any(axis=1)
    return r1, r2


@pytest.mark.parametrize("solver_type", list(SOLVERS))
def test_removed_structures_stay_zero_for_100_iterations(pruned, solver_type):
    d, res, pnet = pruned
    r1, r2 = _removed(pnet)
    assert r1.sum() == 2 and r2.sum() == 2
    sp = parse_text(f'type: "{solver_type}" base_lr: 0.05 lr_policy: "fixed" max_iter: 100 weight_decay: 0.01 '
                    f'{SOLVERS[solver_type]} snapshot_after_train: false', caffe_pb2.SolverParameter())
    sp.net_param.CopyFrom(res.ft_param)
    caffe.set_random_seed(3)
    solver = caffe.get_solver(sp)
    solver.net.copy_from(str(d / "p.caffemodel"))
    before = solver.net.params["conv1"][0].data.copy()
    solver.step(100)
    p = solver.net.params
    w1 = p["conv1"][0].data.reshape(4, -1)
    w2 = p["conv2"][0].data.reshape(4, 4, -1)
    ip = p["ip"][0].data.reshape(3, 4, -1)
    assert np.all(w1[r1] == 0) and np.all(p["conv1"][1].data[r1] == 0)
    assert np.all(w2[:, r1] == 0) and np.all(w2[r2] == 0) and np.all(p["conv2"][1].data[r2] == 0)
    assert np.all(ip[:, r2] == 0)
    assert np.all(p["scale1"][0].data[r1] == 0) and np.all(p["scale1"][1].data[r1] == 0)
    assert np.all(p["scale2"][0].data[r2] == 0) and np.all(p["scale2"][1].data[r2] == 0)
    assert np.abs(w1[~r1] - before.reshape(4, -1)[~r1]).max() > 1e-3      # the kept filters did train


def test_magnitude_pruned_weights_stay_zero_adam(tmp_path):
    net = make_net(BN_NET)
    res = prune(net, "magnitude", 0.8)
    save(res, net, str(tmp_path / "m.caffemodel"))
    zero = {n: net.params[n][0].data == 0 for n in ("conv1", "conv2", "ip")}
    sp = parse_text('type: "Adam" base_lr: 0.01 lr_policy: "fixed" weight_decay: 0.01 momentum: 0.9 '
                    'momentum2: 0.999 snapshot_after_train: false', caffe_pb2.SolverParameter())
    sp.net_param.CopyFrom(res.ft_param)
    solver = caffe.get_solver(sp)
    solver.net.copy_from(str(tmp_path / "m.caffemodel"))
    solver.step(100)
    for n, z in zero.items():
        assert z.sum() > 0 and np.all(solver.net.params[n][0].data[z] == 0)


def test_history_of_removed_values_is_zeroed(pruned):
    d, res, pnet = pruned
    train = caffe.Net(res.ft_param, caffe.TRAIN)
    params = list(train.learnable_params)
    n = len(params)
    hist = [np.ones(tuple(p.tensor.shape), np.float32) for _ in range(2) for p in params]   # two history sets
    st = SolverStateData(10, "x.caffemodel", 0, hist)
    count = zero_history(st, params, res.zeroed)
    r1, r2 = _removed(pnet)
    expected = 0
    for k, h in enumerate(st.history):
        info = params[k % n]
        z = res.zeroed.get(info.layer_name)
        want = np.ones(h.size, bool) if z is None else ~z[info.index].reshape(-1)
        assert np.array_equal(np.asarray(h).reshape(-1) != 0, want), (info.layer_name, info.index)
        expected += int((~want).sum())
    assert count == expected
    # by hand, per history set (values that were non-zero and are now 0): conv1 2 filters x 18 weights (its
    # biases and the Scales' shifts start at 0); scale1 2 gammas; conv2 2 filters x 16 + its columns of conv1's
    # removed channels on the 2 kept filters 2 x 2 x 4 + 2 biases; scale2 2 gammas; ip 3 outputs x 2 removed
    # channels x 9 positions (10 -> conv 8 -> pool 4 -> conv 3)
    per_set = 2 * 18 + 2 + (2 * 16 + 2 * 2 * 4 + 2) + 2 + 3 * 2 * 9
    assert count == 2 * per_set and r1.sum() == 2 and r2.sum() == 2
