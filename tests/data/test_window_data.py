"""WindowData (R-CNN's WindowDataLayer): window-file parsing, fg/bg sampling, labels, the context-padded /
square crop geometry (worked by hand from WindowDataLayer::load_batch below), mirroring, mean and scale."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import caffessl as caffe
from caffessl.data.windows import window_geometry
from caffessl.errors import DataSourceError, LayerConfigError

from .helpers import net_param, png_bytes, write_mean

H, W = 16, 20


@pytest.fixture
def images(tmp_path):
    rs = np.random.RandomState(4)
    rgb = rs.randint(0, 256, size=(2, H, W, 3)).astype(np.uint8)
    for i in range(2):
        (tmp_path / f"im{i}.png").write_bytes(png_bytes(rgb[i]))
    return [im[..., ::-1].transpose(2, 0, 1).astype(np.float32) for im in rgb]     # CHW, BGR


def _window_file(tmp_path, fg, bg, image=0):
    """One image entry holding the foreground window ``fg`` (label 3, overlap 0.8) and the background
    window ``bg`` (label 5, overlap 0.1: forced to label 0); a second image with one window between the
    thresholds (overlap 0.3; the nets use bg_threshold 0.2), which is dropped."""
    text = (f"# 0\nim{image}.png\n3 {H} {W}\n2\n3 0.8 {' '.join(map(str, fg))}\n5 0.1 {' '.join(map(str, bg))}\n"
            f"# 1\nim1.png\n3 {H} {W}\n1\n2 0.3 0 0 3 3\n")
    (tmp_path / "windows.txt").write_text(text)
    return str(tmp_path / "windows.txt")


def _net(tmp_path, src, crop=12, wd="", tp="", batch=4):
    return caffe.Net(net_param(
        f'layer {{ name: "w" type: "WindowData" top: "data" top: "label" window_data_param {{ source: "{src}" '
        f'batch_size: {batch} root_folder: "{tmp_path}/" bg_threshold: 0.2 {wd} }} transform_param {{ crop_size: {crop} {tp} }} }}'),
        caffe.TRAIN)


def _warp(img, x1, y1, x2, y2, h, w):
    t = torch.from_numpy(np.ascontiguousarray(img[:, y1:y2 + 1, x1:x2 + 1]))[None]
    out = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).numpy()


def test_warp_mode_batches_background_then_foreground(tmp_path, images):
    src = _window_file(tmp_path, fg=(4, 2, 11, 9), bg=(0, 0, 19, 15))
    net = _net(tmp_path, src, wd="fg_fraction: 0.5 scale: 0.5", tp="mean_value: 10 mean_value: 20 mean_value: 30")
    net.forward()
    d, lab = net.blobs["data"].data, net.blobs["label"].data
    assert d.shape == (4, 3, 12, 12)
    np.testing.assert_array_equal(lab, [0, 0, 3, 3])            # int(4 * 0.5) = 2 background windows first
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    bg = (_warp(images[0], 0, 0, 19, 15, 12, 12) - mean) * np.float32(0.5)
    fg = (_warp(images[0], 4, 2, 11, 9, 12, 12) - mean) * np.float32(0.5)
    for i, want in enumerate((bg, bg, fg, fg)):
        np.testing.assert_allclose(d[i], want, atol=1e-5)


def test_context_pad_geometry_by_hand():
    # box 8x8 at (4, 2), crop 12, context_pad 2: scale 12/8 = 1.5 about the centre (8, 6) -> x 2..14, y 0..12
    # (13 x 13, inside a 20 x 16 image), warped back to round(13 * 12/13) = 12
    assert window_geometry((4, 2, 11, 9), W, H, 12, 2, False, False) == ((2, 0, 14, 12), (12, 12), (0, 0))
    # box (0,0)-(7,7): grown to -2..10 each way; 2 pixels off the image on the left/top are dropped: the clipped
    # 11 x 11 region warps to round(11 * 12/13) = 10, placed after round(2 * 12/13) = 2 zero pixels
    assert window_geometry((0, 0, 7, 7), W, H, 12, 2, False, False) == ((0, 0, 10, 10), (10, 10), (2, 2))
    # mirrored: the horizontal padding is the right-hand one (none here)
    assert window_geometry((0, 0, 7, 7), W, H, 12, 2, False, True) == ((0, 0, 10, 10), (10, 10), (0, 2))
    # square: the 8 x 4 box (4, 2)-(11, 5), centre (8, 4), half size 4 -> x 4..12, y 0..8 (9 x 9) -> 12 x 12
    assert window_geometry((4, 2, 11, 5), W, H, 12, 0, True, False) == ((4, 0, 12, 8), (12, 12), (0, 0))
    with pytest.raises(DataSourceError, match="not inside"):
        window_geometry((4, 2, 25, 5), W, H, 12, 0, False, False)


def test_context_padding_is_zero_and_mirrors(tmp_path, images):
    src = _window_file(tmp_path, fg=(0, 0, 7, 7), bg=(4, 2, 11, 5))
    net = _net(tmp_path, src, wd="context_pad: 2 fg_fraction: 0.5 crop_mode: \"square\"", tp="mirror: true",
               batch=8)
    seen = set()
    for _ in range(4):
        net.forward()
        d = net.blobs["data"].data
        fg_plain = np.zeros((3, 12, 12), np.float32)
        fg_plain[:, 2:12, 2:12] = _warp(images[0], 0, 0, 10, 10, 10, 10)
        fg_flip = np.zeros((3, 12, 12), np.float32)
        fg_flip[:, 2:12, 0:10] = _warp(images[0], 0, 0, 10, 10, 10, 10)[:, :, ::-1]
        bgs = []
        for mirror in (False, True):     # the background window, square with context (geometry checked above)
            (bx1, by1, bx2, by2), (bw, bh), (pw, ph) = window_geometry((4, 2, 11, 5), W, H, 12, 2, True, mirror)
            patch = _warp(images[0], bx1, by1, bx2, by2, bh, bw)
            bgs.append(np.zeros((3, 12, 12), np.float32))
            bgs[-1][:, ph:ph + bh, pw:pw + bw] = patch[:, :, ::-1] if mirror else patch
        for i in range(8):
            if i < 4:
                flipped = np.allclose(d[i], bgs[1], atol=1e-4)
                assert flipped or np.allclose(d[i], bgs[0], atol=1e-4)
            else:
                flipped = np.allclose(d[i], fg_flip, atol=1e-4)
                assert flipped or np.allclose(d[i], fg_plain, atol=1e-4)
            seen.add(flipped)
    assert seen == {True, False}                                 # both orientations occur


def test_mean_file_is_centre_cropped(tmp_path, images):
    m = np.random.RandomState(5).rand(3, 16, 16).astype(np.float32) * 50
    write_mean(tmp_path / "mean.binaryproto", m)
    src = _window_file(tmp_path, fg=(4, 2, 11, 9), bg=(0, 0, 19, 15))
    net = _net(tmp_path, src, wd="fg_fraction: 1", tp=f'mean_file: "{tmp_path}/mean.binaryproto"', batch=2)
    net.forward()
    want = _warp(images[0], 4, 2, 11, 9, 12, 12) - m[:, 2:14, 2:14]      # offset (16 - 12) / 2
    np.testing.assert_allclose(net.blobs["data"].data[0], want, atol=1e-4)


def test_bad_window_data(tmp_path, images):
    with pytest.raises(DataSourceError, match=r"layer 'w'.*cannot open window file"):
        _net(tmp_path, str(tmp_path / "none.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataSourceError, match="empty"):
        _net(tmp_path, str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_text(f"% 0\nim0.png\n3 {H} {W}\n0\n")
    with pytest.raises(DataSourceError, match="malformed entry for image 0"):
        _net(tmp_path, str(tmp_path / "bad.txt"))
    (tmp_path / "fg0.txt").write_text(f"# 0\nim0.png\n3 {H} {W}\n1\n0 0.9 0 0 3 3\n")
    with pytest.raises(DataSourceError, match="foreground labels must be > 0"):
        _net(tmp_path, str(tmp_path / "fg0.txt"))
    src = _window_file(tmp_path, fg=(4, 2, 11, 9), bg=(0, 0, 19, 15))
    with pytest.raises(LayerConfigError, match="crop_size must be positive"):
        _net(tmp_path, src, crop=0)
    with pytest.raises(LayerConfigError, match=r"window_data_param.mirror is ignored.*transform_param.mirror"):
        _net(tmp_path, src, wd="mirror: true")
    with pytest.raises(LayerConfigError, match="crop_mode"):
        _net(tmp_path, src, wd='crop_mode: "stretch"')
