"""Caffe's DataTransformer (data_transformer.cpp) over whole batches: crop -> mean -> scale, mirror.

Per item, exactly as Caffe: ``do_mirror = mirror && Rand(2)`` (in every phase: Caffe's transformer does not
look at the phase for mirroring), crop offsets random in TRAIN (``Rand(H - crop + 1)``) and centred in TEST
(``(H - crop) / 2``), then ``out = (x[src] - mean[src]) * scale`` where ``src`` is the cropped position in the
source image (so a mean image is cropped at the same offset) and the output column is reversed when
mirrored. ``mean_value`` gives one value for every channel or one per channel; ``mean_file`` a binaryproto
of the source image's shape. Images here are CHW (colour channels in BGR order, as OpenCV decodes them).
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import CaffeSSLError, DataSourceError, LayerConfigError
from ..proto import caffe_pb2

# deprecated fields of data_param / image_data_param that Caffe's UpgradeNetDataTransformation moves
LEGACY_FIELDS = ("scale", "mean_file", "crop_size", "mirror")

log = logging.getLogger("caffessl")


def effective_transform_param(layer_param, legacy_param=None):
    """The layer's transform_param. Caffe moves the deprecated data_param / image_data_param fields
    (scale, mean_file, crop_size, mirror) into it only for V1 ``layers {}`` entries (NetNeedsDataUpgrade
    looks at ``layers`` alone; caffessl.io.upgrade_legacy does the same); in a ``layer {}`` entry Caffe 1.0's
    data layers never read them, so they are ignored here too -- with a warning, as they change nothing."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(layer_param.transform_param)
    if legacy_param is not None:
        for f in LEGACY_FIELDS:
            if legacy_param.HasField(f):
                pname = _snake(legacy_param.DESCRIPTOR.name).replace("_parameter", "_param")
                log.warning("layer '%s': %s.%s is ignored, as Caffe ignores it in a `layer {}` entry (only V1 "
                            "`layers {}` get it moved); set transform_param.%s instead", layer_param.name,
                            pname, f, f)
    return tp


def _snake(name: str) -> str:
    """'ImageDataParameter' -> 'image_data_parameter'."""
    return "".join(("_" if i else "") + c.lower() if c.isupper() else c for i, c in enumerate(name))


class DataTransformer:
    def __init__(self, tp, phase: int, rng: np.random.RandomState, where: str):
        self.tp = tp
        self.phase = int(phase)
        self.rng = rng
        self.where = where
        if tp.HasField("mean_file") and len(tp.mean_value):
            raise LayerConfigError(f"{where}: cannot specify mean_file and mean_value at the same time")
        if tp.force_color and tp.force_gray:
            raise LayerConfigError(f"{where}: cannot specify both force_color and force_gray")
        self.mean = None
        if tp.HasField("mean_file"):
            from ..io.blobproto import read_binaryproto
            try:
                m = read_binaryproto(tp.mean_file)
            except CaffeSSLError as e:
                raise type(e)(f"{where}: transform_param.mean_file: {e}") from None
            if m.ndim == 4:
                if m.shape[0] != 1:
                    raise DataSourceError(f"{where}: mean_file '{tp.mean_file}' must hold one image, "
                                          f"has shape {m.shape}")
                m = m[0]
            if m.ndim != 3:
                raise DataSourceError(f"{where}: mean_file '{tp.mean_file}' must be (1,C,H,W), has {m.shape}")
            self.mean = m.astype(np.float32)
        self.mean_values = np.asarray(tp.mean_value, dtype=np.float32)
        self.crop = int(tp.crop_size)
        self.scale = np.float32(tp.scale)

    @property
    def needs_rand(self) -> bool:
        return self.tp.mirror or (self.phase == caffe_pb2.TRAIN and self.crop > 0)

    def infer_shape(self, chw: tuple) -> tuple:
        """DataTransformer::InferBlobShape for one item of shape (C, H, W)."""
        c, h, w = (int(v) for v in chw)
        if self.crop:
            if h < self.crop or w < self.crop:
                raise DataSourceError(f"{self.where}: crop_size {self.crop} is larger than the image {h}x{w}")
            return (c, self.crop, self.crop)
        return (c, h, w)

    def _check(self, c, h, w):
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise DataSourceError(f"{self.where}: mean_file '{self.tp.mean_file}' has shape {self.mean.shape}, "
                                  f"the data items are {(c, h, w)}")
        if self.mean_values.size not in (0, 1, c):
            raise LayerConfigError(f"{self.where}: specify either 1 mean_value or as many as channels: {c} "
                                   f"(got {self.mean_values.size})")
        if self.crop and (h < self.crop or w < self.crop):
            raise DataSourceError(f"{self.where}: crop_size {self.crop} is larger than the image {h}x{w}")

    def transform(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 or float -> (N, C, h, w) float32, Caffe's per-item transformation."""
        n, c, h, w = batch.shape
        self._check(c, h, w)
        # random draws per item, in Caffe's order: mirror coin, then crop offsets
        mirror = self.rng.randint(0, 2, size=n).astype(bool) if self.tp.mirror else np.zeros(n, bool)
        ch, cw = (self.crop, self.crop) if self.crop else (h, w)
        if self.crop and self.phase == caffe_pb2.TRAIN:
            h_off = self.rng.randint(0, h - self.crop + 1, size=n)
            w_off = self.rng.randint(0, w - self.crop + 1, size=n)
        else:
            h_off = np.full(n, (h - ch) // 2)
            w_off = np.full(n, (w - cw) // 2)
        x = batch  # uint8 stays uint8 until the first arithmetic: cast and scale in one pass (same float32 bits)
        if not mirror.any() and (h_off == h_off[0]).all() and (w_off == w_off[0]).all():
            ho, wo = int(h_off[0]) if n else 0, int(w_off[0]) if n else 0
            out = x[:, :, ho:ho + ch, wo:wo + cw]
            if self.mean is not None:
                out = out - self.mean[None, :, ho:ho + ch, wo:wo + cw]
        else:
            rows = h_off[:, None] + np.arange(ch)[None, :]                  # (N, ch)
            cols = w_off[:, None] + np.arange(cw)[None, :]                  # (N, cw)
            cols = np.where(mirror[:, None], cols[:, ::-1], cols)           # mirrored output column order
            ci = np.arange(c)[None, :, None, None]
            ri, wi = rows[:, None, :, None], cols[:, None, None, :]
            out = x[np.arange(n)[:, None, None, None], ci, ri, wi]
            if self.mean is not None:
                out = out - self.mean[ci[0], rows[:, None, :, None], cols[:, None, None, :]]
        if self.mean is None and self.mean_values.size:
            mv = np.broadcast_to(self.mean_values, (c,)) if self.mean_values.size == 1 else self.mean_values
            out = out - mv[None, :, None, None]
        if self.scale != 1:
            out = out * self.scale
        return np.ascontiguousarray(out, dtype=np.float32)
