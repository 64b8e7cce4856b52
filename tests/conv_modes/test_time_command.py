"""`caffessl time`: caffe's log lines, the per-layer FLOP / sparsity table, and the --conv-mode override."""
import pytest

from caffessl.cli import main
from tests.golden import need_shared


@pytest.mark.parametrize("mode", [None, "ccnmm", "auto"])
def test_time_prints_caffe_lines_and_sparsity_table(capsys, mode):
    d = need_shared("golden", "ssl_conv_mode")
    argv = ["time", "--model", str(d / "net_LOWERED_GEMM.prototxt"), "--weights", str(d / "weights.caffemodel"),
            "--iterations", "2"] + (["--conv-mode", mode] if mode else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Average Forward pass:" in out and "*** Benchmark ends ***" in out
    assert "conv2\tforward:" in out
    table = {line.split()[0]: line.split() for line in out.splitlines()[-4:]}
    expect = {None: {"LOWERED_GEMM"}, "ccnmm": {"LOWERED_CCNMM"}}.get(mode, {"LOWERED_GEMM", "LOWERED_CCNMM",
                                                                             "LOWERED_CSRMM"})
    assert table["conv2"][1] in expect
    # zero filters, and zero columns counted per group (Caffe's CCNMM column mask is per group): an
    # independent count from the golden case.json is 1 zero row; 3 columns are zero in both groups
    assert table["conv2"][-2] == "1" and int(table["conv2"][-1]) >= 2 * 3
