"""The Layer base class and the one registry that maps a Caffe type string to its implementation.

A layer follows Caffe's four steps, in Python over torch tensors:

* ``setup(bottom_shapes)``  -- once: check the parameters, create and fill the learnable blobs;
* ``reshape(bottom_shapes)`` -- return the top shapes (and raise ShapeMismatchError when they do not fit);
* ``forward(bottoms)``       -- return the top tensors; backward comes from torch autograd, so every
  differentiable layer writes its forward with differentiable torch ops (or a torch.autograd.Function).

Class attributes describe the layer to the Net: bottom/top counts, whether it is a loss layer (its first
top gets loss_weight 1 by default), whether it has a backward at all (Accuracy, ArgMax... do not: the Net
runs them under ``no_grad`` and ``force_backward`` skips them instead of aborting as Caffe does).
"""
from __future__ import annotations

import difflib
import logging

import torch

from ..errors import LayerConfigError, ShapeMismatchError, UnknownLayerTypeError

log = logging.getLogger("caffessl")

LAYERS: dict[str, type["Layer"]] = {}


def register(*type_names: str):
    """Class decorator: register a Layer implementation under one or more Caffe type strings."""

    def deco(cls):
        for name in type_names:
            if name in LAYERS:
                raise RuntimeError(f"layer type {name!r} registered twice")
            LAYERS[name] = cls
        if cls.__dict__.get("type") is None:
            cls.type = type_names[0]
        return cls

    return deco


