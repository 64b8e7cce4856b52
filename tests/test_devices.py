"""caffessl/devices.py: the one reader of ``--gpu`` values, with torch's CUDA queries faked for machines with
0, 1 and 2 GPUs; ``train`` and the single-device commands give the same line for the same bad value."""
from __future__ import annotations

import pytest
import torch

from caffessl.devices import gpu_ids
from caffessl.errors import DeviceError
from tests.cli.helpers import cli, tiny  # noqa: F401  (fixtures)


@pytest.fixture
def gpus(monkeypatch):
    """gpus(n): make torch report n CUDA devices (0: CUDA unavailable)."""
    def fake(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return fake


def _error(value, **kw) -> str:
    with pytest.raises(DeviceError) as e:
        gpu_ids(value, **kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("n", [0, 1, 2])
def test_no_value_is_no_gpu(gpus, n):
    gpus(n)
    assert gpu_ids(None) == [] and gpu_ids("") == [] and gpu_ids("  ") == []


def test_all_is_every_device(gpus):
    gpus(2)
    assert gpu_ids("all") == [0, 1]
    gpus(1)
    assert gpu_ids("all") == [0]


def test_ids(gpus):
    gpus(2)
    assert gpu_ids("0,1") == [0, 1]
    assert gpu_ids("1,0") == [1, 0]           # order kept: the first is the single-device commands' device
    assert gpu_ids("1") == [1]
    assert gpu_ids(" 0, 1 ") == [0, 1]
    gpus(1)
    assert gpu_ids("0") == [0]


def test_id_beyond_the_machine(gpus):
    gpus(2)
    assert _error("3") == ("--gpu=3: no GPU 3: this machine has 2 CUDA devices (ids 0-1); give ids among them "
                           "or --gpu=all")
    assert _error("0,3").startswith("--gpu=0,3: no GPU 3: this machine has 2 CUDA devices")
    gpus(1)
    assert _error("0,1") == "--gpu=0,1: no GPU 1: this machine has 1 CUDA device (id 0); give that id or --gpu=all"


@pytest.mark.parametrize("n", [0, 2])
def test_duplicate_id(gpus, n):
    gpus(n)                                    # checked before the devices: the same line with or without CUDA
    assert _error("0,0") == "--gpu=0,0: device id 0 is given twice; give each GPU once"
    assert _error("0,1,1").startswith("--gpu=0,1,1: device id 1 is given twice")


@pytest.mark.parametrize("n", [0, 2])
@pytest.mark.parametrize("value", ["a,b", "x", "-1", "0,", ",0", "0;1", "1.5", "0,,1", "ALL", "²"])
def test_malformed_list(gpus, n, value):
    gpus(n)
    assert _error(value) == (f"--gpu={value}: not a list of device ids; give GPU ids separated by ',' (e.g. "
                             f"--gpu=0 or --gpu=0,1) or --gpu=all, or leave out --gpu to run on the CPU")


@pytest.mark.parametrize("value", ["all", "0", "0,1"])
def test_no_cuda(gpus, value):
    gpus(0)
    msg = _error(value)
    assert msg.startswith(f"--gpu={value}: torch {torch.__version__} (")
    assert msg.endswith("sees no CUDA device on this machine; leave out --gpu to run on the CPU")


def test_the_flag_is_named(gpus):
    gpus(0)
    assert _error("all", flag="-gpu").startswith("-gpu=all: ")
    assert "leave out -gpu " in _error("0", flag="-gpu")


def test_one_parser_for_every_command():
    """train's launcher and the other commands read --gpu with the same function; the old readers are gone."""
    import caffessl.commands._device as device_cmd
    import caffessl.parallel.launch as launch
    assert launch.gpu_ids is gpu_ids and device_cmd.gpu_ids is gpu_ids
    assert not hasattr(launch, "_parse_gpu_spec") and not hasattr(device_cmd, "parse_gpus")


ARGS = {"train": ["-solver", "solver.prototxt"],
        "test": ["-model", "net.prototxt", "-weights", "w.caffemodel"],
        "time": ["-model", "deploy.prototxt"]}


@pytest.mark.parametrize("n,value", [(2, "3"), (2, "0,3"), (2, "0,0"), (2, "a,b"), (0, "0"), (0, "all"),
                                     (0, "0,0"), (0, "a,b")])
def test_train_test_and_time_give_the_same_line(cli, tiny, gpus, n, value):
    gpus(n)
    lines = {}
    for verb, args in ARGS.items():
        rc, _out, err = cli([verb, *args, f"--gpu={value}"], tiny)
        got = err.strip().splitlines()
        assert rc not in (0, None) and len(got) == 1, err
        assert got[0].startswith(f"caffessl {verb}: error: DeviceError: --gpu={value}: "), got[0]
        lines[verb] = got[0].split("DeviceError: ", 1)[1]
    assert lines["train"] == lines["test"] == lines["time"], lines
    assert lines["train"] == _error(value)
