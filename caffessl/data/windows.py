"""R-CNN's WindowDataLayer: the window file, and batches of windows cropped with context and warped.

Window file (Caffe's format, whitespace-separated)::

    # <image index>
    <image path>            (root_folder is prepended)
    <channels> <height> <width>
    <number of windows>
    <class label> <overlap> <x1> <y1> <x2> <y2>      (one line per window; inclusive pixel corners)
    # <next image index> ...

A window with overlap >= fg_threshold is foreground (its label must be positive); one with overlap <
bg_threshold is background (label and overlap forced to 0); others are dropped. A batch holds
``batch_size - int(batch_size * fg_fraction)`` background windows then the foreground ones, each drawn at
random (with replacement), mirrored at random when ``mirror``. Each window is cut out of its image (read in
colour, BGR) and warped to crop_size x crop_size (bilinear, as cv::resize): with ``context_pad`` or the
``square`` crop mode the region is first grown about its centre (to a square for ``square``) so that after
warping ``context_pad`` pixels of context surround it; the part beyond the image is left zero (the padding is
mirrored with the window). Pixels become ``(pixel - mean) * scale`` (mean_file: the mean image's centre
crop; or mean_value per channel). Geometry follows WindowDataLayer::load_batch in float32 with C's round.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataSourceError

log = logging.getLogger("caffessl")
F = np.float32
IMAGE_INDEX, LABEL, OVERLAP, X1, Y1, X2, Y2 = range(7)


@dataclass
class WindowFile:
    images: list          # [(path, (channels, height, width))], by image index
    fg: np.ndarray        # (n, 7) float32 rows: image index, label, overlap, x1, y1, x2, y2
    bg: np.ndarray
    channels: int         # of the last image, as Caffe sizes the top with it


def read_window_file(source: str, root: str, fg_threshold: float, bg_threshold: float, where: str) -> WindowFile:
    if not source or not os.path.isfile(source):
        raise DataSourceError(f"{where}: cannot open window file '{source}' (cwd {os.getcwd()})")
    with open(source) as f:
        tokens = f.read().split()
    if len(tokens) < 2:
        raise DataSourceError(f"{where}: window file '{source}' is empty")
    images, fg, bg, pos = [], [], [], 0

    def take(n, what, idx):
        nonlocal pos
        if pos + n > len(tokens):
            raise DataSourceError(f"{where}: window file '{source}', image {idx}: ends inside its {what}")
        out = tokens[pos:pos + n]
        pos += n
        return out

    fg_t, bg_t = F(fg_threshold), F(bg_threshold)
    while pos < len(tokens):
        hashtag, index = take(2, "header", len(images))
        try:
            idx = int(index)
            if hashtag != "#":
                raise ValueError
            path = take(1, "path", idx)[0]
            c, h, w = (int(v) for v in take(3, "size", idx))
            n = int(take(1, "window count", idx)[0])
            rows = np.array([[float(v) for v in take(6, "windows", idx)] for _ in range(n)], np.float64)
        except ValueError:
            raise DataSourceError(f"{where}: window file '{source}': malformed entry for image "
                                  f"{len(images)} (expected '# index', a path, 'channels height width', a window "
                                  f"count and 'label overlap x1 y1 x2 y2' per window)") from None
        images.append((root + path, (c, h, w)))
        for label, overlap, x1, y1, x2, y2 in rows:
            label, overlap = int(label), F(overlap)
            row = [idx, label, overlap, int(x1), int(y1), int(x2), int(y2)]
            if overlap >= fg_t:
                if label <= 0:
                    raise DataSourceError(f"{where}: window file '{source}', image {idx}: a foreground window "
                                          f"(overlap {overlap}) has label {label}; foreground labels must be > 0")
                fg.append(row)
            elif overlap < bg_t:
                row[LABEL], row[OVERLAP] = 0, 0
                bg.append(row)
    wf = WindowFile(images, np.array(fg, F).reshape(-1, 7), np.array(bg, F).reshape(-1, 7), images[-1][1][0])
    log.info("Number of images: %d", len(images))
    labels, counts = np.unique(np.concatenate([wf.fg[:, LABEL], wf.bg[:, LABEL]]).astype(int), return_counts=True)
    for lab, cnt in zip(labels, counts):
        log.info("class %d has %d samples", lab, cnt)
    return wf


def _round(x) -> int:
    """C's round: half away from zero."""
    x = float(x)
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def window_geometry(box, img_w: int, img_h: int, crop_size: int, context_pad: int, square: bool, mirror: bool):
    """(x1, y1, x2, y2) of the image region to cut (inclusive, clipped), (width, height) to warp it to, and
    the (pad_w, pad_h) offset of the warped region in the crop_size x crop_size output."""
    x1, y1, x2, y2 = (int(v) for v in box)
    out_w = out_h = crop_size
    pad_w = pad_h = 0
    if not (context_pad > 0 or square):
        if not (0 <= x1 <= x2 < img_w and 0 <= y1 <= y2 < img_h):
            raise DataSourceError(f"window {(x1, y1, x2, y2)} is not inside its {img_w}x{img_h} image")
    else:
        context_scale = F(crop_size) / F(crop_size - 2 * context_pad)
        half_h = F(y2 - y1 + 1) / F(2)
        half_w = F(x2 - x1 + 1) / F(2)
        cx, cy = F(x1) + half_w, F(y1) + half_h
        if square:
            half_w = half_h = max(half_h, half_w)
        x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
        y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
        unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
        pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
        pad_x2, pad_y2 = max(0, x2 - img_w + 1), max(0, y2 - img_h + 1)
        x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
        if x1 > x2 or y1 > y2:
            raise DataSourceError(f"window {tuple(int(v) for v in box)} lies outside its {img_w}x{img_h} image")
        scale_x, scale_y = F(crop_size) / F(unclipped_w), F(crop_size) / F(unclipped_h)
        out_w, out_h = _round(F(x2 - x1 + 1) * scale_x), _round(F(y2 - y1 + 1) * scale_y)
        pad_x1, pad_x2 = _round(F(pad_x1) * scale_x), _round(F(pad_x2) * scale_x)
        pad_y1 = _round(F(pad_y1) * scale_y)
        pad_h = pad_y1
        pad_w = pad_x2 if mirror else pad_x1          # the padding is mirrored with the window
        out_h = min(out_h, crop_size - pad_h)         # rounding may overflow the output by a pixel
        out_w = min(out_w, crop_size - pad_w)
    return (x1, y1, x2, y2), (out_w, out_h), (pad_w, pad_h)


