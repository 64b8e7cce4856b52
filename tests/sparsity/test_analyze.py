"""`caffessl analyze` / caffessl.sparsity.analyze: the SSL fork's examples/sparsity_analyzer.py.

Expected numbers come from independent numpy code in this file (explicit per-group, per-tile loops as the fork
writes them) over weights built here with known zero rows, columns, blocks and sub-threshold entries, and from
the real Caffe's golden SSL run (ssl_long_run_200: zero counts in its trajectory.json and README)."""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

from caffessl.cli import main
from caffessl.proto import caffe_pb2
from tests.golden import need_shared

THR = np.float32(1e-4)          # the fork's r_width, compared in float32 as numpy does on pycaffe's arrays
PNG = b"\x89PNG\r\n\x1a\n"

# conv: 4 input channels, group 2 -> weight (6, 2, 3, 3): two 3 x 18 group matrices
NET = """
name: "analyze_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        param { lr_mult: 1 %s }
        param { lr_mult: 2 }
        convolution_param { num_output: 6 kernel_size: 3 group: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5 } }
"""
BLOCKS = ("block_group_lasso { xdimen: 18 ydimen: 1 } block_group_lasso { xdimen: 1 ydimen: 3 } "
          "block_group_lasso { xdimen: 3 ydimen: 3 }")
SPECS = [(18, 1), (1, 3), (3, 3)]


def write_caffemodel(path, layers):
    """A binary caffemodel built with protobuf directly: {name: (type, [arrays])}."""
    net = caffe_pb2.NetParameter()
    for name, (typ, arrays) in layers.items():
        lp = net.layer.add(name=name, type=typ)
        for a in arrays:
            b = lp.blobs.add()
            b.shape.dim.extend(a.shape)
            b.data.extend(np.asarray(a, np.float32).ravel().tolist())
    path.write_bytes(net.SerializeToString())
    return path


def read_caffemodel(path):
    """{name: [arrays]} parsed with protobuf directly (independent of caffessl's reader)."""
    net = caffe_pb2.NetParameter()
    net.ParseFromString(path.read_bytes())
    return {lp.name: [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for b in lp.blobs]
            for lp in net.layer}


