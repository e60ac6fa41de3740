"""`make bench-operator` (after bench/apply_to_job.py): the operator with long queues.

Real Jobs run the real loader on a small file, on the dev environment (its operator,
restarted for the run with a running limit of `--limit`). Three measurements:

1. **A catalog's first imports with a queue behind them.** A gate import that cannot be
   scheduled (it asks for 500 CPUs) holds catalog `main`; behind it `--first` imports,
   then `--behind` more (0, 1,000, 10,000). Once the operator has seen all of them (each
   says Queued), a quiet window measures what waiting costs: API server requests per
   second (its own `apiserver_request_total`) and the operator's CPU. Then the gate is
   cancelled and the time until the first imports have all succeeded is taken. Ratios
   are to the run with nothing behind (same session). The operator's peak RSS is read
   after the largest queue.
2. **Many catalogs under the running limit**: `--catalogs` imports, one per catalog: wall
   time, imports per minute, and the most that ran at once (never above the limit).
3. **Fairness**: namespace A queues `--flood` imports (one catalog each), then namespace B
   `--few`; the order in which their Jobs are created shows whether B's all started
   before A's 50th (the issue's target, with a limit far below the flood).

Figures are noisy on a shared machine: the ratios compare runs of the same session.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client.parser import text_string_to_metric_families

from devenv.waiting import following
from productimport.models.resource import ANNOTATION_CANCEL, GROUP, PLURAL, VERSION
from productimport.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
QUIET_SECONDS = 30.0
FILE = b"sku,name,price,currency\n" + b"".join(
    f"B-{i:04d},Bench product {i},{i}.50,EUR\n".encode() for i in range(100)
)


# -- the cluster -----------------------------------------------------------------------


@dataclass
class Cluster:
    api: k8s.ApiClient
    minio: Any

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def namespace(self, prefix: str) -> str:
        name = f"bench-{prefix}-{secrets.token_hex(3)}"
        self.core.create_namespace({"metadata": {"name": name}})
        key = f"{name}/bench.csv"
        self.minio.put_object("uploads", key, io.BytesIO(FILE), len(FILE))
        return name

    def delete_namespaces(self, *names: str, wait: float = 900.0) -> None:
        """Delete and wait until they are gone, so one phase's clean-up does not load
        the next one's measurement."""
        for name in names:
            self.core.delete_namespace(name)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            left = [n for n in names if self._exists(n)]
            if not left:
                return
            time.sleep(2)
        print(f"  (namespaces still terminating after {wait:.0f}s: {left})", file=sys.stderr)

    def _exists(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_imports(self, namespace: str, docs: list[dict[str, Any]]) -> None:
        """Create in order, sixteen at a time (the order inside a batch of sixteen may
        vary; the queue orders by creation time, then name, and the names sort as the
        intended order)."""

        def create(doc: dict[str, Any]) -> None:
            for attempt in range(5):
                try:
                    self.custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, PLURAL, doc
                    )
                    return
                except k8s.ApiException as exc:
                    if exc.status == 409:
                        return  # a retry of a create that had worked
                    if (exc.status < 500 and exc.status != 429) or attempt == 4:
                        raise
                    time.sleep(1 + attempt)

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(create, docs))

    def cancel(self, namespace: str, name: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name,
            {"metadata": {"annotations": {ANNOTATION_CANCEL: "true"}}},
        )  # fmt: skip

    def requests_served(self) -> float:
        """The API server's own count of the requests it has answered."""
        method, url, headers, _, _ = self.api.param_serialize(
            "GET", "/metrics", auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, headers)
        response.read()
        text = response.data.decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "apiserver_request"
            for sample in family.samples
            if sample.name == "apiserver_request_total"
        )


def manifest(name: str, namespace: str, catalog: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ProductImport",
        "metadata": {"name": name},
        "spec": {
            "catalog": catalog,
            "source": {"object": {"bucket": "uploads", "key": f"{namespace}/bench.csv"}},
            **spec,
        },
    }


@dataclass
class Process:
    """CPU seconds and memory of the operator (a host process in the dev environment)."""

    pid: int

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def memory_mb(self) -> tuple[float, float]:
        """(current RSS, peak RSS) in MB."""
        values = {}
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return values["VmRSS"], values["VmHWM"]


# -- watching imports ------------------------------------------------------------------


