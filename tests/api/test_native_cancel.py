"""POST /api/v1/namespaces/{ns}/catalogs/{catalog}/imports/{name}/cancel, end to end on
the local control plane: a running import loses its Job and ends Cancelled, a queued one
never starts, a final one is 409, an unknown one 404."""

from __future__ import annotations

import httpx
import pytest
from kubernetes import client as k8s

from devenv.waiting import wait_until

pytestmark = pytest.mark.cluster

ROWS = 1_000_000  # about 40 MB: the loader needs several seconds for it


def big_csv(rows: int) -> bytes:
    head = b"sku,name,description,price\n"
    body = "".join(f"sku-{i},Product {i},Generated product number {i},{i % 997}.99\n"
                   for i in range(rows))  # fmt: skip
    return head + body.encode()


def test_cancelling_a_running_and_a_queued_import(api, fresh_tenant, admin, tokens, kube):
    base = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/big/imports"
    running = httpx.post(
        base,
        headers=admin,
        files={"file": ("big.csv", big_csv(ROWS), "text/csv")},
        data={"preset": "native"},
        timeout=300,
    )
    assert running.status_code == 202, running.text
    # Same catalog: it waits behind the first (one import per catalog at a time).
    queued = httpx.post(
        base,
        headers=admin,
        files={"file": ("small.csv", big_csv(10), "text/csv")},
        data={"preset": "native"},
    )
    assert queued.status_code == 202, queued.text
    a, b = running.json(), queued.json()

    def status(accepted: dict) -> dict:
        r = httpx.get(api.url + accepted["statusUrl"], headers=admin)
        assert r.status_code == 200, r.text
        return r.json()

    batch = k8s.BatchV1Api(kube.api_client)

    def job_of(name: str) -> k8s.V1Job | None:
        jobs = batch.list_namespaced_job(fresh_tenant).items
        return next((j for j in jobs if name in j.metadata.name), None)

    # Running for real: the operator made the Job and its Pod is up.
    wait_until(lambda: status(a), lambda s: s["phase"] == "Running", "never ran")
    wait_until(
        lambda: {"job": job_of(a["name"])},
        lambda s: s["job"] is not None and (s["job"].status.active or 0) >= 1,
        "the loader Pod never became active",
    )
    assert status(b)["phase"] == "Queued"

    # Authorization first: another tenant's token may not touch it (403, as everywhere).
    r = httpx.post(api.url + a["statusUrl"] + "/cancel", headers=tokens["a"])
    assert r.status_code == 403, r.text

    r = httpx.post(api.url + b["statusUrl"] + "/cancel", headers=admin)
    assert r.status_code == 202, r.text
    assert r.json()["phase"] == "Queued" and r.json()["cancelRequested"] is True
    assert r.json()["name"] == b["name"]

    r = httpx.post(api.url + a["statusUrl"] + "/cancel", headers=admin)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["phase"] == "Running" and body["cancelRequested"] is True
    assert set(body) == set(status(a))  # the view GET .../imports/{name} returns
    # Asking again while it winds down is the same answer, not an error.
    again = httpx.post(api.url + a["statusUrl"] + "/cancel", headers=admin)
    assert again.status_code == 202, again.text

    done = wait_until(lambda: status(a), lambda s: s["phase"] == "Cancelled", "not cancelled")
    assert done["reason"] == "Cancelled"
    assert "running" in done["message"], done
    assert done["counts"].get("created", 0) < ROWS
    job = job_of(a["name"])
    assert job is None or job.metadata.deletion_timestamp is not None
    other = wait_until(lambda: status(b), lambda s: s["phase"] == "Cancelled", "not cancelled")
    assert "before it started" in other["message"], other
    assert other["startTime"] is None

    # Final now: 409, whatever the reason it ended.
    r = httpx.post(api.url + a["statusUrl"] + "/cancel", headers=admin)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "already_final"


def test_cancelling_an_unknown_import_is_404(api, tenant, admin):
    base = f"{api.url}/api/v1/namespaces/{tenant}/catalogs/main/imports"
    r = httpx.post(f"{base}/no-such-import/cancel", headers=admin)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["code"] == "not_found"


def test_cancelling_in_another_catalog_is_404(api, fresh_tenant, admin):
    base = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs"
    r = httpx.post(
        f"{base}/one/imports",
        headers=admin,
        files={"file": ("p.csv", big_csv(3), "text/csv")},
        data={"preset": "native", "dryRun": "true"},
    )
    assert r.status_code == 202, r.text
    r = httpx.post(f"{base}/two/imports/{r.json()['name']}/cancel", headers=admin)
    assert r.status_code == 404, r.text


def test_a_finished_import_cannot_be_cancelled(api, fresh_tenant, admin):
    base = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports"
    r = httpx.post(
        base,
        headers=admin,
        files={"file": ("p.csv", big_csv(3), "text/csv")},
        data={"preset": "native"},
    )
    assert r.status_code == 202, r.text
    url = api.url + r.json()["statusUrl"]
    done = wait_until(
        lambda: httpx.get(url, headers=admin).json(),
        lambda s: s["phase"] in ("Succeeded", "Failed", "Cancelled"),
        "never finished",
    )
    assert done["phase"] == "Succeeded", done
    r = httpx.post(url + "/cancel", headers=admin)
    assert r.status_code == 409, r.text
    assert "Succeeded" in r.json()["error"]["message"]