def make_weights(seed=0):
    rng = np.random.default_rng(seed)

    def dense(shape):
        return (rng.uniform(0.01, 1.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    conv = dense((6, 2, 3, 3))
    m = conv.reshape(6, 18)                  # a view: rows = filters, columns = (c, y, x)
    m[1, :] = 0                              # group 0: a zero row
    m[0:3, [2, 5, 11]] = 0                   # group 0: three zero columns
    m[3:6, 9:12] = 0                         # group 1: a zero 3x3 tile (columns 9..11 also zero in group 1)
    m[3:6, 0] = 0                            # group 1: column 0 (a zero column in group 1 only)
    m[4, 4] = 5e-5                           # below the threshold: counts as zero, zeroed by --zerout
    m[5, 7] = -3e-5
    m[0, 0] = THR                            # exactly the threshold: kept (strict <)
    m[0, 1] = -np.nextafter(THR, np.float32(0))  # just below: zero
    ip = dense((5, 96))
    ip[2, :] = 0
    ip[:, 7] = 0
    ip[0, 3] = 2e-5
    return {"conv": ("Convolution", [conv, dense((6,))]), "ip": ("InnerProduct", [ip, dense((5,))])}


def expected_groups(w, groups, specs, thr=THR):
    """Per conv group, as examples/sparsity_analyzer.py computes it (loops over columns and tiles)."""
    wz = np.where(np.abs(w) < thr, np.float32(0), w)
    rg = w.shape[0] // groups
    out = []
    for g in range(groups):
        sub = wz[g * rg:(g + 1) * rg].reshape(rg, -1)
        ratio = np.array([np.sum(np.abs(sub[:, i]) >= thr) / float(rg) for i in range(sub.shape[1])])
        col = np.sum(ratio == 0) / ratio.size
        row = np.sum(np.sum(sub != 0, axis=1) == 0) / rg
        elem = np.sum(sub == 0) / sub.size
        blocks = []
        for x, y in specs:
            count = 0
            for by in range(rg // y):
                for bx in range(sub.shape[1] // x):
                    count += np.sum(np.abs(sub[by * y:by * y + y, bx * x:bx * x + x])) == 0
            blocks.append(count / (rg // y) / (sub.shape[1] // x))
        speed = math.inf if col == 1 or row == 1 else 1.0 / (1 - col) / (1 - row)
        out.append(dict(col=col, row=row, elem=elem, blocks=blocks, speedup=speed, ratio=ratio))
    return out


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(NET % BLOCKS)
    tuned = make_weights(0)
    orig = make_weights(1)
    orig["conv"][1][0].reshape(6, 18)[:, 3] = 0        # a zero column in the original, for its zero fraction
    return dict(model=model, tuned=write_caffemodel(tmp_path / "tuned.caffemodel", tuned),
                orig=write_caffemodel(tmp_path / "orig.caffemodel", orig), tuned_w=tuned, orig_w=orig,
                dir=tmp_path)


# -- the numbers -----------------------------------------------------------------------------------

def test_group2_conv_and_ip_match_an_independent_numpy_computation(files):
    from caffessl.sparsity.analyze import analyze
    res = analyze(files["model"], files["tuned"], files["orig"])
    assert [l.name for l in res.layers] == ["conv", "ip"]
    assert res.threshold == pytest.approx(1e-4, rel=1e-6)
    for layer in res.layers:
        w = files["tuned_w"][layer.name][1][0]
        o = files["orig_w"][layer.name][1][0]
        assert layer.tuned_zero_fraction == np.sum(np.abs(w) < THR) / w.size
        assert layer.orig_zero_fraction == np.sum(np.abs(o) < THR) / o.size
        groups, specs = (2, SPECS) if layer.name == "conv" else (1, [])
        want = expected_groups(w, groups, specs)
        assert len(layer.groups) == groups
        for g, e in zip(layer.groups, want):
            assert g.col_sparsity == pytest.approx(e["col"], abs=1e-12)
            assert g.row_sparsity == pytest.approx(e["row"], abs=1e-12)
            assert g.elem_sparsity == pytest.approx(e["elem"], abs=1e-12)
            assert g.speedup == pytest.approx(e["speedup"], rel=1e-12)
            assert [(b.xdimen, b.ydimen) for b in g.blocks] == specs
            assert [b.sparsity for b in g.blocks] == pytest.approx(e["blocks"], abs=1e-12)
            np.testing.assert_allclose(g.col_nonzero_ratio, e["ratio"], atol=1e-12)
    # the constructed structure, spelled out: group 0 has 1/3 zero rows and 3/18 zero columns; group 1 has
    # columns 0, 9, 10, 11 zero and one zero 3x3 tile out of 6
    g0, g1 = res.layers[0].groups
    assert (g0.zero_rows, g0.zero_cols, g1.zero_rows, g1.zero_cols) == (1, 3, 0, 4)
    assert g1.blocks[2].zero_blocks == 1 and g1.blocks[2].blocks == 6
    assert g0.speedup == pytest.approx(1 / (1 - 3 / 18) / (1 - 1 / 3))


def test_analysis_leaves_the_weights_alone_and_zerout_net_zeroes_only_weights(files):
    import caffessl as caffe
    from caffessl.sparsity.analyze import analyze_net, load_net, zerout_net
    net = load_net(files["model"], files["tuned"], caffe.TEST)
    before = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    analyze_net(net)
    for k, v in net.params.items():
        for a, b in zip(before[k], v):
            np.testing.assert_array_equal(a, b.data)
    n = zerout_net(net)
    w = files["tuned_w"]
    assert n == sum(int(np.sum((np.abs(w[k][1][0]) < THR) & (w[k][1][0] != 0))) for k in w)
    for k in w:
        np.testing.assert_array_equal(net.params[k][0].data, np.where(np.abs(w[k][1][0]) < THR, 0, w[k][1][0]))
        np.testing.assert_array_equal(net.params[k][1].data, w[k][1][1])     # biases untouched


def test_threshold_option_and_table(files, capsys):
    assert main(["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"]),
                 "--threshold", "0.5", "--json", str(files["dir"] / "r.json")]) == 0
    out = capsys.readouterr().out
    w = files["tuned_w"]["conv"][1][0]
    data = json.loads((files["dir"] / "r.json").read_text())
    assert data["threshold"] == 0.5 and data["orig_weights"] is None
    conv = data["layers"][0]
    assert conv["tuned_zero_fraction"] == np.sum(np.abs(w) < np.float32(0.5)) / w.size
    want = expected_groups(w, 2, SPECS, thr=np.float32(0.5))
    assert [g["elem_sparsity"] for g in conv["group_stats"]] == pytest.approx([e["elem"] for e in want])
    assert "col_nonzero_ratio" not in conv["group_stats"][0]
    lines = out.splitlines()
    assert lines[0].startswith("Sparsity of ") and "|w| < 0.5" in lines[0]
    header = lines[1].split()
    assert header[:4] == ["layer", "type", "shape", "group"] and "speedup" in header
    assert lines[2].split()[:4] == ["conv", "Convolution", "6x2x3x3", "0/2"]
    assert lines[3].split()[0] == "1/2" and lines[4].split()[0] == "ip"
    assert lines[5].startswith("speedup: ") and len(lines[5].split()) == 1 + 3


def test_json_with_columns_and_the_fork_speedup_line(files, capsys):
    out_json = files["dir"] / "out" / "a.json"
    assert main(["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"]), "--orig-weights",
                 str(files["orig"]), "--json", str(out_json), "--json-columns"]) == 0
    data = json.loads(out_json.read_text())
    w = files["tuned_w"]["conv"][1][0]
    want = expected_groups(w, 2, SPECS)
    for g, e in zip(data["layers"][0]["group_stats"], want):
        assert g["col_nonzero_ratio"] == pytest.approx(list(e["ratio"]))
        assert g["speedup"] == pytest.approx(e["speedup"])
    assert data["threshold"] == 1e-4
    assert data["speedup_info"].split() == [f"{e['speedup']:.2f}X" for e in want] + [
        f"{expected_groups(files['tuned_w']['ip'][1][0], 1, [])[0]['speedup']:.2f}X"]
    assert "Wrote " + str(out_json) in capsys.readouterr().out


def test_a_whole_zero_group_gives_an_infinite_speedup_not_a_crash(tmp_path):
    """The fork's 1.0/(1-col)/(1-row) raises ZeroDivisionError when a group is all zero; here it is inf."""
    from caffessl.sparsity.analyze import analyze
    model = tmp_path / "net.prototxt"
    model.write_text(NET % "")
    w = make_weights(0)
    w["conv"][1][0][3:] = 0                  # group 1 entirely zero
    res = analyze(model, write_caffemodel(tmp_path / "t.caffemodel", w))
    g1 = res.layers[0].groups[1]
    assert g1.row_sparsity == 1 and g1.col_sparsity == 1 and math.isinf(g1.speedup)
    assert res.to_dict()["layers"][0]["group_stats"][1]["speedup"] is None
    assert "inf" in res.table().splitlines()[3]
    # FLOPs left: group 0's kept rows x kept columns of its 3x18 matrix, group 1 none, over 2 x 3 x 18
    m0 = w["conv"][1][0][:3].reshape(3, -1)
    m0 = np.where(np.abs(m0) < THR, 0, m0)                   # analysed after the fork's zero_out
    kept = (m0 != 0).any(axis=1).sum() * (m0 != 0).any(axis=0).sum()
    assert res.layers[0].flop_fraction == pytest.approx(kept / (6 * 18))
    assert res.to_dict()["layers"][0]["flop_fraction"] == pytest.approx(kept / (6 * 18))


# -- the zeroed-out caffemodel ---------------------------------------------------------------------

@pytest.mark.parametrize("explicit", [False, True])
def test_zerout_caffemodel_reloads_with_small_weights_exactly_zero(files, capsys, explicit):
    target = files["dir"] / "sub" / "z.caffemodel" if explicit else files["dir"] / "tuned_zerout.caffemodel"
    argv = ["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"]), "--zerout"]
    assert main(argv + ([str(target)] if explicit else [])) == 0
    assert f"Saved zeroed-out weights to {target}" in capsys.readouterr().out
    got = read_caffemodel(target)
    assert set(got) >= {"conv", "ip"}
    for name, (_, arrays) in files["tuned_w"].items():
        w, b = arrays
        small = np.abs(w) < THR
        assert small.any() and (w[small] != 0).any()              # the test has sub-threshold nonzeros
        assert np.all(got[name][0][small] == 0)
        np.testing.assert_array_equal(got[name][0][~small], w[~small])      # bit-identical otherwise
        np.testing.assert_array_equal(got[name][1], b)                    # biases untouched
    # nothing else is left in the folder (atomic write: no temporary files)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp")]
    # the zeroed-out model analyses to the same structure, with nothing left below the threshold but zeros
    from caffessl.sparsity.analyze import analyze
    res = analyze(files["model"], target)
    assert res.layers[0].tuned_small == int(np.sum(np.abs(files["tuned_w"]["conv"][1][0]) < THR))


