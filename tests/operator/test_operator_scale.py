"""The operator's queues on the local cluster: a running limit shared fairly between
namespaces, and queues that survive an operator restart (issue 16).

Real kube-apiserver, Job controller and kubelet; the dev operator is restarted with a
low running limit where a test needs one. The order in which imports start is taken from
a watch on their Jobs (each ADDED event in the order the API server sends them), not
from timestamps with one-second resolution. Waits are bounded, never asserted on.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
from collections.abc import Iterator

import pytest
from imports_support import apply, finished, get, jobs_of, products_csv, upload
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from devenv import services
from devenv.waiting import following, wait_for
from productimport.operator.jobs import LABEL_MANAGED_BY, MANAGED_BY
from productimport.operator.queue import ANNOTATION_SEQUENCE

pytestmark = pytest.mark.cluster


@contextlib.contextmanager
def job_starts(namespaces: set[str]) -> Iterator[list[tuple[str, str]]]:
    """(namespace, owner import) of every loader Job created in `namespaces`, in the
    order the API server reports them, for as long as the block runs."""
    api = k8s_config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    started: list[tuple[str, str]] = []

    def seen(event: dict) -> None:
        job = event["object"]
        if event["type"] == "ADDED" and job.metadata.namespace in namespaces:
            started.append((job.metadata.namespace, job.metadata.owner_references[0].name))

    with following(
        k8s.BatchV1Api(api).list_job_for_all_namespaces,
        label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        on_event=seen,
    ):
        yield started


def test_a_flooding_namespace_does_not_starve_another(cluster, minio):
    """Two running slots: a namespace that queued sixteen imports first, and one that
    then queued three. Each freed slot goes to the namespace with fewer imports running,
    so the three share the slots with the flood from the moment they arrive and all start
    long before the flood's tenth (first come, first served would start all sixteen
    first). Not the fifth: slots are shared, not starts, and a flood import that happens
    to end sooner frees its slot sooner."""
    flood, few = cluster.namespace("flood"), cluster.namespace("few")
    sources = {ns: upload(minio, ns, products_csv(50)) for ns in (flood, few)}
    with (
        services.operator_with(cluster.devenv, PRODUCTIMPORT_OPERATOR_MAX_RUNNING_IMPORTS="2"),
        job_starts({flood, few}) as started,
    ):
        for i in range(16):
            apply(cluster, f"f{i:02d}", flood, sources[flood], catalog=f"c{i:02d}")
        wait_for("the flood to hold both slots", lambda: len(started) >= 2)
        for i in range(3):
            apply(cluster, f"s{i}", few, sources[few], catalog=f"c{i}")
        waiting = wait_for(
            "a flood import to say it waits for a slot",
            lambda: (
                (get(cluster, "pi", "f15", flood) or {}).get("status", {}).get("reason")
                == "WaitingForSlot"
                and get(cluster, "pi", "f15", flood)
            ),
        )
        assert "at most 2 imports run at once" in waiting["status"]["message"]

        def enough() -> bool:
            return (
                sum(ns == few for ns, _ in started) == 3
                and sum(ns == flood for ns, _ in started) >= 10
            )

        wait_for("the few to start and the flood to reach ten", enough, timeout=900)
        order = list(started)
    flood_starts = [i for i, (ns, _) in enumerate(order) if ns == flood]
    last_of_few = max(i for i, (ns, _) in enumerate(order) if ns == few)
    assert last_of_few < flood_starts[9], order
    # Nothing started twice, and the flood's imports got their slots oldest first. Two
    # slots freed at once are given in order, but the two starts then run side by side
    # (different catalogs), so their Jobs may appear in either order: an import may
    # trade places with a neighbour, never overtake by more than the limit less one.
    assert len(set(order)) == len(order)
    flood_order = [name for ns, name in order if ns == flood]
    places = {name: i for i, name in enumerate(sorted(flood_order))}
    assert all(abs(places[name] - i) <= 1 for i, name in enumerate(flood_order)), flood_order


def test_a_catalogs_queue_survives_an_operator_restart_in_order(cluster, minio):
    """Six imports of one catalog; the operator is killed (SIGKILL) once two have ended
    and a seventh arrives while it is down. The restarted operator rebuilds the queue from
    its watch: every import runs once, one after another, in the order they were created,
    and the catalog's versions and fencing sequences follow that order."""
    ns = cluster.namespace("restart")
    names = [f"i{i}" for i in range(7)]
    files = {
        name: upload(minio, ns, products_csv(20 + 10 * i)) for i, name in enumerate(names)
    }  # each file adds products: each import commits a version of its own
    for name in names[:6]:
        apply(cluster, name, ns, files[name])
    finished(cluster, "i1", ns)
    assert cluster.devenv.sup.stop("operator", grace=0, sig=signal.SIGKILL)
    try:
        apply(cluster, "i6", ns, files["i6"])
    finally:
        cluster.devenv.up()
    results = [finished(cluster, name, ns) for name in names]
    assert [r["status"]["phase"] for r in results] == ["Succeeded"] * 7, [
        (r["metadata"]["name"], r["status"].get("reason"), r["status"].get("message"))
        for r in results
    ]
    assert [r["status"]["catalogVersion"] for r in results] == list(range(1, 8))
    sequences = [int(r["metadata"]["annotations"][ANNOTATION_SEQUENCE]) for r in results]
    assert sequences == sorted(sequences) and len(set(sequences)) == 7
    owners = [job["metadata"]["ownerReferences"][0]["name"] for job in jobs_of(cluster, ns)]
    assert sorted(owners) == names  # one Job each: nothing ran twice
    spans = [(r["status"]["startTime"], r["status"]["completionTime"]) for r in results]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, f"two imports of one catalog overlapped: {spans}"
    queued = json.loads(
        cluster.kubectl(
            "get", "events", "-n", ns, "--field-selector", "reason=Queued", "-o", "json"
        ).stdout
    )["items"]
    assert queued, "the imports behind the first should have said they were queued"
