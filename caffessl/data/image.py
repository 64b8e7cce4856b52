"""Image decoding and resizing as Caffe's OpenCV helpers do it, with Pillow and torch.

Arrays are CHW uint8 with colour channels in BGR order (OpenCV's order, which Caffe models expect).
``color``: True forces 3 channels (CV_LOAD_IMAGE_COLOR), False forces 1 (CV_LOAD_IMAGE_GRAYSCALE), None
keeps the file's own channels (Caffe's DecodeDatumToCVMatNative). Resizing is bilinear with half-pixel
centres and no antialiasing, like cv::resize's default INTER_LINEAR (OpenCV's fixed-point rounding can differ
by one grey level).
"""
from __future__ import annotations

import io

import numpy as np
import torch

from ..errors import DataSourceError


def _pil_to_chw(img, color) -> np.ndarray:
    if color is True:
        img = img.convert("RGB")
    elif color is False:
        img = img.convert("L")
    elif img.mode in ("1", "L", "I;16", "I", "F"):
        img = img.convert("L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    else:
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        return a[None].copy()
    a = a.transpose(2, 0, 1)
    bgr = a[[2, 1, 0]] if a.shape[0] == 3 else a[[2, 1, 0, 3]]
    return np.ascontiguousarray(bgr)


def decode_image(data: bytes, color=None, where: str = "image") -> np.ndarray:
    """Decode with Pillow; an image over Pillow's pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``, a
    decompression-bomb guard) is refused, not only warned about."""
    import warnings
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                return _pil_to_chw(img, color)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise DataSourceError(f"{where}: image refused: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataSourceError(f"{where}: could not decode the image ({e})") from None


def read_image(path: str, height: int = 0, width: int = 0, is_color: bool = True, where: str = "image"):
    """ReadImageToCVMat: decode in colour or grey, resize to (height, width) when both are non-zero."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataSourceError(f"{where}: could not open or find file '{path}' ({e.strerror})") from None
    img = decode_image(data, bool(is_color), f"{where}: '{path}'")
    if height > 0 and width > 0:
        img = resize(img, height, width)
    return img


def resize(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    if chw.shape[1:] == (height, width):
        return chw
    t = torch.from_numpy(chw).to(torch.float32)[None]
    out = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False,
                                          antialias=False)
    return out[0].round().clamp_(0, 255).to(torch.uint8).numpy()


def encode_image(chw: np.ndarray, fmt: str = "png") -> bytes:
    """CHW uint8 (BGR or grey) -> encoded bytes, as cv::imencode would store them."""
    from PIL import Image
    a = chw[0] if chw.shape[0] == 1 else chw[[2, 1, 0]].transpose(1, 2, 0)
    buf = io.BytesIO()
    fmt = fmt.lower().lstrip(".")
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format={"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper()))
    return buf.getvalue()
