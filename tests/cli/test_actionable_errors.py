"""The first hour of a Caffe user: each error is one line, a non-zero exit, and names the file/flag and the fix;
labels around the numbers a command prints."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

import caffessl as caffe
from tests.cli.helpers import DEPLOY_NET, cli, one_line_error, tiny  # noqa: F401  (fixtures)

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")


@no_cuda
def test_solver_mode_gpu_without_cuda_names_the_file_and_the_fixes(cli, tiny):
    # Caffe's `caffe train` without -gpu runs a `solver_mode: GPU` solver on its device_id
    (tiny / "gpu_solver.prototxt").write_text((tiny / "solver.prototxt").read_text()
                                              .replace("solver_mode: CPU", "solver_mode: GPU"))
    rc, _out, err = cli(["train", "-solver", "gpu_solver.prototxt"], tiny)
    one_line_error(rc, err, "gpu_solver.prototxt: solver_mode: GPU", "sees no CUDA device",
                   "set `solver_mode: CPU` in gpu_solver.prototxt", "--cpu")
    rc, _out, err = cli(["train", "-solver", "gpu_solver.prototxt", "-cpu"], tiny)     # the flag that fixes it
    assert rc == 0, err
    assert (tiny / "snap_iter_4.caffemodel").is_file()


@pytest.mark.parametrize("verb", ["train", "test", "time", "classify", "device_query"])
@pytest.mark.parametrize("value", ["abc", "0,x", "-1", "0,0"])
def test_bad_gpu_values_are_one_line(cli, tiny, verb, value):
    args = {"train": ["-solver", "solver.prototxt"],
            "test": ["-model", "net.prototxt", "-weights", "w.caffemodel"],
            "time": ["-model", "deploy.prototxt"],
            "classify": ["-model", "deploy.prototxt", "-weights", "w.caffemodel", "img.png"],
            "device_query": []}[verb]
    rc, _out, err = cli([verb, *args, f"-gpu={value}"], tiny)
    line = one_line_error(rc, err, f"--gpu={value}")
    # one reader (caffessl/devices.py) for every command, train's one-process-per-device included
    assert "give each GPU once" in line if value == "0,0" else "GPU ids separated by ','" in line


@no_cuda
@pytest.mark.parametrize("verb", ["test", "time", "classify"])
def test_a_gpu_on_a_machine_without_cuda_says_to_leave_out_gpu(cli, tiny, verb):
    args = {"test": ["-model", "net.prototxt", "-weights", "w.caffemodel"], "time": ["-model", "deploy.prototxt"],
            "classify": ["-model", "deploy.prototxt", "-weights", "w.caffemodel", "img.png"]}[verb]
    rc, _out, err = cli([verb, *args, "-gpu", "0"], tiny)
    one_line_error(rc, err, "--gpu=0", "sees no CUDA device", "leave out --gpu to run on the CPU")


def _rgb_png(path, h=9, w=9):
    from PIL import Image
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(path)


def test_classify_grey_net_fed_rgb_says_gray(cli, tiny):
    _rgb_png(tiny / "img.png")
    base = ["classify", "--model", "deploy.prototxt", "--weights", "w.caffemodel", "--center-only", "img.png"]
    rc, _out, err = cli(base, tiny)
    one_line_error(rc, err, "deploy.prototxt", "takes 1 channel", "pass --gray")
    rc, out, err = cli(base + ["--gray"], tiny)
    assert rc == 0, err
    assert "img.png:" in out


def test_classify_colour_net_with_gray_says_leave_it_out(cli, tiny):
    (tiny / "rgb.prototxt").write_text(DEPLOY_NET.replace("dim: 1 dim: 1", "dim: 1 dim: 3"))
    caffe.Net(str(tiny / "rgb.prototxt"), caffe.TEST).save(str(tiny / "rgb.caffemodel"))
    _rgb_png(tiny / "img.png")
    rc, _out, err = cli(["classify", "--model", "rgb.prototxt", "--weights", "rgb.caffemodel", "--gray",
                         "img.png"], tiny)
    one_line_error(rc, err, "img.png: 1 channel(s)", "takes 3", "leave out --gray")


def test_classify_mean_of_another_size_says_mean_per_channel(cli, tiny):
    _rgb_png(tiny / "img.png")
    np.save(tiny / "big_mean.npy", np.full((1, 12, 12), 0.25, np.float32))     # a larger mean image
    base = ["classify", "--model", "deploy.prototxt", "--weights", "w.caffemodel", "--gray", "--center-only",
            "--json", "--mean", "big_mean.npy", "img.png"]
    rc, _out, err = cli(base, tiny)
    one_line_error(rc, err, "--mean=big_mean.npy", "(1, 12, 12)", "(1, 6, 6)", "--mean-per-channel")
    rc, out, err = cli(base + ["--mean-per-channel"], tiny)
    assert rc == 0, err
    # the per-channel mean is the image's average: the same answer as a (1,) mean of 0.25
    np.save(tiny / "chan_mean.npy", np.full((1,), 0.25, np.float32))
    rc2, out2, err2 = cli(base[:-2] + ["chan_mean.npy", "img.png"], tiny)
    assert rc2 == 0, err2
    assert out == out2
    # a mean with the wrong channel count names the shapes, not --mean-per-channel
    np.save(tiny / "rgb_mean.npy", np.zeros((3, 6, 6), np.float32))
    rc, _out, err = cli(base[:-2] + ["rgb_mean.npy", "img.png"], tiny)
    line = one_line_error(rc, err, "--mean=rgb_mean.npy", "(3, 6, 6)")
    assert "--mean-per-channel" not in line


def test_classify_bad_integer_list_is_one_line(cli, tiny):
    _rgb_png(tiny / "img.png")
    rc, _out, err = cli(["classify", "--model", "deploy.prototxt", "--weights", "w.caffemodel", "--images-dim",
                         "a,b", "img.png"], tiny)
    one_line_error(rc, err, "--images-dim=a,b", "e.g. --images-dim=256,256")


def test_export_of_a_train_test_net_names_the_deploy_prototxt(cli, tiny):
    rc, _out, err = cli(["export", "onnx", "--model", "net.prototxt", "--out", "x.onnx"], tiny)
    one_line_error(rc, err, "net.prototxt: layer 'data' (DummyData)", "train/test net",
                   "--model=./deploy.prototxt")
    assert not (tiny / "x.onnx").exists()
    # without a deploy prototxt beside it: what the deploy prototxt must be
    (tiny / "deploy.prototxt").unlink()
    rc, _out, err = cli(["export", "onnx", "--model", "net.prototxt", "--out", "x.onnx"], tiny)
    one_line_error(rc, err, "export its deploy prototxt instead", "Input layer")


def test_export_api_on_a_loss_layer_points_to_the_deploy_net(tiny):
    from caffessl.errors import ExportError
    from caffessl.export.onnx import to_onnx
    (tiny / "deploy_loss.prototxt").write_text(
        DEPLOY_NET + 'layer { name: "l" type: "Input" top: "label" input_param { shape { dim: 1 } } }\n'
                     'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    net = caffe.Net(str(tiny / "deploy_loss.prototxt"), caffe.TEST)
    with pytest.raises(ExportError, match="'loss' \\(SoftmaxWithLoss\\).*deploy prototxt"):
        to_onnx(net)


def test_time_of_a_forward_only_net_says_forward(cli, tiny):
    rc, out, err = cli(["time", "-model", "deploy.prototxt", "-iterations", "2"], tiny)
    assert rc == 0, err
    assert "Iteration: 2 forward time:" in out and "forward-backward" not in out
    assert "Backward is skipped" in out


def test_golden_skip_names_the_missing_case(tmp_path):
    from tests.golden import missing_reason
    shared = tmp_path / "shared"
    assert "../shared is not beside this checkout" in missing_reason(shared / "golden" / "x", shared)
    (shared / "golden").mkdir(parents=True)
    reason = missing_reason(shared / "golden" / "conv_9x9" / "case.json", shared)
    assert "../shared is beside this checkout but has no golden/conv_9x9/case.json" in reason
    assert "not beside" not in reason


def test_sparsity_log_lines_are_labelled_and_the_forks_lines_unchanged(tiny, monkeypatch):
    from caffessl.log import GlogFormatter
    from caffessl.log_parse import parse_log
    monkeypatch.chdir(tiny)
    records = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(GlogFormatter().format(r))
    logger = logging.getLogger("caffessl")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        caffe.get_solver("solver.prototxt").solve()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    text = "\n".join(records)
    lines = text.splitlines()
    i = next(k for k, l in enumerate(lines) if l.endswith("    Element Sparsity %: "))
    # the label is its own glog line just before the fork's messages, naming each column
    assert re.search(r"\] +\(the % values below: one per learnable param, in this order: conv1\[0\] conv1\[1\] "
                     r"ip\[0\] ip\[1\]\)$", lines[i - 1]), lines[i - 1]
    # the fork's two-line message itself: title line, then the raw values line, one TAB-ended value per param
    assert re.fullmatch(r"([\d.e+-]+\t){4}", lines[i + 1]), repr(lines[i + 1])
    # and the log parser gives the same tables with and without the label lines
    head = "I1206 10:00:00.000000 1 solver.cpp:1] Solving tiny\n"
    (tiny / "a.log").write_text(head + text + "\n")
    (tiny / "b.log").write_text(head + "\n".join(l for l in lines if "the % values below" not in l) + "\n")
    a, b = parse_log(str(tiny / "a.log")), parse_log(str(tiny / "b.log"))
    assert [r["NumIters"] for r in a.train][:2] == [0, 2]
    assert [{k: v for k, v in r.items() if k != "Seconds"} for r in a.train] == \
        [{k: v for k, v in r.items() if k != "Seconds"} for r in b.train]