def get_layer_class(type_name: str, layer_name: str = "?") -> type["Layer"]:
    from . import _load_all  # noqa: F401  (importing the package registers every family)

    cls = LAYERS.get(type_name)
    if cls is None:
        close = difflib.get_close_matches(type_name, LAYERS.keys(), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownLayerTypeError(
            f"layer '{layer_name}': unknown layer type '{type_name}'{hint} "
            f"(caffessl.layer_type_list() lists the {len(LAYERS)} known types)")
    return cls


def layer_type_list() -> list[str]:
    from . import _load_all  # noqa: F401
    return sorted(LAYERS)


class Layer:
    type: str | None = None
    # bottom / top counts: exact value, or (min, max) with None meaning unbounded
    num_bottoms: int | tuple | None = None
    num_tops: int | tuple | None = None
    is_loss = False          # first top gets loss_weight 1 unless the prototxt says otherwise
    has_backward = True      # False: no gradient at all (run under no_grad)
    is_data = False          # produces its tops from a source (no bottoms)
    no_grad_bottoms: tuple = ()  # bottom indices that never receive a gradient (labels, indices)
    # params[0] is an SSL weight matrix (caffessl.weights_matrix: rows = outputs, columns = lowered inputs):
    # connectivity masks, FLOP counts (Convolution, Deconvolution, InnerProduct)
    weight_matrix = False
    # runs the sparse conv_mode engines, and is what the fork analyses and slims (Convolution, InnerProduct)
    sparse_modes = False

    def __init__(self, param, phase: int, device=None, dtype=torch.float32):
        self.param = param          # caffe_pb2.LayerParameter (a private copy; setup may add ParamSpecs)
        self.name = param.name
        self.phase = phase
        self.device = device if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.params: list[torch.Tensor] = []   # learnable blobs (torch Parameters), Caffe order
        self._blob_views = None
        # the connectivity mask of params[0] (same shape and dtype, 1 trains, 0 freezes), or None: the solver
        # applies W -= mask .* update. Set when weights are loaded (connectivity_mode), or with set_mask.
        self.mask: torch.Tensor | None = None

    # -- the four steps -------------------------------------------------------------------------
    def setup(self, bottom_shapes: list[tuple]) -> None:
        """Check parameters and create ``self.params``. Default: nothing to set up."""

    def reshape(self, bottom_shapes: list[tuple]) -> list[tuple]:
        """Top shapes for the given bottom shapes. Default: one top shaped like bottom 0."""
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError(f"layer type {self.type} has no forward")

    def on_weights_loaded(self, fmt: str) -> None:
        """Called after Net.copy_from filled this layer's blobs (fmt: 'binary' or 'hdf5'): Caffe's WeightAlign.
        A weight-matrix layer applies its connectivity_mode here (subclasses extend, calling this first)."""
        if self.weight_matrix and self.params:
            self.apply_connectivity_mode()

    def apply_connectivity_mode(self) -> None:
        """Layer::WeightAlign -> Blob::Disconnect for ``connectivity_mode`` (the fork builds the mask from
        binaryproto caffemodels only; caffessl from HDF5 weights too). CONNECTED drops any mask; otherwise the
        weights are zeroed at the param's zerout_threshold (schema default 1e-4) and the mask is built from
        them: DISCONNECTED_ELTWISE freezes every zero weight, DISCONNECTED_GRPWISE the weights lying in an
        all-zero row or column of their conv group. The mask never touches the history, forward or
        backward, and is never serialized."""
        from ..proto import caffe_pb2
        from ..weights_matrix import conv_groups, eltwise_mask, groupwise_mask
        lp = self.param
        mode = lp.connectivity_mode
        if mode == caffe_pb2.LayerParameter.CONNECTED:
            self.mask = None
            return
        spec = lp.param[0] if len(lp.param) else caffe_pb2.ParamSpec()
        thr = spec.zerout_threshold if spec.HasField("zerout_threshold") else \
            caffe_pb2.SSLStabilizeParameter().zerout_threshold
        w = self.params[0]
        with torch.no_grad():
            w.masked_fill_(w.abs() < float(thr), 0)
        if mode == caffe_pb2.LayerParameter.DISCONNECTED_ELTWISE:
            self.set_mask(eltwise_mask(w))
            log.info("all zero weights of %s are frozen", self.name)
        elif mode == caffe_pb2.LayerParameter.DISCONNECTED_GRPWISE:
            groups = conv_groups(lp) if self.type != "InnerProduct" else 1
            self.set_mask(groupwise_mask(w, groups))
            log.info("weights lying in all-zero groups of %s are frozen", self.name)
        else:
            self.fail(f"unknown connectivity_mode {mode}")

    def set_mask(self, mask) -> None:
        """Freeze entries of the weights (params[0]): ``mask`` (array or tensor of the weights' shape, 1 =
        trains, 0 = frozen) multiplies every update the solver applies; None removes the mask."""
        if mask is None:
            self.mask = None
            return
        if not self.params:
            self.fail("set_mask: the layer has no weights")
        w = self.params[0]
        m = torch.as_tensor(mask)
        if tuple(m.shape) != tuple(w.shape):
            self.shape_error(f"set_mask: mask of shape {tuple(m.shape)}, the weights have shape {tuple(w.shape)}")
        self.mask = m.detach().to(device=w.device, dtype=w.dtype)

    def on_weights_shared(self, source: "Layer") -> None:
        """Called after Net.share_with made this layer use ``source``'s blobs."""

    # -- helpers for implementations ------------------------------------------------------------
    def new_param(self, shape, filler=None) -> torch.nn.Parameter:
        from ..fillers import fill
        from ..validate import check_param_shape
        shape = check_param_shape(self, shape)
        t = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if filler is not None:
            fill(t, filler, where=self.where_defined())
        p = torch.nn.Parameter(t)
        self.params.append(p)
        return p

    def reserve(self, what: str, shape) -> None:
        """Charge a working tensor the forward will allocate to the net's memory budget (set-up time)."""
        budget = getattr(self, "budget", None)
        if budget is not None:
            budget.charge(self.name, what, shape, copies=1)

    def where_defined(self) -> str:
        """'<net file>: layer 'name' (Type)' for error messages."""
        source = getattr(getattr(self, "budget", None), "source", None)
        return f"{source + ': ' if source else ''}layer '{self.name}' ({self.type})"

    def fail(self, msg: str, cls=LayerConfigError):
        raise cls(f"layer '{self.name}' ({self.type}): {msg}")

    def shape_error(self, msg: str):
        raise ShapeMismatchError(f"layer '{self.name}' ({self.type}): {msg}")

    def canonical_axis(self, axis: int, num_axes: int) -> int:
        if not -num_axes <= axis < num_axes:
            self.fail(f"axis {axis} out of range for a {num_axes}-axis blob", ShapeMismatchError)
        return axis % num_axes

    @property
    def blobs(self):
        """pycaffe surface: the learnable blobs as Blob objects (.data/.diff numpy views)."""
        from ..blob import ParamBlob
        if self._blob_views is None or len(self._blob_views) != len(self.params) or any(
                b._p is not p for b, p in zip(self._blob_views, self.params)):
            self._blob_views = [ParamBlob(p) for p in self.params]
        return self._blob_views

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}' ({self.type})>"


def count_ok(spec, n: int) -> bool:
    if spec is None:
        return True
    if isinstance(spec, int):
        return n == spec
    lo, hi = spec
    return (lo is None or n >= lo) and (hi is None or n <= hi)


class NeuronLayer(Layer):
    """One bottom, one top of the same shape (may run in place)."""
    num_bottoms = 1
    num_tops = 1
