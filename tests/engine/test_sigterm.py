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


def test_sigterm_stops_a_loader_that_is_pid_1_before_it_commits(tmp_path: Path):
    source = tmp_path / "big.csv"
    with source.open("w") as out:
        out.write("sku,name,price,currency\n")
        out.writelines(f"T-{i:08d},Product {i},{i % 900}.5,EUR\n" for i in range(1_500_000))
    store = tmp_path / "store"
    loader = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-m", "productimport.cli",
         "import", str(source), "--catalog", "main", "--namespace", "shop", "--store",
         str(store), "--import-id", "terminated-import"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
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
    objects = LocalObjectStore(store)
    catalog = Catalog(objects, "shop", "main")
    assert catalog.open_table() is None or catalog.find_import("terminated-import") is None
    assert not objects.exists(catalog.import_key("terminated-import", "result.json"))
