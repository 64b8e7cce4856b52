"""Data-producing layers. Input: tops whose content the user (or a feeder) writes into the blobs; HDF5Data,
Data (LMDB/LevelDB), ImageData, WindowData, MemoryData, DummyData: tops read from a source (caffessl/data/) each
forward."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import DataSourceError, ShapeMismatchError
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
        from ..parallel.shard import shard_rows
        self.source = shard_rows(HDF5Source(p.source, list(self.param.top), p.shuffle, layer_rng(), self._where()),
                                 self.phase)   # rank r of N reads rows r, r+N, ... (caffessl/parallel/shard.py)
        self._top_shapes = [(self.batch_size,) + s for s in self.source.row_shapes]

    def forward(self, bottoms):
        return self._tensors(self.source.next_batch(self.batch_size))


class PrefetchingDataLayer(DataLayerBase):
    """BasePrefetchingDataLayer: a daemon thread keeps ``data_param.prefetch`` batches ready."""
    _prefetcher = None

    def _start_prefetch(self, loader):
        from ..data.prefetch import Prefetcher
        self._prefetcher = Prefetcher(loader, self.param.data_param.prefetch, name=self.name, owner=self)

    def forward(self, bottoms):
        tops = self._tensors(self._prefetcher.get())
        self._top_shapes = [tuple(t.shape) for t in tops]
        return tops

    def _tensors(self, tensors):
        return [t.to(device=self.device, dtype=self.dtype) for t in tensors]

    def cue_prefetch(self):
        if self._prefetcher is not None:
            self._prefetcher.cue()

    def stop_prefetch(self):
        if self._prefetcher is not None:
            self._prefetcher.stop()


def _encoded_color(tp, data_param=None):
    """force_color -> decode in colour, force_gray -> in grey, else the image's own channels."""
    if tp.force_color or (data_param is not None and data_param.force_encoded_color):
        return True
    if tp.force_gray:
        return False
    return None


@register("Data")
class Data(PrefetchingDataLayer):
    """Caffe's DataLayer over an LMDB or a LevelDB (data_param.backend, LEVELDB by the schema's default) of
    Datum records (raw, float_data or encoded); top 1 is the label."""
    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        from ..data.datum import datum_to_array, parse_datum
        from ..data.db import open_reader
        from ..data.rng import layer_rng
        from ..data.transform import DataTransformer, effective_transform_param
        p = self.param.data_param
        if p.batch_size < 1:
            self.fail(f"data_param.batch_size must be positive, got {p.batch_size}")
        where = self._where()
        tp = effective_transform_param(self.param, p)
        rng = layer_rng()
        reader = open_reader(p.backend, p.source, where)     # Caffe opens the database before the mean file
        try:
            transformer = DataTransformer(tp, self.phase, rng, where)
        except BaseException:
            reader.close()
            raise
        if p.rand_skip:
            reader.skip(int(rng.randint(0, 2 ** 31 - 1)) % p.rand_skip)
        color = _encoded_color(tp, p)
        try:
            key, val = reader.current()
            at = f"{where}: record {key.decode('utf-8', 'replace')!r} of '{p.source}'"
            record_shape = datum_to_array(parse_datum(val, at), color, at).shape
            shape = transformer.infer_shape(record_shape)
        except BaseException:
            reader.close()
            raise
        bs = int(p.batch_size)
        self._top_shapes = [(bs,) + shape] + ([(bs,)] if len(self.param.top) > 1 else [])
        from ..data.loaders import DatumBatchLoader
        from ..parallel.shard import shard_reader
        reader = shard_reader(reader, self.phase)   # rank r of N reads records r, r+N, ... (Caffe's Skip())
        self._start_prefetch(DatumBatchLoader(reader, transformer, bs, color, len(self.param.top) > 1, where,
                                              record_shape))


