"""Argo CD and Flux read a ProductImport's health the way docs/gitops.md promises.

The chart's Argo CD health check (charts/productimport/files/argocd-health.lua) is run on
the test cases kept in Argo CD's own layout (argocd-health-tests/health_test.yaml plus
testdata/) by devenv/gitopscheck, a small Go program that runs the script in gopher-lua
the way Argo CD does and computes Flux's view with kstatus' status.Compute. Running the
real VM and the real kstatus code, not a Python imitation of them, is the point: a Lua
construct gopher-lua rejects, or a status shape kstatus reads differently, fails here.

The checker is built once per content hash of its sources into a cache outside the
clone. No Go, or a failed build, fails these tests with the output; it never skips them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECKER_SRC = REPO / "devenv" / "gitopscheck"
CHECKER_INPUTS = ("go.mod", "go.sum", "main.go")
CHART_FILES = REPO / "charts" / "productimport" / "files"
LUA_SCRIPT = CHART_FILES / "argocd-health.lua"
CASES_DIR = CHART_FILES / "argocd-health-tests"
TESTDATA = CASES_DIR / "testdata"

BUILD_TIMEOUT = 600  # a cold module cache downloads k8s.io/apimachinery and friends
RUN_TIMEOUT = 60

# What kstatus (and so a Flux Kustomization with healthChecks or wait: true) makes of
# each test document. Every testdata file must be listed, so a new case cannot slip
# through without a decision about Flux.
KSTATUS_EXPECTED: dict[str, str] = {
    # kstatus has nothing to compare without status.observedGeneration and no
    # conditions, so it falls through to Current: Flux would call a just-applied import
    # healthy before the operator has even seen it. unobserved.yaml is the same object
    # when the CRD defaults status to {observedGeneration: 0}, which closes that gap.
    "no-status.yaml": "Current",
    "unobserved.yaml": "InProgress",
    "stale-generation.yaml": "InProgress",
    "queued.yaml": "InProgress",
    "running-progress.yaml": "InProgress",
    "running-job-created.yaml": "InProgress",
    "succeeded.yaml": "Current",
    "failed-error-policy.yaml": "Failed",
    "failed-cancelled.yaml": "Failed",
    # kstatus reads conditions, never phase; the operator always writes conditions.
    "phase-only-failed.yaml": "Current",
}

# Where Argo CD and Flux are expected to disagree, and why (see KSTATUS_EXPECTED).
DIVERGENT = {"no-status.yaml", "phase-only-failed.yaml"}

# The Argo CD health that corresponds to each kstatus result.
ARGO_FOR_KSTATUS = {"InProgress": "Progressing", "Current": "Healthy", "Failed": "Degraded"}


def _load_cases() -> list[dict[str, Any]]:
    doc = yaml.safe_load((CASES_DIR / "health_test.yaml").read_text())
    return list(doc["tests"])


CASES = _load_cases()
CASE_IDS = [Path(c["inputPath"]).stem for c in CASES]


def _cache_root() -> Path:
    configured = os.environ.get("PRODUCTIMPORT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "productimport"


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for name in CHECKER_INPUTS:
        digest.update(name.encode() + b"\0")
        digest.update((CHECKER_SRC / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def build_checker() -> Path:
    """The built checker, from the cache when its sources have not changed."""
    out_dir = _cache_root() / "gitopscheck" / _sources_digest()
    binary = out_dir / "gitopscheck"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "'go' is not on PATH: these tests build devenv/gitopscheck with Go (>= 1.25) "
            "to run the Argo CD health check and kstatus for real",
            pytrace=False,
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build into a fresh directory and rename it into place, so an interrupted build
    # never leaves a half-written binary that a later run would trust.
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        try:
            proc = subprocess.run(
                [go, "build", "-buildvcs=false", "-o", str(staging), "."],
                cwd=CHECKER_SRC,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"go build of devenv/gitopscheck timed out: {exc}", pytrace=False)
        if proc.returncode != 0:
            pytest.fail(
                f"go build of devenv/gitopscheck failed (exit {proc.returncode}):\n"
                f"{proc.stderr}{proc.stdout}",
                pytrace=False,
            )
        try:
            staging.rename(out_dir)
        except OSError:
            # Another session finished the same build first; its result is identical.
            if not binary.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binary


def run_checker(
    checker: Path, script: Path, files: list[Path]
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    """Runs the checker; returns the process and its JSON lines keyed by file name."""
    proc = subprocess.run(
        [str(checker), str(script), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    results = {}
    for raw in proc.stdout.splitlines():
        line = json.loads(raw)
        results[Path(line["file"]).name] = line
    return proc, results


@pytest.fixture(scope="session")
def checker() -> Path:
    return build_checker()


@pytest.fixture(scope="session")
def results(checker: Path) -> dict[str, dict[str, Any]]:
    files = sorted(TESTDATA.glob("*.yaml"))
    proc, by_file = run_checker(checker, LUA_SCRIPT, files)
    if proc.returncode != 0:
        pytest.fail(
            f"gitopscheck exited {proc.returncode}:\n{proc.stderr}{proc.stdout}",
            pytrace=False,
        )
    assert sorted(by_file) == [f.name for f in files]
    return by_file


def test_every_case_has_argo_and_flux_expectations() -> None:
    on_disk = sorted(p.name for p in TESTDATA.glob("*.yaml"))
    in_health_test = sorted(Path(c["inputPath"]).name for c in CASES)
    assert in_health_test == on_disk, "health_test.yaml and testdata/ list different files"
    assert sorted(KSTATUS_EXPECTED) == on_disk, "KSTATUS_EXPECTED and testdata/ differ"
    for case in CASES:
        assert case["inputPath"].startswith("testdata/"), case


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_argo_cd_health(case: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    got = results[Path(case["inputPath"]).name]
    assert got.get("error") is None, got
    assert got["argo"] == {
        "status": case["healthStatus"]["status"],
        "message": case["healthStatus"]["message"],
    }


@pytest.mark.parametrize("name", sorted(KSTATUS_EXPECTED))
def test_flux_kstatus(name: str, results: dict[str, dict[str, Any]]) -> None:
    got = results[name]
    assert got["kstatus"]["status"] == KSTATUS_EXPECTED[name], got["kstatus"]


@pytest.mark.parametrize("name", sorted(set(KSTATUS_EXPECTED) - DIVERGENT))
def test_argo_cd_and_flux_agree(name: str, results: dict[str, dict[str, Any]]) -> None:
    got = results[name]
    assert got["argo"]["status"] == ARGO_FOR_KSTATUS[got["kstatus"]["status"]], got


def test_checker_runs_the_script_it_is_given(checker: Path, tmp_path: Path) -> None:
    # Guards against a checker that passes whatever the script says: a script with the
    # failure mapping broken must produce a different verdict.
    broken = tmp_path / "broken.lua"
    source = LUA_SCRIPT.read_text()
    assert 'hs.status = "Degraded"' in source
    broken.write_text(source.replace('hs.status = "Degraded"', 'hs.status = "Healthy"'))
    proc, by_file = run_checker(checker, broken, [TESTDATA / "failed-error-policy.yaml"])
    assert proc.returncode == 0, proc.stderr
    assert by_file["failed-error-policy.yaml"]["argo"]["status"] == "Healthy"


def test_checker_has_argo_cds_libraries_only(checker: Path, tmp_path: Path) -> None:
    # Argo CD opens no string library for a check from argocd-cm; the checker must not
    # either, or a script that works here would fail in Argo CD.
    script = tmp_path / "uses-string.lua"
    script.write_text('return {status = "Healthy", message = string.format("%d", 1)}\n')
    proc, by_file = run_checker(checker, script, [TESTDATA / "succeeded.yaml"])
    assert proc.returncode == 1
    assert "string" in by_file["succeeded.yaml"]["error"]
