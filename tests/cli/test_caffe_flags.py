"""Caffe's own command lines (`caffe train -solver S -weights W -gpu 0`) as gflags reads them, for every verb of
Caffe's `caffe` tool, beside caffessl's `--flag=value` (caffessl/commands/_gflags.py)."""
from __future__ import annotations

import pytest
import torch

from caffessl.cli import build_parser
from caffessl.commands._gflags import normalize
from caffessl.errors import CaffeSSLError
from tests.cli.helpers import cli, one_line_error, tiny  # noqa: F401  (fixtures)


def parse(argv):
    parser = build_parser()
    return vars(parser.parse_args(normalize(argv, parser)))


@pytest.mark.parametrize("spellings", [
    # train: every gflags form of a string flag, before or after the command
    [["train", "--solver=s.prototxt", "--weights=a,b", "--gpu=0,1"],
     ["train", "-solver", "s.prototxt", "-weights", "a,b", "-gpu", "0,1"],
     ["train", "-solver=s.prototxt", "-weights=a,b", "-gpu=0,1"],
     ["train", "--solver", "s.prototxt", "--weights", "a,b", "--gpu", "0,1"],
     ["-solver", "s.prototxt", "train", "-weights=a,b", "--gpu", "0,1"],
     ["-gpu=0,1", "-weights", "a,b", "-solver", "s.prototxt", "train"]],
    [["train", "--solver=s", "--snapshot=x.solverstate", "--sigint_effect=none", "--sighup_effect=stop",
      "--level=2", "--stage=a,b"],
     ["train", "-solver", "s", "-snapshot", "x.solverstate", "-sigint_effect", "none", "-sighup_effect=stop",
      "-level", "2", "-stage", "a,b"]],
    # booleans: -flag, -noflag, -flag=false, last one wins; '-' and '_' alike
    [["train", "--solver=s", "--allow-python"],
     ["train", "-solver=s", "-allow_python"],
     ["train", "-solver=s", "-allow-python=true"],
     ["train", "-solver=s", "-noallow_python", "-allow_python=1"]],
    [["train", "--solver=s"],
     ["train", "-solver=s", "-allow_python", "-noallow_python"],
     ["train", "-solver=s", "--allow_python=false"],
     ["train", "-solver=s", "-allow-python=no"]],
    # test and time
    [["test", "--model=m", "--weights=w", "--iterations=7", "--gpu=all", "--level=1", "--stage=x"],
     ["test", "-model", "m", "-weights", "w", "-iterations", "7", "-gpu", "all", "-level", "1", "-stage", "x"]],
    [["time", "--model=m", "--iterations=3", "--phase=TEST", "--gpu=1", "--conv-mode=auto"],
     ["time", "-model", "m", "-iterations=3", "-phase", "TEST", "-gpu", "1", "-conv_mode", "auto"]],
    # device_query: Caffe's verb spelling
    [["device-query", "--gpu=0"], ["device_query", "-gpu", "0"], ["-gpu=0", "device_query"]],
    # Caffe's convert_imageset flags, after caffessl's nested `convert imageset`
    [["convert", "imageset", "--resize_height=32", "--shuffle", "--gray", "R/", "l.txt", "db"],
     ["convert", "imageset", "-resize_height", "32", "-shuffle", "-gray=true", "-noencoded", "R/", "l.txt", "db"]],
    # a negative number stays a value
    [["test", "--model=m", "--weights=w", "--level=-1"], ["test", "-model", "m", "-weights", "w", "-level", "-1"]],
])
def test_gflags_spellings_parse_like_double_dash(spellings):
    want = parse(spellings[0])
    for argv in spellings[1:]:
        assert parse(argv) == want, argv


def test_caffe_flags_a_command_does_not_use_are_ignored_with_a_note(capsys):
    # Caffe defines every flag for every command: `caffe train -model M -iterations N` runs and ignores them
    got = parse(["train", "-solver", "s", "-model", "m.prototxt", "-iterations", "9", "-phase=TEST"])
    assert got["solver"] == "s" and "model" not in got and "iterations" not in got
    err = capsys.readouterr().err
    assert "-model is not used by `train`" in err and "-iterations is not used" in err and "-phase" in err


def test_unknown_single_dash_words_still_reach_argparse():
    parser = build_parser()
    assert normalize(["train", "-x", "-solver", "s"], parser) == ["train", "-x", "--solver=s"]
    with pytest.raises(SystemExit):
        parser.parse_args(normalize(["train", "-solver", "s", "-bogus"], parser))


def test_a_bad_boolean_value_is_one_line(cli, tmp_path):
    rc, _out, err = cli(["train", "-solver", "s", "-allow_python=maybe"], tmp_path)
    one_line_error(rc, err, "-allow_python=maybe", "true or false")
    with pytest.raises(CaffeSSLError):
        parse(["train", "-solver=s", "--no-progress=2"])


def test_caffe_train_command_line_trains_fine_tunes_and_resumes(cli, tiny):
    rc, _out, err = cli(["train", "-solver", "solver.prototxt"], tiny)
    assert rc == 0, err
    assert (tiny / "snap_iter_4.caffemodel").is_file() and "Optimization Done." in err
    # -weights: Caffe's fine-tune (weights copied by layer name) ...
    rc, _out, err = cli(["train", "-solver=solver.prototxt", "-weights", "snap_iter_4.caffemodel",
                         "-sigint_effect", "stop", "-noallow_python"], tiny)
    assert rc == 0, err
    # ... and -snapshot: resume from the solverstate at iteration 4 (max_iter 4: nothing left to do)
    rc, _out, err = cli(["train", "-solver", "solver.prototxt", "-snapshot", "snap_iter_4.solverstate"], tiny)
    assert rc == 0, err
    assert "Resuming from snap_iter_4.solverstate" in err and "Iteration 4" in err
    # Caffe's gflags refuse -weights with -snapshot; so does caffessl
    rc, _out, err = cli(["train", "-solver", "solver.prototxt", "-snapshot", "a", "-weights", "b"], tiny)
    assert rc == 2 and "not allowed with argument" in err


def test_caffe_test_command_line(cli, tiny):
    rc, _out, err = cli(["test", "-model", "net.prototxt", "-weights", "w.caffemodel", "-iterations", "3"], tiny)
    assert rc == 0, err
    assert "Running for 3 iterations." in err and "Batch 2, accuracy = " in err and "Use CPU." in err


def test_caffe_time_command_line(cli, tiny):
    rc, out, err = cli(["time", "-model", "net.prototxt", "-iterations", "2", "-phase", "TRAIN"], tiny)
    assert rc == 0, err
    assert "Testing for 2 iterations." in out and "Iteration: 2 forward-backward time:" in out


def test_caffe_device_query_command_line(cli, tmp_path):
    rc, _out, err = cli(["device_query", "-gpu", "0"], tmp_path)
    if torch.cuda.is_available():
        assert rc == 0 and "Device id:                     0" in err and "Name:" in err
    else:
        one_line_error(rc, err, "--gpu=0", "sees no CUDA device", "leave out --gpu")
        rc, _out, err = cli(["device_query"], tmp_path)
        one_line_error(rc, err, "device_query", "sees no CUDA device")