@register("ImageData")
class ImageData(PrefetchingDataLayer):
    """Caffe's ImageDataLayer: images named by a "path label" list (root_folder prepended), optionally
    resized to new_height x new_width, in colour (3 channels, BGR) or grey."""
    num_tops = 2

    def setup(self, bottom_shapes):
        from ..data.image import read_image
        from ..data.loaders import ImageListBatchLoader, read_image_list
        from ..data.rng import layer_rng
        from ..data.transform import DataTransformer, effective_transform_param
        p = self.param.image_data_param
        where = self._where()
        if (p.new_height == 0) != (p.new_width == 0):
            self.fail("new_height and new_width must be set at the same time")
        if p.batch_size < 1:
            self.fail(f"image_data_param.batch_size must be positive, got {p.batch_size}")
        tp = effective_transform_param(self.param, p)
        rng = layer_rng()
        transformer = DataTransformer(tp, self.phase, rng, where)
        lines = read_image_list(p.source, where)
        if p.shuffle:
            rng.shuffle(lines)
        start = 0
        if p.rand_skip:
            start = int(rng.randint(0, 2 ** 31 - 1)) % p.rand_skip
            if start >= len(lines):
                self.fail(f"rand_skip drew {start}, the list has only {len(lines)} images", cls=DataSourceError)
        first = read_image(p.root_folder + lines[start][0], p.new_height, p.new_width, p.is_color, where)
        bs = int(p.batch_size)
        self._top_shapes = [(bs,) + transformer.infer_shape(first.shape), (bs,)]
        from ..parallel.shard import shard_of
        rank, n = shard_of(self.phase)   # rank r of N reads lines r, r+N, ... of the stream
        self._start_prefetch(ImageListBatchLoader(lines, p.root_folder, p.new_height, p.new_width, p.is_color,
                                                  p.shuffle, rng, transformer, bs, start, where, rank, n))


@register("MemoryData")
class MemoryData(DataLayerBase):
    """Caffe's MemoryDataLayer fed by ``set_input_arrays(data, labels)`` (pycaffe's Reset path: the arrays are
    used as they are, without transform_param, exactly as Caffe); batches cycle through the arrays."""
    num_tops = 2

    def setup(self, bottom_shapes):
        p = self.param.memory_data_param
        self.batch_size, self.channels, self.height, self.width = p.batch_size, p.channels, p.height, p.width
        if min(self.batch_size, self.channels, self.height, self.width) < 1:
            self.fail("batch_size, channels, height, and width must be specified and positive in "
                      f"memory_data_param (got {self.batch_size}, {self.channels}, {self.height}, {self.width})")
        self._top_shapes = [(self.batch_size, self.channels, self.height, self.width), (self.batch_size,)]
        self._data = self._labels = None
        self._pos = 0

    def set_input_arrays(self, data, labels):
        data = np.asarray(data)
        labels = np.asarray(labels)
        if labels.ndim == 1:  # pycaffe adds the three singleton axes
            labels = labels[:, None, None, None]
        want = (self.channels, self.height, self.width)
        if data.ndim != 4 or tuple(data.shape[1:]) != want:
            self.fail(f"set_input_arrays: data must be 4-d (N, {', '.join(map(str, want))}), got {data.shape}",
                      ShapeMismatchError)
        if labels.ndim != 4 or tuple(labels.shape[1:]) != (1, 1, 1):
            self.fail(f"set_input_arrays: labels must be (N,) or (N, 1, 1, 1), got {labels.shape}",
                      ShapeMismatchError)
        if labels.shape[0] != data.shape[0]:
            self.fail(f"set_input_arrays: data has {data.shape[0]} items, labels {labels.shape[0]}",
                      ShapeMismatchError)
        if data.shape[0] == 0 or data.shape[0] % self.batch_size:
            self.fail(f"set_input_arrays: the number of items ({data.shape[0]}) must be a positive multiple of "
                      f"batch_size {self.batch_size}", ShapeMismatchError)
        self._data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)).to(self.device, self.dtype)
        self._labels = torch.from_numpy(np.ascontiguousarray(labels.reshape(-1), dtype=np.float32)).to(
            self.device, self.dtype)
        self._pos = 0

    def forward(self, bottoms):
        if self._data is None:
            self.fail("needs to be initialized by calling set_input_arrays(data, labels) first",
                      DataSourceError)
        s = slice(self._pos, self._pos + self.batch_size)
        self._pos = (self._pos + self.batch_size) % self._data.shape[0]
        return [self._data[s].clone(), self._labels[s].clone()]


