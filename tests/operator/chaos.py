"""A chaos campaign against the dev environment (issue 15): concurrent imports into
several catalogs while a bounded, seeded loop kills the operator, loader Pods, MinIO and
the API server at random points and cancels imports at random; then the invariants.

Run by tests/operator/test_chaos.py (a short campaign in `make test`) and by `make chaos`
(a longer one). Everything is drawn from one seed, printed first: `CHAOS_SEED=<seed>`
replays the same files, arrival order, faults and pauses (the machine's timing still
varies, so a replay re-creates the conditions, not the exact interleaving). Traffic stays
on this machine.

The invariants, checked against the catalogs' Delta history and a replay:
- every ProductImport ends (Succeeded or Failed);
- an import id is in at most one catalog version;
- an import that Succeeded with changes is in exactly one version, the one its status
  names; one that failed, was cancelled or changed nothing is in none;
- a catalog's versions follow its imports' queue order (creation order), and its content
  equals a sequential replay of its committed imports, in that order, by the engine on a
  local directory;
- no orphans: every import document in the catalog's folder belongs to one of its
  imports.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from imports_support import apply, get, upload

from devenv.controlplane import DevEnvError
from devenv.waiting import wait_for
from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import LocalObjectStore, open_store
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import
from productimport.models.resource import ANNOTATION_CANCEL

FAULTS = ("operator", "loader", "minio", "apiserver", "cancel")
COMPARED = ["sku", "name", "price", "currency", "import_id"]


@dataclass
class Campaign:
    seed: int
    catalogs: int = 2
    imports: int = 8
    faults: int = 6
    kinds: tuple[str, ...] = FAULTS


@dataclass
class Outcome:
    injected: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    committed: int = 0

    def summary(self, campaign: Campaign) -> str:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.injected.items())) or "none"
        phases = ", ".join(f"{p} {n}" for p, n in sorted(self.phases.items()))
        held = (
            "every invariant held"
            if not self.violations
            else "VIOLATIONS:\n  " + ("\n  ".join(self.violations))
        )
        return (
            f"chaos seed {campaign.seed}: {campaign.imports} imports into {campaign.catalogs} "
            f"catalogs ({phases}; {self.committed} committed); "
            f"{sum(self.injected.values())} faults injected ({faults}); {held}"
        )


def products_file(rng: random.Random, bad: bool) -> bytes:
    """A file of a random subset of a shared pool of SKUs with random prices: every import
    changes its catalog in its own way, so the order of commits shows in the content. A
    bad one is all negative prices (rejected rows: the import fails, nothing commits)."""
    skus = rng.sample(range(400), rng.randint(30, 120))
    sign = -1 if bad else 1
    rows = [f"C-{s:04d},Product {s} v{rng.randint(0, 9)},{sign * rng.randint(1, 999)}.25,EUR"
            for s in sorted(skus)]  # fmt: skip
    return ("sku,name,price,currency\n" + "\n".join(rows) + "\n").encode()


def run(cluster, minio, campaign: Campaign, workdir: Path) -> Outcome:
    rng = random.Random(campaign.seed)
    print(f"chaos: seed {campaign.seed} (CHAOS_SEED={campaign.seed} replays it)", flush=True)
    ns = cluster.namespace("chaos")
    plan = []
    for i in range(campaign.imports):
        catalog = f"cat{rng.randrange(campaign.catalogs)}"
        data = products_file(rng, bad=rng.random() < 0.1)
        (workdir / f"i{i:03d}.csv").write_bytes(data)
        plan.append((f"i{i:03d}", catalog, upload(minio, ns, data)))
    gaps = [rng.uniform(0, 4) for _ in plan]
    faults = [(rng.uniform(2, 8), rng.choice(campaign.kinds), rng.uniform(0.5, 6))
              for _ in range(campaign.faults)]  # fmt: skip
    outcome = Outcome()

    applied: list[tuple[str, str, dict]] = []

    def arrive() -> None:
        try:
            for (name, catalog, source), gap in zip(plan, gaps, strict=True):
                time.sleep(gap)
                attempt = lambda n=name, c=catalog, s=source: _apply(cluster, n, ns, s, c)  # noqa: E731
                wait_for(f"applying {name}", attempt)
                applied.append((name, catalog, source))
        except BaseException as exc:  # pytest.fail is a BaseException; say it, not hang
            outcome.violations.append(f"the arrivals stopped: {exc!r}")
            raise

    arrivals = threading.Thread(target=arrive, daemon=True)
    arrivals.start()
    try:
        for pause, kind, outage in faults:
            time.sleep(pause)
            if _inject(cluster, ns, kind, outage, rng):
                outcome.injected[kind] += 1
    finally:
        cluster.devenv.up()  # whatever a fault stopped runs again
    arrivals.join(timeout=600)
    finals = {name: _terminal(cluster, name, ns) for name, _, _ in applied}
    _check(ns, applied, finals, workdir, outcome)
    return outcome


def _apply(cluster, name: str, ns: str, source: dict, catalog: str) -> bool:
    """One attempt; False (try again) while a fault keeps the API server away. Applying
    the same manifest twice is harmless."""
    try:
        apply(cluster, name, ns, source, catalog=catalog)
    except DevEnvError as exc:
        print(f"chaos: applying {name}: {exc}", flush=True)
        return False
    return True


def _inject(cluster, ns: str, kind: str, outage: float, rng: random.Random) -> bool:
    """One fault; returns whether there was something to hit."""
    sup = cluster.devenv.sup
    if kind == "loader":
        pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
        running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
        if not running:
            return False
        victim = rng.choice(running)["metadata"]["name"]
        # SIGTERM (a drained node: the loader stops, exit 143, the Job retries) or SIGKILL
        # at once (a crashed node: exit 137, which the Job's policy takes for a memory
        # kill and fails the import).
        grace = ["--grace-period=0", "--force"] if rng.random() < 0.5 else ["--grace-period=5"]
        cluster.kubectl("delete", "pod", victim, "-n", ns, *grace, "--wait=false", check=False)
        return True
    if kind == "cancel":
        imports = json.loads(cluster.kubectl("get", "pi", "-n", ns, "-o", "json").stdout)["items"]
        live = [o for o in imports if (o.get("status") or {}).get("phase") not in
                ("Succeeded", "Failed")]  # fmt: skip
        if not live:
            return False
        victim = rng.choice(live)["metadata"]["name"]
        cluster.kubectl("annotate", "pi", victim, "-n", ns, f"{ANNOTATION_CANCEL}=true",
                        "--overwrite", check=False)  # fmt: skip
        return True
    component = {"operator": "operator", "minio": "minio", "apiserver": "kube-apiserver"}[kind]
    if kind == "operator":
        sup.stop(component, grace=0, sig=signal.SIGKILL)
    else:
        sup.stop(component)
    time.sleep(outage)
    cluster.devenv.up()
    return True


def _terminal(cluster, name: str, ns: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        obj = get(cluster, "productimport", name, ns)
        return (
            obj if (obj or {}).get("status", {}).get("phase") in ("Succeeded", "Failed") else None
        )

    return wait_for(f"{ns}/{name} to end", probe, timeout=900)


def _check(
    ns: str,
    plan: list[tuple[str, str, dict]],
    finals: dict[str, dict[str, Any]],
    workdir: Path,
    outcome: Outcome,
) -> None:
    store = open_store("s3://catalog")
    bad = outcome.violations.append
    for catalog in sorted({c for _, c, _ in plan}):
        mine = [name for name, c, _ in plan if c == catalog]  # creation (queue) order
        history = [v for v in Catalog(store, ns, catalog).history() if v.importId]
        by_uid = Counter(v.importId for v in history)
        outcome.violations.extend(
            f"{catalog}: import {uid} is in {n} versions" for uid, n in by_uid.items() if n > 1
        )
        version_of = {v.importId: v.version for v in history}
        committed = []
        for name in mine:
            obj = finals[name]
            status, uid = obj["status"], obj["metadata"]["uid"]
            outcome.phases[f"{status['phase']}/{status.get('reason')}"] += 1
            counts = status.get("counts") or {}
            changed = any(counts.get(k) for k in ("created", "updated", "deleted"))
            if status["phase"] == "Succeeded" and changed:
                if uid not in version_of:
                    bad(f"{name} Succeeded with changes ({counts}) but is in no version")
                elif version_of[uid] != status.get("catalogVersion"):
                    bad(f"{name} says version {status.get('catalogVersion')}, "
                        f"history says {version_of[uid]}")  # fmt: skip
            elif uid in version_of:
                bad(f"{name} is {status['phase']}/{status.get('reason')} (changes: {changed}) "
                    f"but committed version {version_of[uid]}")  # fmt: skip
            if uid in version_of:
                committed.append((name, uid))
        outcome.committed += len(committed)
        # No orphans: every import document of the catalog belongs to one of its imports
        # (retention keeps them for a week, so none is past its time here).
        uids = {finals[name]["metadata"]["uid"] for name in mine}
        documents = Catalog(store, ns, catalog).key("imports/")
        owners = {key[len(documents) :].split("/", 1)[0] for key in store.list(documents)}
        if owners - uids:
            bad(f"{catalog}: documents of imports that do not exist: {sorted(owners - uids)}")
        versions = [version_of[uid] for _, uid in committed]
        if versions != sorted(versions):
            pairs = list(zip((name for name, _ in committed), versions, strict=True))
            bad(f"{catalog}: versions out of queue order: {pairs}")
        _replay(ns, catalog, committed, workdir, store, bad)


def _replay(ns, catalog, committed, workdir, store, bad) -> None:
    """The catalog's content against the engine's sequential replay of its committed
    imports in queue order, on a local directory."""
    local = workdir / f"replay-{catalog}"
    replica = LocalObjectStore(local)
    for name, uid in committed:
        options = ImportOptions(source=str(workdir / f"{name}.csv"), catalog=catalog,
                                namespace=ns, store=str(local), import_id=uid)  # fmt: skip
        result, code = run_import(options, store=replica)
        if code != 0:
            bad(f"{catalog}: the replay of {name} failed: {result.reason} {result.message}")
            return
    if not committed:
        return
    uri, options = Catalog(store, ns, catalog).table.table_location()
    actual = pl.read_delta(uri, storage_options=options).select(COMPARED).sort("sku")
    expected = pl.read_delta(Catalog(replica, ns, catalog).table_ref).select(COMPARED).sort("sku")
    if not actual.equals(expected):
        bad(f"{catalog}: content differs from a sequential replay of {len(committed)} imports "
            f"({actual.height} rows against {expected.height})")  # fmt: skip
