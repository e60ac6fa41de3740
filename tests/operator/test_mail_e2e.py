"""Mail at the end of an import, end to end: kubectl apply -> Job -> status -> SMTP.

The dev operator (a host process, `make dev-up`) mails the dev environment's real SMTP
server (aiosmtpd, devenv/mailsink.py), which keeps each message as an .eml file under
.dev/mail; the loaders run on the dev cluster's real kubelet. Each test mails an address
of its own, so the messages of other tests and sessions never get in the way.
"""

from __future__ import annotations

import pytest
from imports_support import MAGENTO, apply, event_messages, finished, get, upload

from devenv import services
from devenv.waiting import wait_for
from tests.devmail import received, wait_for_mail

pytestmark = pytest.mark.cluster


def test_an_import_that_asks_for_mail_sends_it_when_it_ends(cluster, minio):
    ns = cluster.namespace("mail")
    to = f"{ns}@example.com"
    apply(cluster, "magento", ns, upload(minio, ns, MAGENTO), notify={"email": to})
    obj = finished(cluster, "magento", ns)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    msg = wait_for_mail(cluster, to)
    assert msg["To"] == to
    assert msg["From"].addresses[0].addr_spec == services.MAIL_SENDER
    assert msg["Subject"] == f"ProductImport {ns}/magento: Succeeded"
    assert msg["X-ProductImport-Uid"] == obj["metadata"]["uid"]
    text = msg.get_content()
    assert "  rows       1994" in text and "  created    1994" in text
    assert "  rejected      0" in text
    assert "Catalog version: 1" in text
    wait_for("EmailSent", lambda: ("EmailSent", f"the outcome was mailed to {to}")
             in event_messages(cluster, "magento", ns))  # fmt: skip
    assert len(received(cluster, to)) == 1  # once


def test_a_failed_imports_mail_has_its_first_errors_and_the_report(cluster, minio):
    ns = cluster.namespace("mail")
    to = f"{ns}@example.com"
    rows = ["sku,name,price,currency"] + [f"S{i},Name {i},-{i}.50,EUR" for i in range(1, 40)]
    source = upload(minio, ns, ("\n".join(rows) + "\n").encode())
    apply(cluster, "negative", ns, source, notify={"email": to})
    status = finished(cluster, "negative", ns)["status"]
    assert status["phase"] == "Failed" and status["reason"] == "ErrorPolicyExceeded", status
    msg = wait_for_mail(cluster, to)
    assert msg["Subject"] == f"ProductImport {ns}/negative: Failed (ErrorPolicyExceeded)"
    text = msg.get_content()
    first = status["errors"][0]
    assert first["code"] == "negative_price" and first["line"] == 2
    assert f"  line 2, column price: negative_price: {first['message']}" in text
    assert len([line for line in text.splitlines() if "negative_price" in line]) == len(
        status["errors"]
    )
    assert "  rejected   39" in text
    assert "Catalog version" not in text  # nothing was committed
    # Where the whole report is: the API's route (the dev API's URL) and the store.
    api = f"http://127.0.0.1:{cluster.devenv.layout.ports.api}"
    assert f"GET {api}/api/v1/namespaces/{ns}/catalogs/main/imports/negative/errors" in text
    assert f"in the store: {status['errorsRef']}" in text


def test_a_mail_server_that_is_down_leaves_email_failed_and_the_status_alone(cluster, minio):
    """The dev SMTP server stopped: three attempts, then a Warning Event; the import's
    status is what it would have been. The server is started again afterwards."""
    ns = cluster.namespace("mail")
    to = f"{ns}@example.com"
    env = cluster.devenv
    env.sup.stop("smtp")
    try:
        apply(cluster, "unheard", ns, upload(minio, ns, MAGENTO), notify={"email": to})
        obj = finished(cluster, "unheard", ns)

        def failed():
            found = [m for r, m in event_messages(cluster, "unheard", ns) if r == "EmailFailed"]
            return found[0] if found else None

        message = wait_for("EmailFailed", failed, timeout=120)
    finally:
        env.start(services.mail_server(env))
    assert message.startswith(f"the mail to {to} was not sent: 127.0.0.1:")
    assert "ConnectionRefusedError" in message
    status = get(cluster, "productimport", "unheard", ns)["status"]
    assert status == obj["status"]
    assert status["phase"] == "Succeeded" and status["counts"]["created"] == 1994
    reasons = [r for r, _ in event_messages(cluster, "unheard", ns)]
    assert "ImportSucceeded" in reasons and "EmailSent" not in reasons
    assert received(cluster, to) == []  # nothing arrives later either: at most once