@register("DummyData")
class DummyData(DataLayerBase):
    """Caffe's DummyDataLayer: tops filled by data_filler (0: constant 0, 1: for every top, or one per top);
    constant fillers fill once, the others refill at every forward."""
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        from ..proto import caffe_pb2
        p = self.param.dummy_data_param
        nt = len(self.param.top)
        nf = len(p.data_filler)
        if nf not in (0, 1, nt):
            self.fail(f"number of data fillers must be 0, 1 or equal to the number of tops ({nt}); got {nf}")
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            if len(p.shape):
                self.fail("both shape and legacy fields (num, channels, height, width) were specified")
            dims = []
            for field in ("num", "channels", "height", "width"):
                vals = list(getattr(p, field))
                if len(vals) not in (1, nt):
                    self.fail(f"dummy_data_param.{field} must be given once or once per top ({nt}), got {len(vals)}")
                dims.append(vals)
            shapes = [tuple(d[i if len(d) > 1 else 0] for d in dims) for i in range(nt)]
        else:
            if len(p.shape) not in (1, nt):
                self.fail(f"dummy_data_param.shape must be given once or once per top ({nt}), got {len(p.shape)}")
            shapes = [tuple(p.shape[i if len(p.shape) > 1 else 0].dim) for i in range(nt)]
        if nf == 0:
            zero = caffe_pb2.FillerParameter()
            zero.type, zero.value = "constant", 0.0
            fillers = [zero] * nt
        else:
            fillers = [p.data_filler[i if nf > 1 else 0] for i in range(nt)]
        self._fillers = fillers
        self._top_shapes = [tuple(int(v) for v in s) for s in shapes]
        self._refill = [f.type != "constant" for f in fillers]
        # Caffe fills the constant tops once at set-up and draws the others at every forward; a constant fill
        # draws nothing, so filling it at the first forward is the same -- after the Net has checked the top
        # shapes (positive, within the memory budget) instead of before
        self._tops = [None] * nt

    def _fill(self, i):
        from ..fillers import fill
        t = torch.empty(self._top_shapes[i], dtype=self.dtype, device=self.device)
        return fill(t, self._fillers[i])

    def forward(self, bottoms):
        self._tops = [self._fill(i) if r or t is None else t for i, (t, r) in enumerate(zip(self._tops, self._refill))]
        return list(self._tops)


@register("WindowData")
class WindowData(PrefetchingDataLayer):
    """R-CNN's WindowDataLayer (caffessl/data/windows.py): foreground and background windows of the images of
    a window file, cropped with context, warped to transform_param.crop_size, labels as the second top. As in
    Caffe, crop_size / mirror / mean_file / mean_value come from transform_param and the pixel scale from
    window_data_param.scale."""
    num_tops = 2

    def setup(self, bottom_shapes):
        import logging

        from ..data.rng import layer_rng
        from ..data.transform import DataTransformer
        from ..data.windows import WindowBatchLoader, read_window_file
        p, tp = self.param.window_data_param, self.param.transform_param
        where = self._where()
        for f in ("crop_size", "mirror", "mean_file"):
            if p.HasField(f):   # Caffe reads these from transform_param only (its V1 upgrade moves them there)
                self.fail(f"window_data_param.{f} is ignored by Caffe's WindowData in this format: set "
                          f"transform_param.{f}")
        for f in ("scale", "force_color", "force_gray"):
            if tp.HasField(f):
                logging.getLogger("caffessl").warning(
                    "%s: transform_param.%s has no effect on WindowData (Caffe's uses window_data_param.scale)",
                    where, f)
        if tp.crop_size <= 0:
            self.fail("transform_param.crop_size must be positive for WindowData")
        if p.batch_size < 1:
            self.fail(f"window_data_param.batch_size must be positive, got {p.batch_size}")
        if p.crop_mode not in ("warp", "square"):
            self.fail(f"window_data_param.crop_mode must be 'warp' or 'square', got '{p.crop_mode}'")
        logging.getLogger("caffessl").info(
            "Window data layer: foreground (object) overlap threshold: %s, background (non-object) overlap "
            "threshold: %s, foreground sampling fraction: %s, cache_images: %d, root_folder: %s",
            p.fg_threshold, p.bg_threshold, p.fg_fraction, p.cache_images, p.root_folder)
        wf = read_window_file(p.source, p.root_folder, p.fg_threshold, p.bg_threshold, where)
        c, s = wf.channels, int(tp.crop_size)
        means = DataTransformer(tp, self.phase, None, where)   # mean_file / mean_value read and checked once
        mean, mean_values = means.mean, None
        if mean is not None and (mean.shape[0] != c or min(mean.shape[1:]) < s):
            self.fail(f"mean_file '{tp.mean_file}' has shape {mean.shape}; WindowData needs {c} channels of at "
                      f"least {s}x{s}", cls=DataSourceError)
        if means.mean_values.size:
            if means.mean_values.size not in (1, c):
                self.fail(f"specify either 1 mean_value or as many as channels: {c}")
            mean_values = np.broadcast_to(means.mean_values, (c,)).copy()
        logging.getLogger("caffessl").info("Amount of context padding: %d; crop mode: %s", p.context_pad, p.crop_mode)
        bs = int(p.batch_size)
        self._top_shapes = [(bs, c, s, s), (bs,)]
        self._start_prefetch(WindowBatchLoader(wf, bs, s, int(p.context_pad), p.crop_mode == "square",
                                               bool(tp.mirror), p.fg_fraction, p.scale, mean, mean_values,
                                               bool(p.cache_images), layer_rng(), where))


