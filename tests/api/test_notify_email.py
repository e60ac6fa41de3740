"""notify_email on the SaaS route: mail that arrives, or a 422 that says why it cannot.

The address is the static token's `email`, else the namespace's annotation
catalog.productimport.dev/notify-email (Kubernetes auth mode has no e-mail claim);
the API sets it as spec.notify.email and the operator mails it when the import ends. An
API whose operator has no SMTP server (PRODUCTIMPORT_API_EMAIL_ENABLED=false) refuses
the flag. Real HTTP, the real control plane and MinIO; the mail test goes through the
dev environment's API, operator and SMTP server (`make dev-up`).
"""

from __future__ import annotations

import json
import secrets
import uuid

import httpx
import pytest
from api_testdata import DATA
from test_upload_http import imports_in, incomplete_uploads, uploads_under

from devenv import services
from productimport.api.auth import parse_token_document
from productimport.api.uploads import NAMESPACE_NOTIFY_EMAIL
from productimport.models.resource import ANNOTATION_NOTIFY_EMAIL, GROUP, PLURAL, VERSION
from tests.devmail import wait_for_mail

MAGENTO = (DATA / "magento2-sample-data" / "products.csv").read_bytes()
WOO_CSV = (DATA / "woocommerce-sample-data" / "sample_products.csv").read_bytes()
AUDIENCE = "productimport"


@pytest.fixture
def ws(cluster) -> tuple[str, str]:
    """A workspace of its own: (workspaceId, namespace)."""
    suffix = uuid.uuid4().hex[:10]
    cluster.kubectl("create", "namespace", f"ws-{suffix}")
    return f"ws_{suffix}", f"ws-{suffix}"


def saas_upload(url: str, workspace: str, headers: dict[str, str], notify: str | None,
                body: bytes = WOO_CSV) -> httpx.Response:  # fmt: skip
    data = {"format": "csv"} if notify is None else {"format": "csv", "notify_email": notify}
    return httpx.post(
        f"{url}/api/workspace/{workspace}/catalog/products/import",
        headers=headers,
        files={"file": ("products.csv", body, "text/csv")},
        data=data,
        timeout=60,
    )


def the_import(kube, namespace: str, uid: str) -> dict:
    items = kube.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    (obj,) = [o for o in items if o["metadata"]["uid"] == uid]
    return obj


def assert_nothing_stored(kube, minio, namespace: str) -> None:
    assert imports_in(kube, namespace) == []
    assert uploads_under(minio, "uploads", f"{namespace}/") == []
    assert incomplete_uploads(minio, "uploads", f"{namespace}/") == []


def static_token(namespace: str, email: str | None = None) -> tuple[str, dict[str, str]]:
    """A token document with one token bound to `namespace`, and its header."""
    token = secrets.token_urlsafe(24)
    entry = {"name": "shop-bot", "token": token, "namespaces": [namespace]}
    if email:
        entry["email"] = email
    return json.dumps({"tokens": [entry]}), {"Authorization": f"Bearer {token}"}


def annotate(cluster, namespace: str, value: str) -> None:
    cluster.kubectl(
        "annotate", "--overwrite", "namespace", namespace, f"{NAMESPACE_NOTIFY_EMAIL}={value}"
    )


# -- the token's address ----------------------------------------------------------------------


def test_saas_notify_email_mails_the_tokens_address(cluster, kube, ws):
    """Through the dev environment's own API (its dev-admin token has an address), the
    dev operator and the dev SMTP server: the message arrives."""
    workspace, namespace = ws
    url, token = cluster.env["PRODUCTIMPORT_API_URL"], cluster.env["PRODUCTIMPORT_API_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"}
    r = saas_upload(url, workspace, headers, "true", body=MAGENTO)
    assert r.status_code == 202, r.text
    assert r.json()["notify_email"] is True
    uid = r.json()["backgroundJobId"]
    obj = the_import(kube, namespace, uid)
    assert obj["spec"]["notify"] == {"email": services.DEV_ADMIN_EMAIL}
    assert obj["metadata"]["annotations"][ANNOTATION_NOTIFY_EMAIL] == "true"
    name = obj["metadata"]["name"]
    msg = wait_for_mail(cluster, services.DEV_ADMIN_EMAIL, f"{namespace}/{name}")
    assert msg["To"] == services.DEV_ADMIN_EMAIL
    assert msg["Subject"] == f"ProductImport {namespace}/{name}: Succeeded"
    assert msg["X-ProductImport-Uid"] == uid
    assert "  created    1994" in msg.get_content()
    job = httpx.get(f"{url}/api/workspace/{workspace}/jobs/{uid}", headers=headers).json()
    assert job["status"] == "completed" and job["notify_email"] is True


