"""Run the caffessl CLI in a subprocess (its own CWD), returning (returncode, stdout, stderr)."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.golden import REPO


def run_cli(args, cwd, timeout=300, env=None):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "caffessl.cli", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr
