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


def run_cli_inprocess(args, cwd, monkeypatch, capsys):
    """The same CLI entry point in this process (no interpreter start-up); logging is put back afterwards."""
    import logging

    from caffessl import cli
    logger = logging.getLogger("caffessl")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        rc = cli.main(list(args))
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
    out, err = capsys.readouterr()
    return rc, out, err
