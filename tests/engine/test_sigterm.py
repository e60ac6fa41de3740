"""The loader stops at SIGTERM, also as the PID 1 of its container.

A process that is PID 1 of its PID namespace gets no default action for SIGTERM: without
a handler of its own it ignores the signal, and a cancelled import's loader ran on, maybe
to a commit, until its Pod's grace period ended in SIGKILL. Here the loader runs as PID 1
of a new PID namespace (`unshare --pid --fork`, as containerd starts it) on a file that
takes seconds to import; SIGTERM once it reports progress must end it without a commit
and without a result document claiming an outcome.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import LocalObjectStore

pytestmark = pytest.mark.skipif(
    shutil.which("unshare") is None or subprocess.run(
        ["unshare", "--pid", "--fork", "true"], capture_output=True, check=False
    ).returncode != 0,
    reason="needs unshare --pid (root)",
)  # fmt: skip


def _big_file(tmp_path: Path) -> Path:
    source = tmp_path / "big.csv"
    with source.open("w") as out:
        out.write("sku,name,price,currency\n")
        out.writelines(f"T-{i:08d},Product {i},{i % 900}.5,EUR\n" for i in range(1_500_000))
    return source


def _nothing_committed(store: Path) -> None:
    objects = LocalObjectStore(store)
    catalog = Catalog(objects, "shop", "main")
    assert catalog.open_table() is None or catalog.find_import("terminated-import") is None
    assert not objects.exists(catalog.import_key("terminated-import", "result.json"))


def _start_loader(source: Path, store: Path) -> subprocess.Popen[str]:
    """The loader importing `source`, as PID 1 of a new PID namespace (unshare forwards
    no signal: a test signals the loader itself, the child of `unshare`)."""
    return subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "productimport.cli",
         "import", str(source), "--catalog", "main", "--namespace", "shop", "--store",
         str(store), "--import-id", "terminated-import"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigterm_while_the_loader_starts_stops_it_before_it_commits(tmp_path: Path):
    """A cancel can delete the Job the moment its Pod starts: the signal then reaches
    the loader while Python is still loading (typer, DuckDB, delta-rs)."""
    source, store = _big_file(tmp_path), tmp_path / "store"
    loader = _start_loader(source, store)
    pid = ""
    while not pid:  # the loader, PID 1 of the new namespace, as soon as it exists
        found = subprocess.run(["pgrep", "-P", str(loader.pid)], capture_output=True, text=True)
        pid = found.stdout.strip()
    time.sleep(0.3)  # its interpreter is up and loading modules, far from importing
    subprocess.run(["kill", "-TERM", pid], check=True)
    _out, err = loader.communicate(timeout=600)
    assert loader.returncode != 0, err
    assert "progress: done" not in err, err
    _nothing_committed(store)


def test_sigterm_stops_a_loader_that_is_pid_1_before_it_commits(tmp_path: Path):
    source = _big_file(tmp_path)
    store = tmp_path / "store"
    loader = _start_loader(source, store)
    assert loader.stderr is not None
    seen = []
    for line in loader.stderr:  # a line per stage: the import is under way
        seen.append(line)
        if "progress:" in line:
            break
    # unshare forwards nothing: signal the loader itself, PID 1 of the new namespace.
    child = subprocess.run(["pgrep", "-P", str(loader.pid)], capture_output=True, text=True)
    (pid,) = child.stdout.split()
    subprocess.run(["kill", "-TERM", pid], check=True)
    rest = loader.stderr.read()
    code = loader.wait(timeout=600)
    assert code == 128 + signal.SIGTERM, "".join(seen) + rest
    assert "terminated (SIGTERM)" in rest
    _nothing_committed(store)
