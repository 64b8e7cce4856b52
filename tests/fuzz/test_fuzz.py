"""The short, derandomized fuzz profile (bench/fuzz.py runs the long one): every reader and Net set-up gets
hypothesis-generated and mutated inputs in a worker process under a memory and a time limit; none may end in
an untyped exception, a hang, a memory blow-up or a crash."""
from __future__ import annotations

import pytest

from tests.fuzz.harness import Worker, run_target, table
from tests.fuzz.targets import targets

N_PER_TARGET = 24


@pytest.fixture(scope="module")
def worker():
    w = Worker(mem_mb=1536, timeout=60.0)
    yield w
    w.close()


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name.split(" (")[0].replace(" ", "_"))
def test_fuzz_short_profile(worker, target):
    tally = run_target(worker, target, N_PER_TARGET, seed=0, derandomize=True)
    assert tally.tried == N_PER_TARGET
    assert tally.bad == 0, f"\n{table([tally])}\n{tally.examples}"
