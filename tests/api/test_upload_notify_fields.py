"""notifyEmail and notifyWebhook on the native upload route: they land in the created
ProductImport's spec.notify, as `kubectl apply` users write it.

notifyEmail is `true` (the token's address, else the namespace's annotation: the SaaS
route's notify_email=true), `false`/absent (no mail) or one plain address; every form of
it is refused with 422 where the operator sends no mail, before anything is stored.
notifyWebhook is an https URL; what the operator's egress policy would refuse for
certain is a 422 at upload. Real HTTP, the real control plane and MinIO; the mail test
goes through the dev operator and the dev SMTP server.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from api_testdata import DATA
from test_notify_email import annotate, assert_nothing_stored, static_token
from test_upload_http import native_url

from productimport.models.resource import ANNOTATION_NOTIFY_EMAIL, GROUP, PLURAL, VERSION
from tests.devmail import wait_for_mail

pytestmark = pytest.mark.cluster

WOO_CSV = (DATA / "woocommerce-sample-data" / "sample_products.csv").read_bytes()
MAGENTO = (DATA / "magento2-sample-data" / "products.csv").read_bytes()
HOOK = "https://hooks.example.com/productimport?team=catalog"


def upload(api, namespace: str, headers: dict[str, str], body: bytes = WOO_CSV,
           preset: str = "woocommerce", **fields: str) -> httpx.Response:  # fmt: skip
    return httpx.post(
        native_url(api, namespace),
        headers=headers,
        files={"file": ("products.csv", body, "text/csv")},
        data={"preset": preset, **fields},
        timeout=60,
    )


def resource(kube, namespace: str, name: str) -> dict:
    return kube.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


# -- the fields reach the resource -----------------------------------------------------------


def test_an_address_and_a_webhook_land_in_spec_notify(api, kube, admin, fresh_tenant):
    r = upload(api, fresh_tenant, admin, notifyEmail="catalog-team@example.com",
               notifyWebhook=HOOK)  # fmt: skip
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["notifyEmail"] == "catalog-team@example.com"
    assert accepted["notifyWebhook"] == HOOK
    obj = resource(kube, fresh_tenant, accepted["name"])
    assert obj["spec"]["notify"] == {"email": "catalog-team@example.com", "webhook": HOOK}
    assert obj["metadata"]["annotations"][ANNOTATION_NOTIFY_EMAIL] == "true"


def test_true_is_the_token_s_address_as_on_the_saas_route(
    api, kube, admin, token_values, fresh_tenant
):
    admin_email = token_values["admin"]["email"]
    r = upload(api, fresh_tenant, admin, notifyEmail="true")
    assert r.status_code == 202, r.text
    assert r.json()["notifyEmail"] == admin_email
    obj = resource(kube, fresh_tenant, r.json()["name"])
    assert obj["spec"]["notify"] == {"email": admin_email}


def test_true_falls_back_to_the_namespace_s_address_or_is_422(make_api, cluster, kube, minio,
                                                               fresh_tenant):  # fmt: skip
    doc, headers = static_token(fresh_tenant)  # a token without an address
    api = make_api(tokens=doc)
    r = upload(api, fresh_tenant, headers, notifyEmail="true")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "no_notify_address"
    assert "notifyEmail=true" in error["message"] and "name an address" in error["message"]
    assert_nothing_stored(kube, minio, fresh_tenant)
    # An address named in the upload needs neither.
    r = upload(api, fresh_tenant, headers, notifyEmail="bot-owner@example.com")
    assert r.status_code == 202, r.text
    assert resource(kube, fresh_tenant, r.json()["name"])["spec"]["notify"] == {
        "email": "bot-owner@example.com"
    }
    annotate(cluster, fresh_tenant, "shop-admins@example.com")
    r = upload(api, fresh_tenant, headers, notifyEmail="true")
    assert r.status_code == 202, r.text
    assert resource(kube, fresh_tenant, r.json()["name"])["spec"]["notify"] == {
        "email": "shop-admins@example.com"
    }


def test_no_fields_or_false_ask_for_nothing(api, kube, admin, fresh_tenant):
    for fields in ({}, {"notifyEmail": "false", "notifyWebhook": ""}):
        r = upload(api, fresh_tenant, admin, **fields)
        assert r.status_code == 202, r.text
        assert r.json()["notifyEmail"] is None and r.json()["notifyWebhook"] is None
        obj = resource(kube, fresh_tenant, r.json()["name"])
        assert "notify" not in obj["spec"]
        assert ANNOTATION_NOTIFY_EMAIL not in obj["metadata"]["annotations"]


def test_a_webhook_alone_needs_no_mail_server(make_api, kube, admin, fresh_tenant):
    api = make_api(email_enabled=False)
    r = upload(api, fresh_tenant, admin, notifyWebhook=HOOK)
    assert r.status_code == 202, r.text
    assert resource(kube, fresh_tenant, r.json()["name"])["spec"]["notify"] == {"webhook": HOOK}


# -- refusals, before anything is stored -----------------------------------------------------


@pytest.mark.parametrize("value", ["true", "catalog-team@example.com"])
def test_without_smtp_any_notify_email_is_422_and_nothing_is_stored(
    make_api, kube, minio, admin, fresh_tenant, value
):
    api = make_api(email_enabled=False)
    r = upload(api, fresh_tenant, admin, notifyEmail=value)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "email_not_configured"
    assert f"notifyEmail={value}" in error["message"] and "sends no mail" in error["message"]
    assert_nothing_stored(kube, minio, fresh_tenant)
    # The field sent after the file is refused just the same (fields may follow it).
    r = httpx.post(
        native_url(api, fresh_tenant),
        headers=admin,
        files=[("file", ("products.csv", WOO_CSV, "text/csv")),
               ("notifyEmail", (None, value))],
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 422 and r.json()["error"]["code"] == "email_not_configured"
    assert_nothing_stored(kube, minio, fresh_tenant)
    assert upload(api, fresh_tenant, admin, notifyEmail="false").status_code == 202


@pytest.mark.parametrize(
    "value", ["nobody", "a,b@example.com", "Eve <eve@example.com>", "a@b@example.com",
              "x" * 250 + "@example.com"],
)  # fmt: skip
def test_not_one_address_is_422(api, kube, minio, admin, fresh_tenant, value):
    r = upload(api, fresh_tenant, admin, notifyEmail=value)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid"
    assert "notifyEmail" in error["message"] and "not one mail address" in error["message"]
    assert_nothing_stored(kube, minio, fresh_tenant)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "only https:// URLs"),
        ("HTTPS://hooks.example.com/x", "only https:// URLs"),
        ("ftp://hooks.example.com/x", "only https:// URLs"),
        ("hooks.example.com/x", "only https:// URLs"),
        ("https:///x", "no host"),
        ("https://user:secret@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/a b", "no spaces"),
        ("https://hooks.example.com:99999/", "not a URL"),
        ("https://127.0.0.1/hook", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://10.1.2.3:8443/", "not a public address"),
        ("https://[::ffff:127.0.0.1]/", "not a public address"),
        ("https://" + "h" * 2050 + ".example.com/", "at most 2048"),
    ],
)
def test_a_bad_webhook_is_422(api, kube, minio, admin, fresh_tenant, url, why):
    r = upload(api, fresh_tenant, admin, notifyWebhook=url)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] in ("invalid_webhook", "invalid"), error
    assert "notifyWebhook" in error["message"] and why in error["message"], error
    assert_nothing_stored(kube, minio, fresh_tenant)


# -- end to end: the mail arrives ------------------------------------------------------------


def test_notify_email_on_the_native_route_mails_the_address(api, cluster, kube, admin,
                                                            fresh_tenant):  # fmt: skip
    """This checkout's API, the dev environment's operator and SMTP server."""
    address = f"native-{uuid.uuid4().hex[:8]}@example.com"
    r = upload(api, fresh_tenant, admin, body=MAGENTO, preset="native", notifyEmail=address)
    assert r.status_code == 202, r.text
    name = r.json()["name"]
    msg = wait_for_mail(cluster, address, f"{fresh_tenant}/{name}")
    assert msg["To"] == address
    assert msg["Subject"] == f"ProductImport {fresh_tenant}/{name}: Succeeded"
    assert msg["X-ProductImport-Uid"] == r.json()["uid"]
    assert "  created    1994" in msg.get_content()
    assert f"/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports/{name}/errors" in (
        msg.get_content()
    )
