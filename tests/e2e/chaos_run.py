"""The chaos bench's quick run as a background process: started when the session collects test_chaos.py.

The bench is a minute of faults and waits (a replica killed, etcd stopped, a storm, streams drained) with
a light load; run at the head of the session, it overlaps the deploy and unit tests instead of adding its
minute to the test command's time. test_chaos.py reads its result (or starts it, when run alone).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 200
NODE_PREFIX = "tests/e2e/test_chaos.py"
STASH_KEY = pytest.StashKey["ChaosRun"]()


class ChaosRun:
    """One ``bench/chaos_bench.py --quick --check`` subprocess, its output kept in files (no pipe to fill)."""

    def __init__(self) -> None:
        self._stdout: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (outlives this call: closed by stop)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            [sys.executable, "bench/chaos_bench.py", "--quick", "--check"],
            cwd=ROOT,
            stdout=self._stdout,
            stderr=self._stderr,
        )
        self._results: tuple[int, dict[str, dict[str, Any]], str] | None = None

    def results(self) -> tuple[int, dict[str, dict[str, Any]], str]:
        """(exit status, one row per scenario, the tail of stderr), waiting for the run to end."""
        if self._results is None:
            returncode = self._process.wait(timeout=BENCH_TIMEOUT_S)
            self._stdout.seek(0)
            self._stderr.seek(0)
            rows = [json.loads(line) for line in self._stdout.read().decode().splitlines() if line.strip()]
            self._results = (returncode, {row["scenario"]: row for row in rows}, self._stderr.read().decode()[-3000:])
        return self._results

    def stop(self) -> None:
        """End the bench if it still runs (the session ended early): SIGINT, so its teardown stops what it started."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._stdout.close()
        self._stderr.close()