def test_default_zerout_path_names():
    from caffessl.sparsity.analyze import default_zerout_path
    assert default_zerout_path("a/b/lenet_iter_10000.caffemodel") == "a/b/lenet_iter_10000_zerout.caffemodel"
    assert default_zerout_path("x.caffemodel.h5") == "x_zerout.caffemodel.h5"
    assert default_zerout_path("weights") == "weights_zerout"


# -- errors: one line, non-zero exit -----------------------------------------------------------------

def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert err.strip() and "\n" not in err.strip(), err
    return err


def test_cli_errors_are_one_line(files, capsys, tmp_path):
    m, t = str(files["model"]), str(files["tuned"])
    assert "FileMissingError" in _err(capsys, ["analyze", "--model", str(tmp_path / "no.prototxt"),
                                               "--weights", t])
    assert "FileMissingError" in _err(capsys, ["analyze", "--model", m, "--weights", str(tmp_path / "no.caffemodel")])
    assert "FileMissingError" in _err(capsys, ["analyze", "--model", m, "--weights", t,
                                               "--orig-weights", str(tmp_path / "none.caffemodel")])
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer { name: "a" type: "Input" top: "a" \n')
    assert "PrototxtParseError" in _err(capsys, ["analyze", "--model", str(bad), "--weights", t])
    assert "CaffemodelFormatError" in _err(capsys, ["analyze", "--model", m, "--weights", m])
    assert "--threshold" in _err(capsys, ["analyze", "--model", m, "--weights", t, "--threshold", "-1"])


def test_mismatched_weights_are_weights_errors(files, capsys):
    d = files["dir"]
    w = make_weights(0)
    w["conv"] = ("Convolution", [np.zeros((6, 4, 3, 3), np.float32), np.zeros(6, np.float32)])
    err = _err(capsys, ["analyze", "--model", str(files["model"]), "--weights",
                        str(write_caffemodel(d / "shape.caffemodel", w))])
    assert "WeightsError" in err and "'conv'" in err and "(6, 4, 3, 3)" in err
    other = write_caffemodel(d / "other.caffemodel", {"fc9": ("InnerProduct", [np.ones((2, 2), np.float32)])})
    err = _err(capsys, ["analyze", "--model", str(files["model"]), "--weights", str(other)])
    assert "WeightsError" in err and "'conv'" in err and "'ip'" in err


def test_nondivisible_block_is_a_layer_config_error_naming_the_layer(tmp_path, capsys):
    """ydimen 6 tiles the whole 6x18 matrix (training accepts it) but not a 3x18 group matrix: the fork's
    analyzer asserts; caffessl names the layer."""
    model = tmp_path / "net.prototxt"
    model.write_text(NET % "block_group_lasso { xdimen: 18 ydimen: 6 }")
    tuned = write_caffemodel(tmp_path / "t.caffemodel", make_weights(0))
    err = _err(capsys, ["analyze", "--model", str(model), "--weights", str(tuned)])
    assert "LayerConfigError" in err and "layer 'conv'" in err and "ydimen=6" in err
    from caffessl.errors import LayerConfigError
    from caffessl.sparsity.analyze import analyze
    with pytest.raises(LayerConfigError, match="conv group"):
        analyze(model, tuned)


# -- plots -------------------------------------------------------------------------------------------

def test_plots_are_written_as_png(files, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: plots cannot be drawn")
    out = files["dir"] / "plots"
    assert main(["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"]),
                 "--plot", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("sparsity.png", "column_nonzero.png"):
        p = out / name
        assert p.read_bytes()[:8] == PNG, name
        assert f"Wrote {p}" in printed
    assert sorted(q.name for q in out.iterdir()) == ["column_nonzero.png", "sparsity.png"]


def test_missing_matplotlib_is_a_clear_one_line_error(files, capsys, monkeypatch):
    for mod in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, mod, None)      # makes `import` raise ImportError
    err = _err(capsys, ["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"]),
                        "--plot", str(files["dir"] / "p")])
    assert "PlotUnavailableError" in err and "matplotlib" in err
    assert not (files["dir"] / "p").exists()
    # the analysis itself needs no matplotlib
    assert main(["analyze", "--model", str(files["model"]), "--weights", str(files["tuned"])]) == 0


