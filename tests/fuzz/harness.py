"""Run fuzz inputs through a worker process and tally the outcomes.

``Worker`` keeps one ``tests.fuzz.worker`` subprocess alive across inputs; an input that exceeds its time
limit is a "hang" (the worker is killed and restarted), a worker that dies is a "crash" (or "memory" when the
kernel killed it), and otherwise the worker's own verdict (accepted / typed / untyped / memory) is recorded.
``run_target`` feeds one target its inputs (hypothesis-generated, then plain mutations) and returns a Tally.
"""
from __future__ import annotations

import os
import pickle
import random
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTCOMES = ("accepted", "typed", "untyped", "hang", "memory", "crash")


@dataclass
class Tally:
    target: str
    counts: dict = field(default_factory=lambda: {k: 0 for k in OUTCOMES})
    examples: dict = field(default_factory=dict)     # outcome -> first few (detail, input prefix)
    seconds: float = 0.0

    @property
    def tried(self) -> int:
        return sum(self.counts.values())

    def add(self, outcome: str, detail: str, data: bytes, report=None):
        self.counts[outcome] += 1
        if outcome not in ("accepted", "typed"):
            if report is not None:
                report(f"    {self.target}: input {self.tried}: {outcome}: {detail[:300]}  input[:120]={data[:120]!r}")
            ex = self.examples.setdefault(outcome, [])
            if len(ex) < 5:
                ex.append((detail, data[:200]))

    @property
    def bad(self) -> int:
        return sum(self.counts[k] for k in ("untyped", "hang", "memory", "crash"))


class Worker:
    def __init__(self, mem_mb: int = 1536, timeout: float = 10.0, env_extra: dict | None = None):
        self.mem_mb, self.timeout = mem_mb, timeout
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        FUZZ_MEM_MB=str(mem_mb), MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1",
                        CAFFESSL_MAX_FILE_BYTES="64M", CAFFESSL_MAX_NET_BYTES=f"{max(mem_mb // 16, 64)}M",
                        **(env_extra or {}))
        self.proc = None
        self.restarts = 0

    def start(self, attempts: int = 3):
        import tempfile
        for attempt in range(attempts):
            log = tempfile.TemporaryFile()
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.worker"], cwd=ROOT, env=self.env,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
            got = self._recv(300.0)
            if isinstance(got, tuple) and got[0] == "ready":
                return
            self._kill()
            log.seek(0)
            tail = log.read()[-2000:].decode("utf-8", "replace")
        raise RuntimeError(f"the fuzz worker did not start ({attempts} attempts); its stderr ends with:\n{tail}")

    def _recv(self, timeout):
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        need = 4
        n = None
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return "timeout"
            chunk = os.read(fd, need - len(buf))
            if not chunk:
                return None
            buf += chunk
            if n is None and len(buf) == 4:
                n = struct.unpack(">I", buf)[0]
                need = 4 + n
        return pickle.loads(buf[4:])

    def _kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def run(self, target: str, data: bytes) -> tuple:
        if self.proc is None:
            self.start()
        msg = pickle.dumps((target, data))
        try:
            self.proc.stdin.write(struct.pack(">I", len(msg)) + msg)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        got = self._recv(self.timeout)
        if got == "timeout":
            self._kill()
            self.restarts += 1
            return "hang", f"no answer in {self.timeout:.0f} s"
        if got is None:
            self.proc.wait()
            rc = self.proc.returncode
            self.proc = None
            self.restarts += 1
            if rc == -signal.SIGKILL:
                return "memory", "killed (SIGKILL: out of memory?)"
            return "crash", f"worker exited with {rc}"
        return got

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:
                pass
            self._kill()


def run_target(worker: Worker, target, n: int, seed: int, derandomize: bool, report=None) -> Tally:
    """``n`` inputs: half from the target's hypothesis strategy (when it has one), the rest by mutation."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    tally = Tally(target.name)
    t0 = time.perf_counter()

    def one(data: bytes):
        outcome, detail = worker.run(target.runner, data)
        tally.add(outcome, detail, data, report)
        if report is not None and tally.tried % 1000 == 0:
            report(f"  {target.name}: {tally.tried} inputs, {time.perf_counter() - t0:.0f} s")

    n_hyp = n // 2 if target.strategy is not None else 0
    if n_hyp:
        @settings(max_examples=n_hyp, derandomize=derandomize, database=None, deadline=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(target.strategy)
        def body(data):
            one(data)
        if not derandomize:
            body = hseed(seed)(body)
        body()
    rng = random.Random(seed)
    while tally.tried < n:
        one(target.mutate(rng))
    tally.seconds = time.perf_counter() - t0
    return tally


def table(tallies) -> str:
    head = ("target", "inputs", "accepted", "typed errors", "other exceptions", "hangs", "memory blow-ups",
            "crashes")
    rows = [head] + [(t.target, t.tried, t.counts["accepted"], t.counts["typed"], t.counts["untyped"],
                      t.counts["hang"], t.counts["memory"], t.counts["crash"]) for t in tallies]
    rows.append(("total",) + tuple(sum(r[i] for r in rows[1:]) for i in range(1, len(head))))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)
