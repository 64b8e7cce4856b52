"""pycaffe's ``caffe.io`` image helpers: ``Transformer``, ``load_image``, ``resize_image``, ``oversample``.

Same semantics as python/caffe/io.py: images are float32 HxWxC in [0, 1] (RGB) as ``load_image`` returns them;
``Transformer.preprocess`` resizes to the input blob's HxW, transposes (usually to CxHxW), swaps channels
(usually RGB -> BGR), multiplies by raw_scale, subtracts the mean, multiplies by input_scale; ``deprocess``
undoes it. Errors are caffessl's typed errors instead of ValueError/Exception.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import CaffeSSLError, FileMissingError, NetGraphError, ShapeMismatchError, UnsupportedError

# skimage.color.rgb2gray's weights (pycaffe's load_image(color=False) reads through skimage's as_grey)
_GRAY = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def load_image(filename, color: bool = True) -> np.ndarray:
    """An image file as float32 in [0, 1]: HxWx3 RGB, or HxWx1 grey with ``color=False``.

    Grey images are tiled to 3 channels when ``color`` is true; an alpha channel is dropped.
    """
    from PIL import Image, UnidentifiedImageError
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileMissingError(f"{filename}: no such file")
    try:
        with Image.open(filename) as im:
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                img = np.asarray(im, dtype=np.float32) / 65535.0
            elif mode in ("L", "1"):
                img = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
            elif mode == "F":
                img = np.asarray(im, dtype=np.float32)
            else:
                img = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as e:
        raise CaffeSSLError(f"{filename}: not a readable image ({e})") from None
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
    if color:
        if img.shape[2] == 1:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 3:
        img = (img @ _GRAY)[:, :, np.newaxis]
    return np.ascontiguousarray(img, dtype=np.float32)


def resize_image(im, new_dims, interp_order: int = 1) -> np.ndarray:
    """Resize an HxWxK image to ``new_dims`` (H, W): bilinear (order 1) or nearest (order 0).

    pycaffe uses skimage/scipy; this uses torch's interpolation with half-pixel centres (the same sampling
    grid as skimage's ``resize``), with edges replicated. A constant image stays exactly constant.
    """
    import torch
    im = np.asarray(im, dtype=np.float32)
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[:2] == (h, w):
        return im.astype(np.float32, copy=True)
    if interp_order not in (0, 1):
        raise UnsupportedError(f"resize_image: interp_order {interp_order} (only 0 = nearest and 1 = bilinear)")
    lo, hi = float(im.min()), float(im.max())
    if hi <= lo:
        return np.full((h, w, im.shape[-1]), lo, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))[None]
    if interp_order == 1:
        r = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    else:
        r = torch.nn.functional.interpolate(t, size=(h, w), mode="nearest")
    return np.ascontiguousarray(r[0].numpy().transpose(1, 2, 0), dtype=np.float32)


def oversample(images, crop_dims) -> np.ndarray:
    """The 10 crops of pycaffe: 4 corners + centre, then their mirrors, for each HxWxK image (N*10 crops)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[None]
    n, ih, iw, k = images.shape
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    if ch > ih or cw > iw:
        raise ShapeMismatchError(f"oversample: crop {ch}x{cw} is larger than the images {ih}x{iw}")
    # pycaffe: corners (h, w) in (0, H-ch) x (0, W-cw), centre = image centre -/+ crop/2 (truncated to int)
    center = (np.tile(np.array([ih, iw]) / 2.0, 2) + np.concatenate([-np.array([ch, cw]) / 2.0,
                                                                      np.array([ch, cw]) / 2.0])).astype(int)
    starts = [(0, 0), (0, iw - cw), (ih - ch, 0), (ih - ch, iw - cw), (center[0], center[1])]
    crops = np.stack([images[:, i:i + ch, j:j + cw, :] for i, j in starts], axis=1)   # N x 5 x ch x cw x K
    crops = np.concatenate([crops, crops[:, :, :, ::-1, :]], axis=1)                  # mirrors
    return np.ascontiguousarray(crops.reshape(n * 10, ch, cw, k))