@dataclass
class Imports:
    """Every ProductImport event in some namespaces, as it arrives: the phase each import
    is in and when (this process's clock) it reached it."""

    reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    reached: dict[tuple[str, str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def seen(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self.lock:
            self.reasons[(namespace, name)] = status.get("reason") or ""
            phase = status.get("phase") or ""
            self.reached.setdefault((namespace, name, phase), now)
            if status.get("jobName"):
                self.reached.setdefault((namespace, name, "Started"), now)

    def count(self, predicate: Callable[[str], bool]) -> int:
        with self.lock:
            return sum(1 for reason in self.reasons.values() if predicate(reason))

    def when(self, namespace: str, name: str, phase: str) -> float | None:
        with self.lock:
            return self.reached.get((namespace, name, phase))


@contextlib.contextmanager
def watching(cluster: Cluster, namespaces: set[str]) -> Iterator[Imports]:
    imports = Imports()

    def seen(event: dict[str, Any]) -> None:
        meta = event["object"]["metadata"]
        if meta["namespace"] in namespaces:
            imports.seen(meta["namespace"], meta["name"], event["object"].get("status") or {})

    with following(
        cluster.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL, on_event=seen
    ):
        yield imports


@contextlib.contextmanager
def job_starts(cluster: Cluster, namespaces: set[str]) -> Iterator[list[tuple[str, float]]]:
    """(namespace, when) of each loader Job created in `namespaces`, in the API server's
    order."""
    started: list[tuple[str, float]] = []

    def seen(event: dict[str, Any]) -> None:
        job = event["object"]
        if event["type"] == "ADDED" and job.metadata.namespace in namespaces:
            started.append((job.metadata.namespace, time.perf_counter()))

    with following(
        k8s.BatchV1Api(cluster.api).list_job_for_all_namespaces,
        label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        on_event=seen,
    ):
        yield started


def wait(what: str, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.5)


# -- 1. a catalog's first imports with a queue behind them ------------------------------


@dataclass
class QueueRun:
    behind: int
    first_seconds: float  # gate cancelled -> the first imports all succeeded
    created_seconds: float  # creating every import (the bench's own requests)
    settled_seconds: float  # until the operator had said Queued to all of them
    waiting_rps: float  # API server requests per second in the quiet window
    waiting_cpu: float  # operator CPU (cores) in the quiet window
    draining_rps: float  # API server requests per second while the first ones ran
    operator_rss_mb: float


def queue_run(cluster: Cluster, operator: Process, first: int, behind: int) -> QueueRun:
    ns = cluster.namespace("queue")
    names = [f"b-{i:05d}" for i in range(first)] + [f"c-{i:05d}" for i in range(behind)]
    try:
        with watching(cluster, {ns}) as imports:
            gate = {"job": {"resources": {"requests": {"cpu": "500"}}}}
            cluster.create_imports(ns, [manifest("a-gate", ns, "main", **gate)])
            wait("the gate's Job", lambda: imports.when(ns, "a-gate", "Started") is not None, 120)
            began = time.perf_counter()
            cluster.create_imports(ns, [manifest(n, ns, "main") for n in names])
            created = time.perf_counter() - began
            wait(
                f"the operator to queue {len(names)} imports",
                lambda: imports.count(lambda r: r == "Queued") >= len(names),
                3600,
            )
            settled = time.perf_counter() - began
            time.sleep(5)  # the last status writes and Events land
            requests, cpu = cluster.requests_served(), operator.cpu_seconds()
            time.sleep(QUIET_SECONDS)
            waiting_rps = (cluster.requests_served() - requests) / QUIET_SECONDS
            waiting_cpu = (operator.cpu_seconds() - cpu) / QUIET_SECONDS
            rss = operator.memory_mb()[0]
            if imports.when(ns, "a-gate", "Failed") is not None:
                raise RuntimeError("the gate ended before it was cancelled")
            requests = cluster.requests_served()
            cancelled = time.perf_counter()
            cluster.cancel(ns, "a-gate")
            firsts = names[:first]
            wait(
                f"the first {first} imports",
                lambda: all(imports.when(ns, n, "Succeeded") for n in firsts),
                3600,
            )
            done = max(imports.when(ns, n, "Succeeded") or 0.0 for n in firsts)
            draining_rps = (cluster.requests_served() - requests) / (
                time.perf_counter() - cancelled
            )
    finally:
        cluster.delete_namespaces(ns)
    return QueueRun(behind, done - cancelled, created, settled, waiting_rps, waiting_cpu,
                    draining_rps, rss)  # fmt: skip


# -- 2. many catalogs under the running limit -------------------------------------------


def catalogs_run(cluster: Cluster, count: int, limit: int) -> dict[str, float]:
    ns = cluster.namespace("catalogs")
    names = [f"i-{i:04d}" for i in range(count)]
    try:
        with watching(cluster, {ns}) as imports:
            began = time.perf_counter()
            cluster.create_imports(ns, [manifest(n, ns, n) for n in names])
            wait(
                f"{count} imports",
                lambda: all(imports.when(ns, n, "Succeeded") or imports.when(ns, n, "Failed")
                            for n in names),
                3600,
            )  # fmt: skip
            spans = [
                (imports.when(ns, n, "Started") or 0.0, imports.when(ns, n, "Succeeded") or 0.0)
                for n in names
            ]
            failed = sum(1 for n in names if imports.when(ns, n, "Failed"))
    finally:
        cluster.delete_namespaces(ns)
    wall = max(end for _, end in spans) - began
    points = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return {"wall": wall, "per_minute": count / wall * 60, "peak": peak, "failed": failed,
            "limit": limit}  # fmt: skip


# -- 3. fairness ------------------------------------------------------------------------


def fairness_run(cluster: Cluster, flood: int, few: int) -> dict[str, int]:
    a, b = cluster.namespace("flood"), cluster.namespace("few")
    try:
        with job_starts(cluster, {a, b}) as started:
            cluster.create_imports(
                a, [manifest(f"a-{i:04d}", a, f"c{i:04d}") for i in range(flood)]
            )
            cluster.create_imports(b, [manifest(f"b-{i:02d}", b, f"c{i:02d}") for i in range(few)])
            wait(
                f"B's {few} imports to start",
                lambda: sum(1 for ns, _ in started if ns == b) >= few,
                3600,
            )
            order = [ns for ns, _ in started]
    finally:
        cluster.delete_namespaces(a, b)
    last_of_b = max(i for i, ns in enumerate(order) if ns == b)
    a_before = sum(1 for ns in order[:last_of_b] if ns == a)
    return {"a_started_before_last_b": a_before, "starts": len(order)}


# -- the report -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    env_int = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
    parser.add_argument("--first", type=int, default=env_int("BENCH_FIRST", 20))
    parser.add_argument("--behind", default=os.environ.get("BENCH_BEHIND", "1000,10000"),
                        help="comma list of queue lengths behind the first imports")  # fmt: skip
    parser.add_argument("--catalogs", type=int, default=env_int("BENCH_CATALOGS", 200))
    parser.add_argument("--limit", type=int, default=env_int("BENCH_LIMIT", 8))
    parser.add_argument("--flood", type=int, default=env_int("BENCH_FLOOD", 1000))
    parser.add_argument("--few", type=int, default=env_int("BENCH_FEW", 10))
    parser.add_argument("--skip", default=os.environ.get("BENCH_SKIP", ""),
                        help="comma list of queue,catalogs,fairness")  # fmt: skip
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    behind = [int(n) for n in args.behind.split(",") if n]

    from devenv import services
    from devenv.controlplane import DevEnv

    env = DevEnv()
    values = env.up()
    cluster = Cluster(
        k8s_config.new_client_from_config(config_file=values["KUBECONFIG"]), env.minio_client()
    )
    if not cluster.minio.bucket_exists("uploads"):
        cluster.minio.make_bucket("uploads")
    settings = {
        "PRODUCTIMPORT_OPERATOR_MAX_RUNNING_IMPORTS": str(args.limit),
        # The gate waits unschedulable for as long as the largest queue takes to arrive.
        "PRODUCTIMPORT_OPERATOR_PENDING_TIMEOUT_SECONDS": "7200",
    }
    print(f"operator benchmark: real Jobs, a {len(FILE)}-byte file of 100 products; "
          f"operator restarted with a running limit of {args.limit}", flush=True)  # fmt: skip
    with services.operator_with(env, **settings):
        operator = Process(env.sup.pid("operator") or 0)
        if "queue" not in skip:
            runs = [queue_run(cluster, operator, args.first, 0)]
            print_queue_run(runs[0], runs[0])
            for n in behind:
                runs.append(queue_run(cluster, operator, args.first, n))
                print_queue_run(runs[-1], runs[0])
            peak = operator.memory_mb()[1]
            print(f"operator peak RSS over the queue runs: {peak:.0f} MB (target < 300 MB)")
        if "catalogs" not in skip:
            c = catalogs_run(cluster, args.catalogs, args.limit)
            print(f"{args.catalogs} catalogs of one import each, limit {args.limit}: "
                  f"{c['wall']:.1f} s, {c['per_minute']:.0f} imports/min, at most "
                  f"{c['peak']} running at once, {c['failed']} failed", flush=True)  # fmt: skip
        if "fairness" not in skip:
            f = fairness_run(cluster, args.flood, args.few)
            verdict = "met" if f["a_started_before_last_b"] < 49 else "MISSED"
            print(f"fairness, limit {args.limit}: namespace B's {args.few} imports all started "
                  f"after {f['a_started_before_last_b']} of namespace A's {args.flood} "
                  f"(target: before A's 50th: {verdict})", flush=True)  # fmt: skip
        cpu = operator.cpu_seconds()
    print(f"operator CPU over the whole run: {cpu:.0f} s")
    return 0


def print_queue_run(run: QueueRun, alone: QueueRun) -> None:
    print(
        f"queue: first {run.first_seconds:6.1f} s with {run.behind:>6,} behind "
        f"({run.first_seconds / alone.first_seconds:4.2f}x alone; target 1.5x) | "
        f"waiting: API server {run.waiting_rps:5.1f} req/s "
        f"({run.waiting_rps / alone.waiting_rps:4.2f}x; target 2x), operator "
        f"{run.waiting_cpu * 100:4.1f}% CPU | draining {run.draining_rps:5.1f} req/s "
        f"({run.draining_rps / alone.draining_rps:4.2f}x) | created in "
        f"{run.created_seconds:.0f} s, all queued after {run.settled_seconds:.0f} s | "
        f"operator RSS {run.operator_rss_mb:.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
