"""pycaffe's caffe.io helpers: Transformer, load_image, resize_image, oversample, mean files."""
import numpy as np
import pytest
from PIL import Image

from caffessl.errors import CaffeSSLError, FileMissingError, NetGraphError, ShapeMismatchError
from caffessl.io import Transformer, load_image, load_mean, oversample, resize_image, write_binaryproto


def _tf(shape=(1, 3, 4, 5)):
    return Transformer({"data": shape})


def test_preprocess_matches_numpy_and_deprocess_inverts():
    rng = np.random.RandomState(0)
    img = rng.rand(4, 5, 3).astype(np.float32)
    mean = rng.rand(3, 4, 5).astype(np.float32) * 100
    t = _tf()
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    got = t.preprocess("data", img)
    want = (img.transpose(2, 0, 1)[::-1] * 255 - mean) * 0.5
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-4)
    assert np.allclose(t.deprocess("data", got), img, atol=1e-5)


def test_per_channel_mean_broadcasts():
    t = _tf()
    t.set_transpose("data", (2, 0, 1))
    t.set_mean("data", np.array([1, 2, 3], np.float32))
    got = t.preprocess("data", np.zeros((4, 5, 3), np.float32))
    assert np.array_equal(got[:, 0, 0], [-1, -2, -3])


def test_preprocess_resizes_to_the_input():
    t = _tf((1, 3, 8, 10))
    t.set_transpose("data", (2, 0, 1))
    assert t.preprocess("data", np.full((4, 5, 3), 0.25, np.float32)).shape == (3, 8, 10)


def test_transformer_errors():
    t = _tf()
    with pytest.raises(ShapeMismatchError, match=r"\(3, 4, 5\)"):
        t.set_mean("data", np.zeros((3, 6, 6)))
    with pytest.raises(ShapeMismatchError, match="4 channels"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ShapeMismatchError, match="needs 3 axes"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ShapeMismatchError, match="needs 3 channels"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(NetGraphError, match="'label' is not one of the net inputs"):
        t.set_raw_scale("label", 255)


def test_load_image_color_grey_alpha(tmp_path):
    rng = np.random.RandomState(1)
    rgb = rng.randint(0, 256, (6, 7, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    im = load_image(tmp_path / "a.png")
    assert im.shape == (6, 7, 3) and im.dtype == np.float32 and np.allclose(im, rgb / 255.0)
    grey = load_image(tmp_path / "a.png", color=False)
    assert grey.shape == (6, 7, 1)
    assert np.allclose(grey[..., 0], (rgb / 255.0) @ np.array([0.2125, 0.7154, 0.0721]), atol=1e-6)
    g = rng.randint(0, 256, (5, 4)).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    assert np.allclose(load_image(tmp_path / "g.png"), np.repeat((g / 255.0)[..., None], 3, axis=2))
    assert load_image(tmp_path / "g.png", color=False).shape == (5, 4, 1)
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 10, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    assert np.allclose(load_image(tmp_path / "c.png"), rgb / 255.0)


def test_load_image_errors(tmp_path):
    with pytest.raises(FileMissingError):
        load_image(tmp_path / "none.png")
    (tmp_path / "x.png").write_bytes(b"not an image")
    with pytest.raises(CaffeSSLError, match="x.png"):
        load_image(tmp_path / "x.png")


def test_resize_image():
    const = np.full((5, 6, 3), 0.3, np.float32)
    assert np.array_equal(resize_image(const, (9, 4)), np.full((9, 4, 3), 0.3, np.float32))
    ramp = np.tile(np.arange(4, dtype=np.float32)[None, :, None], (2, 1, 1))
    up = resize_image(ramp, (2, 8))
    # half-pixel centres: output x samples input at (x + 0.5) / 2 - 0.5, clamped to the edges
    xs = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    assert np.allclose(up[0, :, 0], xs)


def test_oversample_crops_and_mirrors():
    img = np.arange(2 * 6 * 8 * 1, dtype=np.float32).reshape(2, 6, 8, 1)
    c = oversample(img, (4, 4))
    assert c.shape == (20, 4, 4, 1)
    a = img[0]
    starts = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
    for k, (i, j) in enumerate(starts):
        assert np.array_equal(c[k], a[i:i + 4, j:j + 4])
        assert np.array_equal(c[5 + k], a[i:i + 4, j:j + 4][:, ::-1])
    assert np.array_equal(c[10], img[1, :4, :4])


def test_load_mean_binaryproto_and_npy(tmp_path):
    m = np.random.RandomState(2).rand(3, 4, 5).astype(np.float32)
    write_binaryproto(tmp_path / "m.binaryproto", m[None])
    assert np.array_equal(load_mean(tmp_path / "m.binaryproto"), m)
    np.save(tmp_path / "m.npy", m)
    assert np.array_equal(load_mean(tmp_path / "m.npy"), m)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CaffeSSLError, match="obj.npy"):
        load_mean(tmp_path / "obj.npy")
    with pytest.raises(FileMissingError):
        load_mean(tmp_path / "none.npy")