# -- layers that write their bottoms to a file ---------------------------------------------------------

@register("HDF5Output")
class HDF5Output(Layer):
    """Caffe's HDF5OutputLayer: its two bottoms are written to ``hdf5_output_param.file_name`` as the datasets
    "data" and "label" (Caffe's HDF5_DATA_DATASET_NAME / HDF5_DATA_LABEL_NAME, whatever the bottoms are called).

    As in Caffe: the file is created (truncated) at set-up; forward saves the bottoms through the legacy 4-axis
    view (num, channels, height, width: an (N, K) blob is saved as (N, K, 1, 1), at most 4 axes) in the net's
    float type, after checking that both have the same batch size; there are no tops and no gradient. The file
    holds one batch: Caffe's second forward aborts ("Failed to make float dataset data", the dataset exists),
    here a DataSourceError that leaves the first batch in the file. Each write replaces the file whole."""
    num_bottoms = 2
    num_tops = 0
    has_backward = False
    no_grad_bottoms = (0, 1)
    DATASETS = ("data", "label")

    def setup(self, bottom_shapes):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is empty (Caffe: Failed to open HDF5 file)")
        self._saved_rows = None
        self._write({})   # Caffe's H5Fcreate(H5F_ACC_TRUNC): an HDF5 file without datasets

    def reshape(self, bottom_shapes):
        return []

    def forward(self, bottoms):
        from ..log import get_logger
        data, label = (self._legacy_4d(i, b) for i, b in enumerate(bottoms))
        if data.shape[0] != label.shape[0]:
            self.shape_error(f"data blob and label blob must have the same batch size: '{self.param.bottom[0]}' "
                             f"{tuple(bottoms[0].shape)} has {data.shape[0]}, '{self.param.bottom[1]}' "
                             f"{tuple(bottoms[1].shape)} has {label.shape[0]}")
        if self._saved_rows is not None:
            self.fail(f"HDF5 file '{self.file_name}' already holds dataset 'data' ({self._saved_rows} rows from an "
                      f"earlier forward): HDF5Output writes one batch per file, and Caffe aborts on a second "
                      f"forward (\"Failed to make float dataset data\")", DataSourceError)
        log = get_logger()
        log.info("Saving HDF5 file %s", self.file_name)
        self._write(dict(zip(self.DATASETS, (data, label))))
        self._saved_rows = int(data.shape[0])
        log.info("Successfully saved %d rows", self._saved_rows)
        return []

    def _legacy_4d(self, i, t):
        """Blob::num()/channels()/height()/width(): missing axes are 1, more than 4 axes is an error."""
        shape = tuple(t.shape)
        if len(shape) > 4:
            self.shape_error(f"bottom {i} ('{self.param.bottom[i]}') has shape {shape}: Caffe's HDF5Output saves "
                             f"blobs through the legacy 4-axis accessors and cannot use more than 4 axes")
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        return t.detach().to("cpu").numpy().astype(np_dtype, copy=False).reshape(shape + (1,) * (4 - len(shape)))

    def _write(self, datasets):
        import os

        import h5py

        from ..io.atomic import atomic_path
        folder = os.path.dirname(os.path.abspath(self.file_name))
        if not os.path.isdir(folder):
            self.fail(f"Failed to open HDF5 file '{self.file_name}': folder '{folder}' does not exist",
                      DataSourceError)
        try:
            with atomic_path(self.file_name) as tmp, h5py.File(tmp, "w") as f:
                for name, arr in datasets.items():
                    f.create_dataset(name, data=arr)
        except OSError as e:
            self.fail(f"Failed to open HDF5 file '{self.file_name}' for writing: {e}", DataSourceError)
