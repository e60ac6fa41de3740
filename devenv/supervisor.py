"""Start, find and stop the dev environment's processes by PID file.

Each process gets its own session (process group), so stopping it also stops whatever
it started; a PID file is only trusted while /proc says the PID still runs the same
program, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from devenv.layout import Layout


class Supervisor:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _pidfile(self, name: str) -> Path:
        return self.layout.pids / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.layout.logs / f"{name}.log"

    def pid(self, name: str) -> int | None:
        """The PID of the running component, or None (a stale PID file is removed)."""
        pidfile = self._pidfile(name)
        try:
            pid_text, program = pidfile.read_text().split("\n", 1)
            pid = int(pid_text)
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pidfile.unlink(missing_ok=True)
            return None
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        # A script runs as `python SCRIPT`: its path is the second word there.
        words = [word.decode(errors="replace") for word in cmdline[:2]]
        if state == "Z" or program.strip() not in words:
            pidfile.unlink(missing_ok=True)
            return None
        return pid

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        running = self.pid(name)
        if running is not None:
            return running
        log = self.log(name).open("ab")
        log.write(
            f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self._pidfile(name).write_text(f"{proc.pid}\n{argv[0]}\n")
        return proc.pid

    def stop(self, name: str, grace: float = 15.0, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Signal the component's process group (SIGTERM), SIGKILL it after `grace`
        seconds. Returns whether something was running."""
        pid = self.pid(name)
        if pid is None:
            return False
        _signal_group(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pid):
            _reap(pid)
            time.sleep(0.1)
        if _group_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            while _group_alive(pid):
                _reap(pid)
                time.sleep(0.05)
        _reap(pid)
        self._pidfile(name).unlink(missing_ok=True)
        return True

    @staticmethod
    def alive(pid: int) -> bool:
        """Whether `pid` runs and is not a zombie (for a process this object started)."""
        _reap(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join(self.log(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any non-zombie process of the group is left."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    # Our own children (started in this process) must be waited for, or they linger as
    # zombies; for processes started by an earlier `devenv up` this is a no-op.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