class Transformer:
    """pycaffe's ``caffe.io.Transformer(inputs)``, ``inputs = {name: blob shape (N, C, H, W)}``."""

    def __init__(self, inputs):
        self.inputs = {k: tuple(int(d) for d in v) for k, v in inputs.items()}
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise NetGraphError(f"Transformer: '{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_, data) -> np.ndarray:
        """Format one HxWxK image for the net: resize, transpose, channel swap, raw_scale, -mean, input_scale."""
        self._check_input(in_)
        x = np.asarray(data).astype(np.float32, copy=True)
        in_dims = self.inputs[in_][2:]
        if x.shape[:2] != tuple(in_dims):
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            x = x * np.float32(self.raw_scale[in_])
        if in_ in self.mean:
            x = x - self.mean[in_]
        if in_ in self.input_scale:
            x = x * np.float32(self.input_scale[in_])
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, in_, data) -> np.ndarray:
        """Invert preprocess (except the resize): back to an HxWxK image."""
        self._check_input(in_)
        x = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            x /= np.float32(self.input_scale[in_])
        if in_ in self.mean:
            x += self.mean[in_]
        if in_ in self.raw_scale:
            x /= np.float32(self.raw_scale[in_])
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_, order):
        """Order of the input dimensions after transposing, e.g. (2, 0, 1) for HxWxK -> KxHxW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ShapeMismatchError(f"Transformer.set_transpose('{in_}'): order {tuple(order)} needs "
                                     f"{len(self.inputs[in_]) - 1} axes, as the input {self.inputs[in_]}")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        """Channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ShapeMismatchError(f"Transformer.set_channel_swap('{in_}'): order {tuple(order)} needs "
                                     f"{self.inputs[in_][1]} channels, as the input {self.inputs[in_]}")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_, scale):
        """Scale applied before the mean, e.g. 255 for [0, 1] images and a 0-255 mean."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """A per-channel (C,) or elementwise (C, H, W) / (H, W) mean, subtracted after raw_scale."""
        self._check_input(in_)
        mean = np.asarray(mean, dtype=np.float32)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if mean.shape[0] != shape[1]:
                raise ShapeMismatchError(f"Transformer.set_mean('{in_}'): mean has {mean.shape[0]} channels, "
                                         f"the input {shape} has {shape[1]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ShapeMismatchError(f"Transformer.set_mean('{in_}'): mean of shape {mean.shape} is "
                                         f"neither (C,) nor (C, H, W)")
            if ms != shape[1:]:
                raise ShapeMismatchError(f"Transformer.set_mean('{in_}'): mean of shape {mean.shape} does "
                                         f"not match the input's (C, H, W) = {shape[1:]}")
            mean = mean.reshape(ms)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Scale applied after the mean (e.g. 0.017 for some nets)."""
        self._check_input(in_)
        self.input_scale[in_] = scale


def load_mean(path) -> np.ndarray:
    """A mean image from a .binaryproto (Caffe's compute_image_mean) or a .npy (no pickles), squeezed of a
    leading batch axis: (C, H, W) or (C,)."""
    from .blobproto import read_binaryproto
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileMissingError(f"{path}: no such file")
    if path.endswith(".npy"):
        from .limits import load_npy
        try:
            m = load_npy(path, "mean .npy")
        except ValueError as e:
            raise CaffeSSLError(f"{path}: not a plain .npy array ({e})") from None
    else:
        m = read_binaryproto(path)
    m = np.asarray(m, dtype=np.float32)
    if m.ndim == 4:
        if m.shape[0] != 1:
            raise ShapeMismatchError(f"{path}: a mean must hold one image, it holds {m.shape[0]} of shape {m.shape[1:]}")
        m = m[0]
    return m
