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

import torch

from ..errors import LayerConfigError, ShapeMismatchError, UnknownLayerTypeError

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

    def __init__(self, param, phase: int, device=None, dtype=torch.float32):
        self.param = param          # caffe_pb2.LayerParameter (a private copy; setup may add ParamSpecs)
        self.name = param.name
        self.phase = phase
        self.device = device if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.params: list[torch.Tensor] = []   # learnable blobs (torch Parameters), Caffe order
        self._blob_views = None

    # -- the four steps -------------------------------------------------------------------------
    def setup(self, bottom_shapes: list[tuple]) -> None:
        """Check parameters and create ``self.params``. Default: nothing to set up."""

    def reshape(self, bottom_shapes: list[tuple]) -> list[tuple]:
        """Top shapes for the given bottom shapes. Default: one top shaped like bottom 0."""
        return [tuple(bottom_shapes[0])]

    def forward(self, bottoms: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError(f"layer type {self.type} has no forward")

    def on_weights_loaded(self, fmt: str) -> None:
        """Called after Net.copy_from filled this layer's blobs (fmt: 'binary' or 'hdf5')."""

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
