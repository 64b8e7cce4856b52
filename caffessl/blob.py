"""pycaffe's Blob surface over torch tensors.

``blob.data`` and ``blob.diff`` are numpy arrays. On the CPU they are *views* of the tensors, so
``net.blobs['data'].data[...] = x`` writes straight into what the next forward reads. On a GPU they are
host mirrors; a mirror that was handed out is copied back to the device before the tensor is used again
(Caffe's SyncedMemory idea, reduced to "the host copy may have been written").
"""
from __future__ import annotations

import itertools

import numpy as np
import torch

_HOST_GEN = itertools.count(1)  # stamps of ParamBlob.data hand-outs (see conv_modes/engine.py)


def _host_view(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class _Mirror:
    """Holds a tensor and, when it lives off the CPU, a host copy handed out to the user."""
    __slots__ = ("t", "host")

    def __init__(self, t: torch.Tensor):
        self.t = t
        self.host = None

    def numpy(self) -> np.ndarray:
        if self.t.device.type == "cpu":
            return _host_view(self.t)
        if self.host is None:
            self.host = self.t.detach().cpu().numpy()
        return self.host

    def sync_to_device(self):
        if self.host is not None:
            with torch.no_grad():
                self.t.copy_(torch.from_numpy(self.host))
            self.host = None


class Blob:
    """A named activation blob: the current data tensor and the diff of the (first) version."""

    def __init__(self, name: str, shape=(), dtype=torch.float32, device=None):
        self.name = name
        self.dtype = dtype
        self.device = device if device is not None else torch.device("cpu")
        self._shape = tuple(int(s) for s in shape)
        self._data = None  # allocated on first use: building a big net allocates nothing per blob
        self._diff = None

    def _zeros(self):
        return _Mirror(torch.zeros(self._shape, dtype=self.dtype, device=self.device))

    # -- tensors (library side) -----------------------------------------------------------------
    @property
    def tensor(self) -> torch.Tensor:
        if self._data is None:
            self._data = self._zeros()
        self._data.sync_to_device()
        return self._data.t

    def sync_to_device(self):
        if self._data is not None:
            self._data.sync_to_device()

    def set_tensor(self, t: torch.Tensor):
        if self._data is None:
            self._data = _Mirror(t)
        else:
            self._data.t, self._data.host = t, None
        self._shape = t.shape

    @property
    def diff_tensor(self) -> torch.Tensor:
        if self._diff is None or tuple(self._diff.t.shape) != self._shape:
            self._diff = self._zeros()
        self._diff.sync_to_device()
        return self._diff.t

    def set_diff_tensor(self, t: torch.Tensor):
        self._diff = _Mirror(t)

    # -- pycaffe surface ------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        self.tensor  # noqa: B018  (allocates on first use)
        return self._data.numpy()

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        self.diff_tensor  # noqa: B018  (re-allocates a diff of the right shape if needed)
        return self._diff.numpy()

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    @property
    def shape(self) -> tuple:
        return tuple(self._shape)

    @property
    def count(self) -> int:
        return int(np.prod(self._shape)) if self._shape else 1

    def _legacy(self, i):
        return self._shape[i] if len(self._shape) > i else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if shape != self._shape:
            self._shape = shape
            self._data = None
            self._diff = None

    def __repr__(self):
        return f"<Blob '{self.name}' {self._shape}>"


class ParamBlob:
    """A learnable parameter (torch Parameter) seen as a pycaffe Blob: data is the tensor, diff its .grad."""

    def __init__(self, p: torch.nn.Parameter):
        self._p = p
        self._data = _Mirror(p)
        self._diff = None

    @property
    def tensor(self):
        self._data.sync_to_device()
        return self._p

    @property
    def data(self) -> np.ndarray:
        # numpy writes bypass torch's _version: stamp the tensor so conv_mode engines rebuild lazily
        self._p._caffessl_host_gen = next(_HOST_GEN)
        return self._data.numpy()

    @data.setter
    def data(self, value):
        self.data[...] = value

    def _grad(self):
        p = self._p if self._p.is_leaf else self._p._base   # a PERMISSIVE shared param: the owner's view
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        g = p.grad if p is self._p else p.grad.view(self._p.shape)
        if self._diff is None or self._diff.t is not p.grad and self._diff.t._base is not p.grad:
            self._diff = _Mirror(g)
        return self._diff

    @property
    def diff_tensor(self) -> torch.Tensor:
        """The param's diff as a tensor in its own shape (a PERMISSIVE share's: a view of its owner's)."""
        return self._grad().t

    @property
    def diff(self) -> np.ndarray:
        return self._grad().numpy()

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    def sync_to_device(self):
        self._data.sync_to_device()
        if self._diff is not None:
            self._diff.sync_to_device()

    @property
    def shape(self):
        return tuple(self._p.shape)

    @property
    def count(self):
        return self._p.numel()

    num = property(lambda self: Blob._legacy(self, 0))
    channels = property(lambda self: Blob._legacy(self, 1))
    height = property(lambda self: Blob._legacy(self, 2))
    width = property(lambda self: Blob._legacy(self, 3))

    @property
    def _shape(self):
        return self.shape

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if shape != self.shape:
            with torch.no_grad():
                self._p.data = torch.zeros(shape, dtype=self._p.dtype, device=self._p.device)
            self._p.grad = None
            self._data = _Mirror(self._p)

    def __repr__(self):
        return f"<ParamBlob {self.shape}>"