def test_notify_email_false_or_absent_asks_for_no_mail(api, kube, admin, ws):
    workspace, namespace = ws
    for notify in ("false", None):
        r = saas_upload(api.url, workspace, admin, notify)
        assert r.status_code == 202, r.text
        assert r.json()["notify_email"] is False
        obj = the_import(kube, namespace, r.json()["backgroundJobId"])
        assert "notify" not in obj["spec"]


def test_the_token_s_address_comes_before_the_namespace_s(make_api, cluster, kube, ws):
    workspace, namespace = ws
    annotate(cluster, namespace, "team@example.com")
    doc, headers = static_token(namespace, email="bot-owner@example.com")
    api = make_api(tokens=doc)
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 202, r.text
    obj = the_import(kube, namespace, r.json()["backgroundJobId"])
    assert obj["spec"]["notify"] == {"email": "bot-owner@example.com"}


# -- refusals -----------------------------------------------------------------------------------


def test_with_email_disabled_notify_email_is_422_and_nothing_is_stored(
    make_api, kube, minio, admin, ws
):
    workspace, namespace = ws
    api = make_api(email_enabled=False)
    r = saas_upload(api.url, workspace, admin, "true")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "email_not_configured"
    assert "sends no mail" in error["message"] and "notify_email" in error["message"]
    assert_nothing_stored(kube, minio, namespace)
    # Not asking for mail still works there.
    assert saas_upload(api.url, workspace, admin, "false").status_code == 202


def test_no_address_anywhere_is_422_until_an_administrator_sets_one(
    make_api, cluster, kube, minio, ws
):
    workspace, namespace = ws
    doc, headers = static_token(namespace)  # no email
    api = make_api(tokens=doc)
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "no_notify_address"
    assert NAMESPACE_NOTIFY_EMAIL in error["message"] and namespace in error["message"]
    assert_nothing_stored(kube, minio, namespace)

    annotate(cluster, namespace, "a,b@example.com")  # not one address
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_notify_address"
    assert_nothing_stored(kube, minio, namespace)

    annotate(cluster, namespace, "catalog-team@example.com")
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 202, r.text
    obj = the_import(kube, namespace, r.json()["backgroundJobId"])
    assert obj["spec"]["notify"] == {"email": "catalog-team@example.com"}


def test_kubernetes_auth_mode_mails_the_namespace_s_address_only(make_api, cluster, kube, ws):
    """A TokenReview names no address: the namespace's annotation, or a 422."""
    workspace, namespace = ws
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "importer")
    cluster.kubectl(
        "-n", namespace, "create", "role", "importer", "--verb=create,get,list",
        f"--resource={PLURAL}.{GROUP}",
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", "importer", "--role=importer",
        f"--serviceaccount={namespace}:importer",
    )  # fmt: skip
    token = cluster.kubectl(
        "-n", namespace, "create", "token", "importer", "--audience", AUDIENCE
    ).stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    api = make_api(auth_mode="kubernetes", token_audiences=AUDIENCE)
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "no_notify_address"
    annotate(cluster, namespace, "shop-admins@example.com")
    r = saas_upload(api.url, workspace, headers, "true")
    assert r.status_code == 202, r.text
    obj = the_import(kube, namespace, r.json()["backgroundJobId"])
    assert obj["spec"]["notify"] == {"email": "shop-admins@example.com"}


# -- the token document ---------------------------------------------------------------------------


def test_a_static_token_may_carry_an_email():
    (plain, mailed) = parse_token_document(
        "tokens:\n"
        "  - {name: ci, token: t1, namespaces: [shop-a]}\n"
        "  - {name: owner, token: t2, namespaces: [shop-a], email: owner@example.com}\n"
    )
    assert plain.email is None and mailed.email == "owner@example.com"


@pytest.mark.parametrize("email", ["nobody", "a,b@example.com", "Eve <eve@example.com>", 42])
def test_a_static_token_s_email_must_be_one_address(email):
    doc = {"tokens": [{"name": "x", "token": "t", "namespaces": ["a"], "email": email}]}
    with pytest.raises(ValueError, match="is not one address"):
        parse_token_document(json.dumps(doc))
