"""Caffe's ``Python`` layer: a user class written against pycaffe's Layer API, run inside the autograd Net.

A Python layer imports a module and runs arbitrary code, so a net may only use one when its creator opts in:
``caffessl.Net(model, phase, allow_python=True)``. Otherwise set-up raises LayerConfigError saying why.

python_param: ``module`` (imported by name from ``sys.path`` with importlib, never evaluated), ``layer`` (the
class in it), ``param_str`` (given to the object as ``self.param_str`` before ``setup``) and
``share_in_parallel`` (deprecated in Caffe; it changes nothing: each rank of a data-parallel run is its own
process with its own layer objects, Caffe's ``share_in_parallel: false``).

The user class follows pycaffe (subclassing ``caffessl.Layer`` -- pycaffe's ``caffe.Layer`` -- is optional):

* ``setup(bottom, top)`` once, ``reshape(bottom, top)`` before every forward (as Caffe's Layer::Forward does),
  ``forward(bottom, top)``, and ``backward(top, propagate_down, bottom)``;
* blobs have ``.data`` / ``.diff`` (numpy arrays), ``.reshape(*shape)``, ``.shape``, ``.count``, ``.num``...;
* attributes ``self.param_str``, ``self.phase`` (caffe.TRAIN = 0 / caffe.TEST = 1), ``self.net`` (the Net),
  ``self.type`` ('Python') and ``self.blobs`` (learnable blobs; ``self.blobs.add_blob(*shape)`` adds one,
  zero-filled, which the Net then treats like any layer parameter: solver updates, caffemodel I/O).

The bridge is a ``torch.autograd.Function``: forward hands the bottoms to the user as host (numpy) blobs and
returns copies of the tops; backward fills the tops' diffs from autograd, calls the user's ``backward`` and
returns the bottom diffs it wrote (and the diffs it wrote into ``self.blobs[i].diff``, which autograd adds to
the parameters' accumulated gradients, as Caffe's param diffs accumulate).
"""
from __future__ import annotations

import importlib
import re

import torch

from ..blob import Blob, ParamBlob
from ..errors import LayerConfigError
from .base import Layer as _EngineLayer
from .base import register

_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class BlobVec(list):
    """pycaffe's ``layer.blobs``: a list of learnable blobs with ``add_blob(*shape)``."""

    def __init__(self, owner=None):
        super().__init__()
        self._owner = owner

    def add_blob(self, *shape):
        if self._owner is None:
            raise LayerConfigError("add_blob: this Python layer is not attached to a net yet (call it in setup)")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        p = self._owner.new_param(tuple(int(s) for s in shape))
        self.append(ParamBlob(p))
        return self[-1]


class Layer:
    """pycaffe's ``caffe.Layer``: the base class a Python layer may subclass (``caffessl.Layer``)."""

    type = "Python"

    def __init__(self, param=None):
        self.layer_param = param
        self.param_str = param.python_param.param_str if param is not None else ""
        self.blobs = BlobVec()

    def setup(self, bottom, top):
        """Called once with the bottom and top blobs (override as needed)."""

    def reshape(self, bottom, top):
        raise NotImplementedError(f"Python layer {type(self).__name__} must define reshape(bottom, top)")

    def forward(self, bottom, top):
        raise NotImplementedError(f"Python layer {type(self).__name__} must define forward(bottom, top)")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"Python layer {type(self).__name__} has no backward(top, propagate_down, "
                                  f"bottom), but a gradient must flow through it")


def _host_blob(name, t, dtype):
    b = Blob(name, (), dtype, torch.device("cpu"))
    b.set_tensor(t.detach().to("cpu", dtype).contiguous())
    return b


class _PythonFn(torch.autograd.Function):
    """tops = user.forward(bottoms); d(bottoms, params) = user.backward(...)."""

    @staticmethod
    def forward(ctx, layer, nb, *tensors):
        bottoms = tensors[:nb]
        tops = layer.run_forward(bottoms)
        ctx.layer, ctx.nb = layer, nb
        ctx.save_for_backward(*bottoms, *tops)
        return tuple(tops)

    @staticmethod
    def backward(ctx, *grads):
        layer, nb = ctx.layer, ctx.nb
        saved = ctx.saved_tensors
        bottoms, tops = saved[:nb], saved[nb:]
        need = ctx.needs_input_grad[2:]
        b_grads, p_grads = layer.run_backward(bottoms, tops, grads, need[:nb], need[nb:])
        return (None, None) + tuple(b_grads) + tuple(p_grads)


