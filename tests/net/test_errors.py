"""Every bad input raises a typed caffessl error that names the place; the CLI prints one line."""
import subprocess
import sys

import pytest

import caffessl as caffe
from caffessl import errors
from tests.golden import REPO, need_shared

GOOD = """layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


def write(tmp_path, text, name="net.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_malformed_prototxt_names_file_line_col(tmp_path):
    path = write(tmp_path, GOOD + 'layer { name: "x" type: "ReLU" bottom: "conv" top: "x" bogus: 1 }\n')
    with pytest.raises(errors.PrototxtParseError) as e:
        caffe.Net(path, caffe.TEST)
    assert f"{path}:4:" in str(e.value) and "bogus" in str(e.value)


def test_unknown_layer_type_names_layer_and_close_types(tmp_path):
    path = write(tmp_path, GOOD + 'layer { name: "act" type: "Relu" bottom: "conv" top: "act" }\n')
    with pytest.raises(errors.UnknownLayerTypeError) as e:
        caffe.Net(path, caffe.TEST)
    assert "'act'" in str(e.value) and "ReLU" in str(e.value)


def test_missing_bottom(tmp_path):
    path = write(tmp_path, GOOD + 'layer { name: "act" type: "ReLU" bottom: "nope" top: "act" }\n')
    with pytest.raises(errors.MissingBottomError) as e:
        caffe.Net(path, caffe.TEST)
    assert "'act'" in str(e.value) and "'nope'" in str(e.value)


def test_shape_mismatch_at_setup_names_layer_and_shapes(tmp_path):
    text = GOOD + """layer { name: "lbl" type: "Input" top: "lbl" input_param { shape { dim: 3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "lbl" top: "loss" }\n"""
    with pytest.raises(errors.ShapeMismatchError) as e:
        caffe.Net(write(tmp_path, text), caffe.TEST)
    assert "'loss'" in str(e.value) and "(2, 4, 6, 6)" in str(e.value)


def test_caffemodel_shape_mismatch_names_layer_param_and_shapes(tmp_path):
    net = caffe.Net(write(tmp_path, GOOD), caffe.TEST)
    w = str(tmp_path / "w.caffemodel")
    net.save(w)
    other = write(tmp_path, GOOD.replace("num_output: 4", "num_output: 5"), "other.prototxt")
    with pytest.raises(errors.WeightsError) as e:
        caffe.Net(other, w, caffe.TEST)
    msg = str(e.value)
    assert "'conv'" in msg and "param 0" in msg and "(4, 3, 3, 3)" in msg and "(5, 3, 3, 3)" in msg


def test_truncated_and_non_caffemodel_files(tmp_path):
    net = caffe.Net(write(tmp_path, GOOD), caffe.TEST)
    w = tmp_path / "w.caffemodel"
    net.save(str(w))
    raw = w.read_bytes()
    (tmp_path / "trunc.caffemodel").write_bytes(raw[: len(raw) - 7])
    with pytest.raises(errors.CaffemodelFormatError):
        caffe.Net(write(tmp_path, GOOD), str(tmp_path / "trunc.caffemodel"), caffe.TEST)
    with pytest.raises(errors.CaffemodelFormatError) as e:  # a prototxt given as weights
        caffe.Net(write(tmp_path, GOOD), write(tmp_path, GOOD, "w2.caffemodel"), caffe.TEST)
    assert "prototxt" in str(e.value)
    with pytest.raises(errors.PrototxtParseError):  # a caffemodel given as the model
        caffe.Net(str(w), caffe.TEST)


def test_missing_files(tmp_path):
    with pytest.raises(errors.FileMissingError):
        caffe.Net(str(tmp_path / "none.prototxt"), caffe.TEST)
    with pytest.raises(errors.FileMissingError):
        caffe.Net(write(tmp_path, GOOD), str(tmp_path / "none.caffemodel"), caffe.TEST)


def test_real_caffe_model_with_wrong_net(tmp_path):
    m = need_shared("models", "lenet", "lenet_iter_10000.caffemodel")
    text = (REPO / "models/lenet/lenet.prototxt").read_text().replace("num_output: 500", "num_output: 400")
    with pytest.raises(errors.WeightsError) as e:
        caffe.Net(write(tmp_path, text), str(m), caffe.TEST)
    assert "'ip1'" in str(e.value)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "caffessl.cli", *args], capture_output=True, text=True,
                          cwd=REPO)


def test_cli_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and "caffessl" in r.stdout
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout


def test_cli_prints_one_line_error_without_traceback(tmp_path):
    bad = write(tmp_path, "layer { name: \"x\" type: \"Nope\" top: \"x\" }\n")
    r = run_cli("time", f"--model={bad}", "--iterations=1")
    if "not available" in r.stderr:
        pytest.skip("time command not built yet")
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip() and not l.startswith(("I", "W"))]
    assert len(lines) == 1 and "Nope" in lines[0] and "Traceback" not in r.stderr
