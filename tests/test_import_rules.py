"""docs/ARCHITECTURE.md's import rules hold for the package, and the check fails when one is broken."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.golden import REPO
from tests.import_rules import check


def test_package_follows_the_import_rules():
    assert check(REPO / "caffessl") == []


@pytest.mark.parametrize("module,line,rule", [
    ("layers/base.py", "from ..solver import updates", "layers never import the solver"),
    ("net.py", "from .sparsity import analyze", "the Net never imports sparsity/"),
    ("net.py", "import caffessl.solver.solver", "the Net never imports the solver"),
    ("solver/regularize.py", "from ..sparsity.stats import zero_stats", "the solver never imports sparsity/"),
    ("io/caffemodel.py", "def later():\n    from ..net import Net\n", "io never imports the Net"),
    ("io/upgrade_legacy.py", "from .prototxt import read_net_prototxt", "work on messages, not files"),
    ("weights_matrix.py", "from .errors import CaffeSSLError", "depends on nothing inside the package"),
    ("data/datum.py", "from ..commands import train", "nothing in the library imports the command line"),
    ("sparsity/analyze.py", "from .. import cli", "nothing in the library imports the command line"),
])
def test_the_check_fails_when_a_forbidden_import_is_added(tmp_path, module, line, rule):
    pkg = tmp_path / "caffessl"
    shutil.copytree(REPO / "caffessl", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))
    target = pkg / module
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    found = check(pkg)
    assert found and all(module in v for v in found), found
    assert any(rule in v for v in found), found


def test_python_dash_m_caffessl_is_the_caffessl_command(tmp_path):
    env_py = [sys.executable, "-m", "caffessl"]
    r = subprocess.run(env_py + ["--version"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("caffessl ")
    r = subprocess.run(env_py + ["test", "--model", str(tmp_path / "missing.prototxt"), "--weights",
                                str(tmp_path / "missing.caffemodel")], capture_output=True,
                       text=True, cwd=REPO, timeout=300)
    assert r.returncode == 1
    assert r.stderr.startswith("caffessl test: error:") and "missing.prototxt" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1          # one line, no traceback