@register("Python")
class PythonLayer(_EngineLayer):
    """The engine side of a Python layer (see the module docstring)."""

    def setup(self, bottom_shapes):
        pp = self.param.python_param
        net = getattr(self, "net", None)
        try:
            allowed = bool(getattr(net, "allow_python", False))
        except ReferenceError:
            allowed = False
        if not allowed:
            self.fail(f"refusing to import Python module '{pp.module}' (class '{pp.layer}'): a Python layer runs "
                      f"arbitrary code from your environment, so it is only loaded when you opt in. If you "
                      f"trust this net, pass allow_python=True to caffessl.Net(...) or to the solver "
                      f"(caffessl.SGDSolver(path, allow_python=True), get_solver(...)), or --allow-python to "
                      f"the caffessl command")
        if not pp.module or not _MODULE_NAME.match(pp.module):
            self.fail(f"python_param.module must be a dotted module name importable from sys.path, "
                      f"got {pp.module!r}")
        if not pp.layer or not pp.layer.isidentifier():
            self.fail(f"python_param.layer must name a class in module '{pp.module}', got {pp.layer!r}")
        try:
            module = importlib.import_module(pp.module)
        except ImportError as e:
            self.fail(f"cannot import python_param.module '{pp.module}' from sys.path: {e}")
        cls = getattr(module, pp.layer, None)
        if not isinstance(cls, type):
            self.fail(f"module '{pp.module}' has no class '{pp.layer}'")
        obj = cls(self.param) if issubclass(cls, Layer) else cls()
        obj.param_str = pp.param_str
        obj.phase = int(self.phase)
        obj.type = "Python"
        obj.net = net
        vec = BlobVec(self)
        obj.blobs = vec
        self.obj = obj
        self.top_blobs = [Blob(t, (), self.dtype, torch.device("cpu")) for t in self.param.top]
        obj.setup(self._shape_blobs(bottom_shapes), self.top_blobs)

    def __getattr__(self, name):
        # pycaffe's net.layers[i] is the user's object: its own attributes are reached through this layer
        obj = self.__dict__.get("obj")
        if obj is None or name.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(obj, name)

    def _shape_blobs(self, shapes):
        return [Blob(n, tuple(s), self.dtype, torch.device("cpu")) for n, s in zip(self.param.bottom, shapes)]

    def reshape(self, bottom_shapes):
        self.obj.reshape(self._shape_blobs(bottom_shapes), self.top_blobs)
        return [b.shape for b in self.top_blobs]

    def forward(self, bottoms):
        tops = _PythonFn.apply(self, len(bottoms), *bottoms, *self.params)
        return list(tops)

    # -- called by _PythonFn ------------------------------------------------------------------------
    def run_forward(self, bottoms):
        bblobs = [_host_blob(n, t, self.dtype) for n, t in zip(self.param.bottom, bottoms)]
        self.obj.reshape(bblobs, self.top_blobs)
        self.obj.forward(bblobs, self.top_blobs)
        return [b.tensor.detach().clone().to(self.device) for b in self.top_blobs]

    def run_backward(self, bottoms, tops, grads, need_bottoms, need_params):
        tblobs = []
        for n, t, g in zip(self.param.top, tops, grads):
            b = _host_blob(n, t, self.dtype)
            if g is not None:
                b.set_diff_tensor(g.detach().to("cpu", self.dtype).contiguous().clone())
            tblobs.append(b)
        bblobs = [_host_blob(n, t, self.dtype) for n, t in zip(self.param.bottom, bottoms)]
        # the user writes param diffs into self.blobs[i].diff: hand it zeroed buffers, give the result to
        # autograd (which adds it to the accumulated .grad), then put the accumulated .grad back
        stash = [p.grad for p in self.params]
        for p in self.params:
            p.grad = torch.zeros_like(p)
        try:
            self.obj.backward(tblobs, list(need_bottoms), bblobs)
            p_grads = [p.grad.detach().clone() if need else None for p, need in zip(self.params, need_params)]
        finally:
            for p, g in zip(self.params, stash):
                p.grad = g
        b_grads = [b.diff_tensor.detach().to(self.device).clone() if need else None
                   for b, need in zip(bblobs, need_bottoms)]
        return b_grads, p_grads
