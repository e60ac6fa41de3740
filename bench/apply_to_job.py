"""`make bench-operator`: how long from `kubectl apply` of a ProductImport to its Job.

Against the dev environment's real API server and operator: N ProductImports, each into
its own catalog (so none waits in a queue), created one after another; a watch on Jobs
timestamps each Job's ADDED event on this side. Reports the median and worst latency.
"""

from __future__ import annotations

import argparse
import io
import os
import secrets
import statistics
import sys
import threading
import time

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--imports", type=int, default=int(os.environ.get("BENCH_IMPORTS", 20)))
    args = parser.parse_args(argv)

    from minio import Minio

    from devenv.controlplane import DevEnv

    env = DevEnv()
    values = env.up()
    api = k8s_config.new_client_from_config(config_file=values["KUBECONFIG"])
    core, batch, custom = k8s.CoreV1Api(api), k8s.BatchV1Api(api), k8s.CustomObjectsApi(api)
    namespace = f"bench-apply-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    store = Minio(values["MINIO_ENDPOINT"], values["MINIO_ACCESS_KEY"],
                  values["MINIO_SECRET_KEY"], secure=False)  # fmt: skip
    if not store.bucket_exists("uploads"):
        store.make_bucket("uploads")
    body = b"sku,name\nA-1,One\n"
    store.put_object("uploads", f"{namespace}/p.csv", io.BytesIO(body), len(body))

    seen: dict[str, float] = {}
    ready = threading.Event()

    def watch_jobs() -> None:
        w = watch.Watch()
        ready.set()
        for event in w.stream(batch.list_namespaced_job, namespace, timeout_seconds=600):
            if event["type"] == "ADDED":
                owner = event["object"].metadata.owner_references[0].name
                seen.setdefault(owner, time.perf_counter())
                if len(seen) == args.imports:
                    w.stop()

    thread = threading.Thread(target=watch_jobs, daemon=True)
    thread.start()
    ready.wait()
    time.sleep(1)  # the watch is established
    applied: dict[str, float] = {}
    for i in range(args.imports):
        name = f"latency-{i:03d}"
        doc = {
            "apiVersion": "catalog.productimport.dev/v1alpha1",
            "kind": "ProductImport",
            "metadata": {"name": name},
            "spec": {
                "catalog": f"c{i:03d}",
                "dryRun": True,
                "source": {"object": {"bucket": "uploads", "key": f"{namespace}/p.csv"}},
            },
        }
        applied[name] = time.perf_counter()
        custom.create_namespaced_custom_object(
            "catalog.productimport.dev", "v1alpha1", namespace, "productimports", doc
        )
        deadline = time.monotonic() + 60
        while name not in seen and time.monotonic() < deadline:
            time.sleep(0.005)
    thread.join(timeout=60)
    latencies = sorted(seen[n] - applied[n] for n in applied if n in seen)
    core.delete_namespace(namespace)
    if len(latencies) != args.imports:
        print(f"only {len(latencies)} of {args.imports} imports got a Job", file=sys.stderr)
        return 1
    print(f"apply -> Job created, {args.imports} imports, one at a time, no queueing")
    print(f"  median {statistics.median(latencies) * 1000:7.0f} ms")
    print(f"  p90    {latencies[int(0.9 * (len(latencies) - 1))] * 1000:7.0f} ms")
    print(f"  max    {latencies[-1] * 1000:7.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
