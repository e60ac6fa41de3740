"""The one image (Dockerfile, .dockerignore, docker/entrypoint.sh), checked without a
container engine (none can run here): hadolint and shellcheck find nothing, the image
installs exactly what scripts/setup.sh installs, the build context holds what the build
copies, and the entrypoint picks the roles and answers the health check as documented."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chart_support import REPO, linter

DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def test_hadolint_finds_nothing() -> None:
    # shellcheck on PATH: hadolint also checks the shell of every RUN instruction.
    env = {**os.environ, "PATH": f"{linter('shellcheck').parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [str(linter("hadolint")), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_does_report_findings(tmp_path: Path) -> None:
    # The linter really runs (a broken install that prints nothing must not pass above).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    done = subprocess.run(
        [str(linter("hadolint")), "--no-color", str(bad)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "DL3007" in done.stdout and "DL3013" in done.stdout, done.stdout


def test_shellcheck_finds_nothing_in_the_entrypoint() -> None:
    done = subprocess.run(
        [str(linter("shellcheck")), "--shell=sh", str(ENTRYPOINT)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# Options that change how pip talks, never what it installs.
NEUTRAL_OPTIONS = {"--disable-pip-version-check", "--no-cache-dir", "-q", "--quiet"}


def _pip_installs(text: str) -> list[list[str]]:
    """The arguments of every `pip install` in shell text, neutral options dropped and an
    editable install of the project (`-e .`) taken as the install of `.`."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for command in re.split(r"&&|;", line):
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    args = [w for w in words[i + 2 :] if w not in NEUTRAL_OPTIONS]
                    if args[:2] == ["-e", "."]:
                        args = ["."]
                    elif "-e" in args and args[args.index("-e") + 1] == ".":
                        args.remove("-e")
                    found.append(args)
    return found


def test_the_image_installs_what_setup_sh_installs() -> None:
    setup = _pip_installs((REPO / "scripts" / "setup.sh").read_text())
    docker = _pip_installs(
        "\n".join(
            line.removeprefix("RUN ")
            for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
            if line.startswith("RUN ")
        )
    )
    # setup.sh first brings the venv's own pip up to date; the image uses the base
    # image's pip (an unpinned upgrade would make the build irreproducible). The two
    # steps that install the product are the same, in the same order.
    # Then the development tools (compiled against the same pins), which the image lacks.
    assert setup[0] == ["--upgrade", "pip"], setup
    assert setup[1:3] == [["-r", "requirements.lock"], ["--no-deps", "."]], setup
    assert setup[3:] == [["-r", "requirements-dev.lock"]], setup
    assert docker == setup[1:3], docker


def test_the_runtime_lock_has_no_development_tools_and_the_dev_lock_agrees_with_it() -> None:
    def pins(name: str) -> dict[str, str]:
        text = (REPO / name).read_text()
        return dict(line.split("==", 1) for line in text.split() if "==" in line)

    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert not {"pytest", "ruff", "schemathesis", "hypothesis"} & set(runtime)
    assert {k: dev.get(k) for k in runtime} == runtime


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes; a
    pattern matching a parent directory matches what is inside it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pat[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(c, pat) for c in candidates)
        if hit:
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_build_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources = [w for w in shlex.split(line)[1:-1] if not w.startswith("--")]
            copied += [s.rstrip("/") for s in sources]
    assert copied, "no COPY from the build context?"
    for source in copied:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is excluded by .dockerignore"
    # Everything the wheel is built from is inside the context: the package and the
    # targets of its symlinked subpackages, pyproject.toml and the readme it names.
    for link in (REPO / "productimport").iterdir():
        if link.is_symlink():
            target = link.resolve().relative_to(REPO).as_posix()
            assert target in copied, f"{link.name} -> {target} is not copied"
    files = [p for d in ("productimport", "api", "operator") for p in (REPO / d).rglob("*.py")]
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        assert not _ignored(rel, patterns), rel
    for junk in (".venv/bin/python", ".dev/kubeconfig", "tests/conftest.py",
                 "productimport/__pycache__/cli.cpython-311.pyc"):  # fmt: skip
        assert _ignored(junk, patterns), junk


def test_the_image_runs_as_a_fixed_unprivileged_user() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users == ["10001:10001"], users  # numeric: runAsNonRoot can verify it
    assert "--uid 10001" in text
    final = text.split("\nFROM ")[-1]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    # No compilers or package installs in the final stage: only the venv is copied.
    assert "apt-get" not in final and "pip install" not in final


def _entrypoint(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PATH": path, **(env or {})},
    )  # fmt: skip


def test_entrypoint_runs_the_loader_role() -> None:
    done = _entrypoint("loader", "--help")
    assert done.returncode == 0, done.stderr
    assert "Import a product file into a catalog" in done.stdout


def test_entrypoint_runs_any_other_command() -> None:
    done = _entrypoint("echo", "hello")
    assert (done.returncode, done.stdout) == (0, "hello\n")
    assert "api" in _entrypoint("help").stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# A stand-in for a role's process: its command line names the console script (as the
# real one's does, `python .../bin/productimport-api`), and it serves /healthz.
FAKE_ROLE = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == '/healthz' else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"""


@pytest.mark.parametrize(
    ("script", "port_var"),
    [
        ("productimport-api", "PRODUCTIMPORT_API_PORT"),
        ("productimport-operator", "PRODUCTIMPORT_OPERATOR_HEALTH_PORT"),
    ],
)
def test_healthcheck_asks_the_running_role(tmp_path: Path, script: str, port_var: str) -> None:
    port = _free_port()
    fake = tmp_path / script
    fake.write_text(FAKE_ROLE)
    proc = subprocess.Popen([sys.executable, str(fake), str(port)])
    try:
        env = {"PRODUCTIMPORT_HEALTHCHECK_PID": str(proc.pid), port_var: str(port)}
        deadline = time.monotonic() + 30
        while _entrypoint("healthcheck", env=env).returncode != 0:
            assert time.monotonic() < deadline, "the fake role never answered /healthz"
            time.sleep(0.2)
        # Not answering on the role's port: unhealthy.
        other = {**env, port_var: str(_free_port())}
        done = _entrypoint("healthcheck", env=other)
        assert done.returncode == 1 and "unhealthy" in done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_healthcheck_passes_for_the_loader() -> None:
    # A batch process: healthy while it runs; its exit code says how it went.
    loader = subprocess.Popen(["sleep", "30"])
    try:
        done = _entrypoint("healthcheck", env={"PRODUCTIMPORT_HEALTHCHECK_PID": str(loader.pid)})
        assert done.returncode == 0, done.stderr
    finally:
        loader.kill()
        loader.wait()
