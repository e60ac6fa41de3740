"""Run one command as its own child process and measure its wall time and peak RSS.

Each measured command is a direct child reaped with ``os.wait4``, whose rusage is that
child's own (plus any grandchildren it reaped): ``getrusage(RUSAGE_CHILDREN)`` would
instead report the maximum over every child this process ever had.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass


@dataclass
class Measurement:
    argv: list[str]
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_bytes / 2**20

    def check(self) -> Measurement:
        if self.returncode != 0:
            raise RuntimeError(
                f"command failed with exit code {self.returncode}: {' '.join(self.argv)}\n"
                f"--- stderr (last 3000 chars) ---\n{self.stderr[-3000:]}"
            )
        return self


def run(argv: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Start argv, wait for it, and return what it cost. Output goes to temp files, not
    pipes, so a chatty child can never block on a full pipe while we wait for it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
        out.seek(0)
        err.seek(0)
        return Measurement(
            argv=list(argv),
            seconds=seconds,
            peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports KiB
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
        )
