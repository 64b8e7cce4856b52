"""Data-producing layers. Input: tops whose content the user (or a feeder) writes into the blobs; HDF5Data,
Data (LMDB), ImageData, MemoryData, DummyData: tops read from a source (caffessl/data/) each forward."""
from __future__ import annotations

import numpy as np
import torch

from .base import Layer, register


@register("Input")
class Input(Layer):
    num_bottoms = 0
    num_tops = (1, None)
    feeds_from_blobs = True  # the Net reads these tops from the blobs' storage
    has_backward = False

    def reshape(self, bottom_shapes):
        shapes = self.param.input_param.shape
        n = len(self.param.top)
        if len(shapes) not in (0, 1, n):
            self.fail(f"input_param must give 0, 1 or {n} shapes, got {len(shapes)}")
        if not shapes:
            return [()] * n
        if len(shapes) == 1:
            return [tuple(shapes[0].dim)] * n
        return [tuple(s.dim) for s in shapes]

    def forward(self, bottoms):
        return []


# -- layers that produce their tops from a source ------------------------------------------------------

class DataLayerBase(Layer):
    """A layer with no bottoms whose tops come from a source: ``reshape`` returns the batch shapes fixed at
    set-up, ``forward([])`` returns the next batch as tensors on the layer's device."""
    num_bottoms = 0
    is_data = True
    has_backward = False
    _top_shapes: list = []

    def reshape(self, bottom_shapes):
        return [tuple(s) for s in self._top_shapes]

    def _tensors(self, arrays):
        return [torch.from_numpy(np.ascontiguousarray(a)).to(device=self.device, dtype=self.dtype)
                for a in arrays]

    def _where(self):
        return f"layer '{self.name}' ({self.type})"


@register("HDF5Data")
class HDF5Data(DataLayerBase):
    """Caffe's HDF5DataLayer: tops are the datasets of the same name, read consecutively across the files
    listed in ``hdf5_data_param.source`` (paths relative to the CWD), wrapping around."""
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        from ..data.hdf5_source import HDF5Source
        from ..data.rng import layer_rng
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            self.fail("HDF5Data does not transform data (remove transform_param)")
        if p.batch_size < 1:
            self.fail(f"hdf5_data_param.batch_size must be positive, got {p.batch_size}")
        self.batch_size = int(p.batch_size)
        self.source = HDF5Source(p.source, list(self.param.top), p.shuffle, layer_rng(), self._where())
        self._top_shapes = [(self.batch_size,) + s for s in self.source.row_shapes]

    def forward(self, bottoms):
        return self._tensors(self.source.next_batch(self.batch_size))