class WindowBatchLoader:
    """Builds WindowData batches (a callable for the prefetch thread): [data (B, C, S, S), labels (B,)]."""

    def __init__(self, wf: WindowFile, batch_size: int, crop_size: int, context_pad: int, square: bool,
                 mirror: bool, fg_fraction: float, scale: float, mean, mean_values, cache: bool, rng, where: str):
        self.wf, self.batch_size, self.crop_size = wf, batch_size, crop_size
        self.context_pad, self.square, self.mirror = context_pad, square, mirror
        self.num_fg = int(F(batch_size) * F(fg_fraction))
        self.scale, self.mean, self.mean_values = F(scale), mean, mean_values
        self.cache = {} if cache else None
        self.rng, self.where = rng, where

    def _rand(self) -> int:
        return int(self.rng.randint(0, 2 ** 32, dtype=np.uint64))

    def _image(self, index: int) -> np.ndarray:
        from .image import read_image
        path, (c, _, _) = self.wf.images[index]
        if self.cache is not None and path in self.cache:
            return self.cache[path]
        img = read_image(path, 0, 0, c == 3, self.where)
        if self.cache is not None:
            self.cache[path] = img
        return img

    def __call__(self):
        from .image import resize
        s, c = self.crop_size, self.wf.channels
        data = np.zeros((self.batch_size, c, s, s), F)
        labels = np.zeros(self.batch_size, F)
        item = 0
        for pool, count in ((self.wf.bg, self.batch_size - self.num_fg), (self.wf.fg, self.num_fg)):
            for _ in range(count):
                if not len(pool):
                    kind = "background" if pool is self.wf.bg else "foreground"
                    raise DataSourceError(f"{self.where}: the window file has no {kind} windows to sample")
                window = pool[self._rand() % len(pool)]
                flip = self.mirror and self._rand() % 2 == 1
                img = self._image(int(window[IMAGE_INDEX]))
                (x1, y1, x2, y2), (w, h), (pw, ph) = window_geometry(
                    window[X1:], img.shape[2], img.shape[1], s, self.context_pad, self.square, flip)
                patch = resize(np.ascontiguousarray(img[:, y1:y2 + 1, x1:x2 + 1]), h, w).astype(F)
                if flip:
                    patch = patch[:, :, ::-1]
                if self.mean is not None:
                    off = (self.mean.shape[2] - s) // 2
                    patch = patch - self.mean[:, off + ph:off + ph + h, off + pw:off + pw + w]
                elif self.mean_values is not None:
                    patch = patch - self.mean_values[:, None, None]
                data[item, :, ph:ph + h, pw:pw + w] = patch * self.scale
                labels[item] = window[LABEL]
                item += 1
        return [torch.from_numpy(data), torch.from_numpy(labels)]