# -- the real Caffe's SSL run ------------------------------------------------------------------------

def test_golden_ssl_long_run_200(tmp_path, monkeypatch, capsys):
    """After 200 iterations of row+column group lasso: conv1 135/144 zeros, 7/8 zero rows, 9/18 zero columns
    (golden README); every layer's counts equal trajectory.json's zero_stats at k = 200."""
    d = need_shared("golden", "ssl_long_run_200")
    monkeypatch.chdir(d)                      # the TRAIN net's HDF5Data source is relative to the CWD
    layers = {}
    final = np.load(d / "weights_iter200.npz")
    types = {"conv1": "Convolution", "conv2": "Convolution", "ip1": "InnerProduct"}
    for key, arr in final.items():
        name, i = key.split("/")
        layers.setdefault(name, (types[name], []))[1].insert(int(i), arr)
    tuned = write_caffemodel(tmp_path / "iter200.caffemodel", layers)
    out_json = tmp_path / "a.json"
    assert main(["analyze", "--model", "net.prototxt", "--weights", str(tuned), "--orig-weights",
                 "init.caffemodel", "--phase", "TRAIN", "--json", str(out_json), "--zerout"]) == 0
    res = {l["name"]: l for l in json.loads(out_json.read_text())["layers"]}
    assert list(res) == ["conv1", "conv2", "ip1"]
    traj = json.loads((d / "trajectory.json").read_text())["zero_stats"]
    assert len(traj) == 201
    init = np.load(d / "init.npz")
    for name, zs in traj[200].items():
        g, = res[name]["group_stats"]
        assert (g["zeros"], g["zero_rows"], g["zero_cols"]) == (zs["zeros"], zs["zero_rows"], zs["zero_cols"])
        assert (g["rows"], g["cols"]) == (zs["rows"], zs["cols"])
        assert res[name]["tuned_zero_fraction"] == zs["zeros"] / zs["count"]
        w0 = init[f"{name}/0"]
        assert res[name]["orig_zero_fraction"] == np.sum(np.abs(w0) < THR) / w0.size
    c1 = res["conv1"]["group_stats"][0]
    assert (c1["zeros"], c1["zero_rows"], c1["zero_cols"]) == (135, 7, 9)
    assert c1["speedup"] == pytest.approx(1 / (1 - 9 / 18) / (1 - 7 / 8))          # 16x
    # conv1's block specs: (18,1) is row-wise, (1,8) column-wise -> the same counts
    assert [(b["xdimen"], b["ydimen"], b["zero_blocks"]) for b in c1["blocks"]] == [(18, 1, 7), (1, 8, 9)]
    c2 = res["conv2"]["group_stats"][0]
    assert [(b["xdimen"], b["ydimen"], b["zero_blocks"]) for b in c2["blocks"]] == [(72, 1, 2), (1, 6, 63)]
    # Caffe already zeroed |w| < 1e-4 after every update: the zeroed-out model equals the input
    z = read_caffemodel(tmp_path / "iter200_zerout.caffemodel")
    for key, arr in final.items():
        name, i = key.split("/")
        np.testing.assert_array_equal(z[name][int(i)], arr)


def test_net_flops_counts_kept_rows_times_kept_columns_per_group(tmp_path):
    """sparsity.flops.net_flops (over weights_matrix.matrix_flops): per conv group, kept filters x kept
    lowered columns x output positions, against a numpy loop."""
    import caffessl as caffe
    from caffessl.sparsity.flops import net_flops
    model = tmp_path / "net.prototxt"
    model.write_text(NET % "")
    net = caffe.Net(str(model), caffe.TEST, weights=str(write_caffemodel(tmp_path / "t.caffemodel", make_weights(0))))
    net.forward()
    got = {f.name: f for f in net_flops(net)}
    for name, groups in (("conv", 2), ("ip", 1)):
        w = net.params[name][0].data
        m = w.reshape(w.shape[0], -1)
        top = net.blobs[name].data.shape
        pos = int(np.prod(top[2:])) if name == "conv" else 1
        r = m.shape[0] // groups
        kept = sum((m[g * r:(g + 1) * r] != 0).any(axis=1).sum() * (m[g * r:(g + 1) * r] != 0).any(axis=0).sum()
                   for g in range(groups))
        assert got[name].dense == m.size * pos and got[name].remaining == kept * pos
