"""Legacy upgrades, as Caffe's upgrade_proto.cpp does on load (UpgradeNetAsNeeded)."""
from __future__ import annotations

from ..errors import SolverConfigError
from ..proto import caffe_pb2
from .upgrade_legacy import upgrade_batchnorm, upgrade_v1_net


def net_needs_input_upgrade(net) -> bool:
    return len(net.input) > 0


def upgrade_net_input(net) -> None:
    """Turn the deprecated ``input`` / ``input_shape`` / ``input_dim`` fields into a leading Input layer."""
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    if not (has_shape or has_dim):
        # inputs without shapes: Caffe keeps them as net inputs to be reshaped by the user
        shapes = [caffe_pb2.BlobShape() for _ in net.input]
    elif has_shape:
        shapes = list(net.input_shape)
    else:
        dims = list(net.input_dim)
        shapes = []
        for i in range(len(net.input)):
            s = caffe_pb2.BlobShape()
            s.dim.extend(dims[4 * i:4 * i + 4])
            shapes.append(s)
    layer = caffe_pb2.LayerParameter(name="input", type="Input")
    for name, shape in zip(net.input, shapes):
        layer.top.append(name)
        layer.input_param.shape.add().CopyFrom(shape)
    old = list(net.layer)
    del net.layer[:]
    net.layer.add().CopyFrom(layer)
    for lp in old:
        net.layer.add().CopyFrom(lp)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def upgrade_net_as_needed(net, source: str = "<net>"):
    if len(net.layers):
        upgrade_v1_net(net, source)           # V0 and V1 layers
    if net_needs_input_upgrade(net):
        upgrade_net_input(net)
    upgrade_batchnorm(net)
    return net


def upgrade_solver_as_needed(sp, source: str = "<solver>"):
    """The deprecated ``solver_type`` enum becomes the ``type`` string (UpgradeSolverType)."""
    if sp.HasField("solver_type"):
        names = {v.number: v.name for v in caffe_pb2.SolverParameter.SolverType.DESCRIPTOR.values}
        mapped = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                  "ADADELTA": "AdaDelta", "ADAM": "Adam"}[names[sp.solver_type]]
        if sp.HasField("type") and sp.type != mapped:
            raise SolverConfigError(f"{source}: both solver_type ({names[sp.solver_type]}) and type "
                                    f"({sp.type}) are set and disagree")
        sp.type = mapped
        sp.ClearField("solver_type")
    # nets written inside the solver are upgraded here, once, like the net files the solver names
    for f in ("train_net_param", "net_param"):
        if sp.HasField(f):
            upgrade_net_as_needed(getattr(sp, f), f"{source}: {f}")
    for p in sp.test_net_param:
        upgrade_net_as_needed(p, f"{source}: test_net_param")
    return sp
