"""Run one command as its own child process and measure its wall time and peak RSS.

Each measured command is a direct child reaped with ``os.wait4``, whose rusage is that
child's own (plus any grandchildren it reaped): ``getrusage(RUSAGE_CHILDREN)`` would
instead report the maximum over every child this process ever had.

Where `perf stat` can count instructions (Debian's linux-perf, on a machine that exposes
the counter), the command runs under it and its instruction count is kept too: unlike
seconds, it barely moves when other work shares the machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measurement:
    argv: list[str]
    seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str
    instructions: int | None = None
    cpu_seconds: float = 0.0  # user + system, of the command and what it waited for

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


@functools.cache
def instruction_counter() -> str | None:
    """The perf binary, if it can count this machine's instructions."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    probe = subprocess.run(
        [perf, "stat", "-x", ",", "-e", "instructions", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return perf if probe.returncode == 0 and _instructions(probe.stderr) is not None else None


def _instructions(report: str) -> int | None:
    for line in report.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None


def run(argv: list[str], env: dict[str, str] | None = None) -> Measurement:
    """Start argv, wait for it, and return what it cost. Output goes to temp files, not
    pipes, so a chatty child can never block on a full pipe while we wait for it."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r") as counts,
    ):
        command = list(argv)
        perf = instruction_counter()
        if perf is not None:
            command = [perf, "stat", "-x", ",", "-e", "instructions", "-o", counts.name, "--"]
            command += argv
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
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
            instructions=_instructions(counts.read()),
            cpu_seconds=usage.ru_utime + usage.ru_stime,
        )


def warm(path: Path) -> None:
    """Read `path` once so that it is in the page cache when the next command reads it.

    The floor runs first in each pair: without this it reads the file from disk and the
    engine, right after it, from memory (3M rows, 2026-11-30: a 25.9 s floor against
    12.6 s warm, which made a 3.8x merge look like 1.8x)."""
    with path.open("rb") as handle:
        while handle.read(1 << 24):
            pass
