"""Outbound requests an import makes (URL sources from loader Pods, webhooks from the
operator), attacked on the running system: the cluster's own addresses are refused, a
receiver that never answers holds up no other import, and deliveries are signed.

The dev environment's egress policy is production's (public https only) plus one rule:
the tests' own receivers on the bridge address, on two ports (devenv/services.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading

import pytest
from imports_support import (
    MAGENTO,
    apply,
    event_messages,
    finished,
    jobs_of,
    products_csv,
    upload,
    wait_for,
)

from devenv.pki import Pki
from productimport.operator.notify import SIGNATURE_HEADER, SIGNING_SECRET
from tests.receivers import Receiver, https_receiver


@pytest.fixture
def receiver_tls(cluster) -> tuple:
    pki = Pki(cluster.devenv.layout.sub("pki"))
    return pki.cert("test-receiver"), pki.key("test-receiver")


def _host_and_ports(cluster) -> tuple[str, tuple[int, int]]:
    layout = cluster.devenv.layout
    return layout.network.host_ip, layout.ports.test_receivers


def test_url_sources_cannot_reach_the_clusters_own_addresses(cluster):
    """Metadata service, API server, MinIO and a Service address, from a loader Pod that
    could reach all of them: each import fails at once, SourceNotAllowed, never retried."""
    ns = cluster.namespace("egress")
    host, _ports = _host_and_ports(cluster)
    layout = cluster.devenv.layout
    targets = {
        "metadata": "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "apiserver": f"https://{host}:{layout.ports.apiserver}/api/v1/secrets",
        "minio": f"https://{host}:{layout.ports.minio}/catalog/",
        "service": "https://10.96.0.1/api/v1/namespaces",
    }
    for catalog, url in targets.items():
        apply(cluster, catalog, ns, {"url": url}, catalog=catalog)
    for catalog, url in targets.items():
        status = finished(cluster, catalog, ns)["status"]
        assert (status["phase"], status["reason"]) == ("Failed", "SourceNotAllowed"), status
        assert "not a public address" in status["message"], status
        assert status.get("attempts", 1) == 1, status  # refused is final: no retry
        assert url.split("/")[2].split(":")[0] in status["message"]


def test_an_allowed_address_with_nothing_listening_is_retried_then_fails(cluster):
    ns = cluster.namespace("egress")
    host, ports = _host_and_ports(cluster)
    url = f"https://{host}:{ports[1]}/feed.csv"  # allowed by the dev rule; no server
    apply(cluster, "offline", ns, {"url": url})
    status = finished(cluster, "offline", ns)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "SourceUnreachable"), status
    assert url in status["message"] and status["attempts"] > 1


def test_a_webhook_to_the_operators_own_loopback_is_refused(cluster, minio, receiver_tls):
    """The operator could reach a server on its host's 127.0.0.1; the policy refuses it and
    says so in an Event, and the import's outcome is unaffected."""
    ns = cluster.namespace("hook")
    with https_receiver("127.0.0.1", 0, *receiver_tls, {"/hook": _answer(204)}) as local:
        notify = {"webhook": local.url("/hook")}
        apply(cluster, "local", ns, upload(minio, ns, MAGENTO), notify=notify)
        assert finished(cluster, "local", ns)["status"]["phase"] == "Succeeded"
        why = wait_for("the WebhookFailed event", lambda: _webhook_failure(cluster, "local", ns))
        assert "not a public address" in why
        assert local.seen == []


def test_a_receiver_that_never_answers_holds_up_no_other_import(cluster, minio, receiver_tls):
    """Two imports of one catalog, both notifying a receiver that holds every request
    open: the second runs and finishes while the first's delivery attempts are still
    going (they used to run inside the catalog's lock, on the reconciler's thread).
    Every attempt is signed with the namespace's key."""
    ns = cluster.namespace("hook")
    host, ports = _host_and_ports(cluster)
    released = threading.Event()
    routes = {"/hook": _held(released)}
    with https_receiver(host, ports[0], *receiver_tls, routes) as hook:
        try:
            notify = {"webhook": hook.url("/hook")}
            apply(cluster, "one", ns, upload(minio, ns, MAGENTO), notify=notify)
            apply(cluster, "two", ns, upload(minio, ns, products_csv(1000)), notify=notify)
            one = finished(cluster, "one", ns)
            assert one["status"]["phase"] == "Succeeded"
            two = finished(cluster, "two", ns)
            assert two["status"]["phase"] == "Succeeded"
            tries_of_one = [s for s in hook.seen if _delivery(s) == one["metadata"]["uid"]]
            assert 1 <= len(tries_of_one) < 3, "the second import waited for the first's webhook"
            assert _webhook_failure(cluster, "one", ns) is None  # still trying
        finally:
            released.set()
    key = _namespace_key(cluster, ns)
    assert hook.seen
    for seen in hook.seen:
        assert _verify(key, seen.headers[SIGNATURE_HEADER], seen.body), seen.headers
        assert json.loads(seen.body)["name"] in ("one", "two")
    # A body changed on the way no longer matches its signature.
    changed = hook.seen[0].body.replace(b"Succeeded", b"Failed")
    assert not _verify(key, hook.seen[0].headers[SIGNATURE_HEADER], changed)


def test_one_namespace_cannot_verify_anothers_deliveries(cluster, minio, receiver_tls):
    host, ports = _host_and_ports(cluster)
    keys, deliveries = [], []
    with https_receiver(host, ports[0], *receiver_tls, {"/hook": _answer(204)}) as hook:
        for _ in range(2):
            ns = cluster.namespace("hook")
            source = upload(minio, ns, MAGENTO)
            apply(cluster, "x", ns, source, notify={"webhook": hook.url("/hook")})
            finished(cluster, "x", ns)
            deliveries.append(wait_for("the delivery", lambda ns=ns: _from(hook, ns))[0])
            keys.append(_namespace_key(cluster, ns))
    assert keys[0] != keys[1]
    for mine, theirs, seen in ((0, 1, deliveries[0]), (1, 0, deliveries[1])):
        assert _verify(keys[mine], seen.headers[SIGNATURE_HEADER], seen.body)
        assert not _verify(keys[theirs], seen.headers[SIGNATURE_HEADER], seen.body)


def test_a_loader_that_fills_its_tmp_is_evicted_and_the_import_says_why(cluster, minio):
    """A file larger than the import's disk (its /tmp, sized to the ephemeral-storage
    limit): the kubelet evicts the loader instead of letting it fill the node, and the
    import fails at once with DiskLimitExceeded and advice. The loader runs on a sliver of
    a CPU so that it is still working when the kubelet measures its /tmp."""
    ns = cluster.namespace("disk")
    source = upload(minio, ns, products_csv(300_000))  # ~12 MB, downloaded into /tmp
    apply(
        cluster, "full", ns, source,
        job={"resources": {"limits": {"ephemeral-storage": "4Mi", "cpu": "50m"}}},
    )  # fmt: skip
    status = finished(cluster, "full", ns)["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "DiskLimitExceeded"), status
    assert "ephemeral-storage" in status["message"] and "4Mi" in status["message"], status
    job = jobs_of(cluster, ns)
    assert not job or (job[0].get("status") or {}).get("failed", 0) <= 1  # not retried
    pods = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
    assert all(p["status"].get("reason") == "Evicted" for p in pods), pods


# -- helpers ----------------------------------------------------------------------------


def _answer(code: int):
    def route(handler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def _held(released: threading.Event):
    """Answer 204 only once `released` (or after two minutes): until then every delivery
    attempt waits for an answer that does not come."""

    def route(handler) -> None:
        released.wait(120)
        _answer(204)(handler)

    return route


def _delivery(seen) -> str | None:
    return seen.headers.get("X-ProductImport-Delivery")


def _from(hook: Receiver, ns: str) -> list:
    return [s for s in hook.seen if json.loads(s.body or b"{}").get("namespace") == ns]


def _webhook_failure(cluster, name: str, ns: str) -> str | None:
    for reason, message in event_messages(cluster, name, ns):
        if reason == "WebhookFailed":
            return message
    return None


def _namespace_key(cluster, ns: str) -> str:
    secret = json.loads(
        cluster.kubectl("get", "secret", SIGNING_SECRET, "-n", ns, "-o", "json").stdout
    )
    return base64.b64decode(secret["data"]["key"]).decode()


def _verify(key: str, header: str, body: bytes) -> bool:
    """What a receiver does: recompute the MAC over "<t>.<body>" and compare."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(key.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"])
