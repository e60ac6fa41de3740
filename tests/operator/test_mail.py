"""Mail at the end of an import (operator/mail.py) against a real SMTP server.

Each test starts aiosmtpd on 127.0.0.1 in its own thread (the dev environment's server,
devenv/mailsink.py, where a message is kept), with STARTTLS and a login where the test
needs them, and refusals where it needs those. The reconciler tests run the real
Reconciler over the decision tests' in-memory API server (test_decisions.World) with a
real Mailer: the Events it records and the status it leaves are what the operator's.
No cluster.
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from test_decisions import NS, World

from devenv import pki as pki_mod
from devenv.mailsink import MailDirectory
from productimport.models.product import ErrorRecord, ImportCounts
from productimport.operator import mail
from productimport.operator.mail import Mailer
from productimport.operator.settings import OperatorSettings

SENDER = "productimport@example.com"
TO = "shop-owner@example.com"
UID = "0b6c3f0e-1d2a-4c4e-9a53-0f6a1f2b3c4d"
ERRORS_REF = f"s3://catalog/shop-a/main/imports/{UID}/errors.csv"


def the_import(name: str = "spring", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "name": name, "uid": UID},
        "spec": {"catalog": "main", "notify": {"email": TO}, **spec},
    }


SUCCEEDED = {
    "phase": "Succeeded",
    "reason": "ImportSucceeded",
    "message": "1994 rows: 1994 created",
    "counts": {"rows": 1994, "created": 1994, "updated": 0, "unchanged": 0, "deleted": 0,
               "rejected": 0},
    "catalogVersion": 3,
    "completionTime": "2026-11-29T09:28:40Z",
}  # fmt: skip
FAILED = {
    "phase": "Failed",
    "reason": "ErrorPolicyExceeded",
    "message": "39 of 39 rows rejected",
    "counts": {"rows": 39, "created": 0, "updated": 0, "unchanged": 0, "deleted": 0,
               "rejected": 39},
    "errors": [
        {"line": 2, "column": "price", "code": "negative_price",
         "message": "price must not be negative", "value": "-1.50"},
        {"line": 3, "code": "duplicate_sku", "message": "sku S2 appears twice"},
    ],
    "errorsRef": ERRORS_REF,
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sink(MailDirectory):
    """The dev server's handler, counting the dialogue and refusing on demand."""

    def __init__(self, directory: Path, refuse: Callable[[int], str | None] = lambda n: None):
        super().__init__(directory)
        self.refuse = refuse
        self.ehlos = 0
        self.rcpts = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlos += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpts += 1
        answer = self.refuse(self.rcpts)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(self.directory.glob("*.eml"))
        ]


@contextmanager
def smtp_server(handler: Sink, **options: Any) -> Iterator[int]:
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


def settings(port: int, **overrides: Any) -> OperatorSettings:
    values: dict[str, Any] = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "smtp_sender": SENDER,
        "smtp_timeout_seconds": 5,
        **overrides,
    }
    return OperatorSettings(**values)


class Outcomes:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed: list[tuple[str, str]] = []

    def mailer(self, s: OperatorSettings, **options: Any) -> Mailer:
        options.setdefault("backoff_seconds", 0.01)
        return Mailer(
            s,
            lambda obj, to, why: self.failed.append((to, why)),
            lambda obj, to: self.sent.append(to),
            **options,
        )


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- the message ---------------------------------------------------------------------------


def test_the_message_names_the_import_and_phase_and_gives_the_counts():
    msg = mail.compose(the_import(), SUCCEEDED, sender=SENDER, to=TO)
    assert msg["Subject"] == f"ProductImport {NS}/spring: Succeeded"
    assert msg["To"] == TO and SENDER in msg["From"]
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"] == f"<{UID}.succeeded@example.com>"
    text = msg.get_content()
    assert "has ended: Succeeded" in text and "catalog main" in text
    assert "  rows       1994" in text and "  created    1994" in text
    assert "  rejected      0" in text
    assert "Catalog version: 3" in text
    assert "error report" not in text  # nothing rejected, no report to point at


def test_a_failed_import_mail_has_the_first_errors_and_where_the_report_is():
    msg = mail.compose(
        the_import(), FAILED, sender=SENDER, to=TO, api_url="https://imports.example.com/"
    )
    assert msg["Subject"] == f"ProductImport {NS}/spring: Failed (ErrorPolicyExceeded)"
    text = msg.get_content()
    assert "Reason:   ErrorPolicyExceeded" in text
    assert "  rejected   39" in text
    assert (
        '  line 2, column price: negative_price: price must not be negative (value "-1.50")' in text
    )
    assert "  line 3: duplicate_sku: sku S2 appears twice" in text
    assert (
        f"GET https://imports.example.com/api/v1/namespaces/{NS}/catalogs/main/imports/spring/errors"
        in text
    )
    assert f"in the store: {ERRORS_REF}" in text
    # Without the API's public URL: its path, said to be the upload API's.
    text = mail.compose(the_import(), FAILED, sender=SENDER, to=TO).get_content()
    assert f"GET /api/v1/namespaces/{NS}/catalogs/main/imports/spring/errors on the upload" in text


def test_the_models_of_the_status_read_as_the_message_expects():
    """status.errors and status.counts are the engine's models, dumped as _finish does."""
    error = ErrorRecord(line=7, column="sku", code="missing_sku", message="sku is empty")
    status = {
        **FAILED,
        "counts": ImportCounts(rows=9, created=8, rejected=1).model_dump(),
        "errors": [error.model_dump(exclude_none=True)],
    }
    text = mail.body(the_import(), status)
    assert "  line 7, column sku: missing_sku: sku is empty" in text
    assert "  created    8" in text and "  rejected   1" in text


def test_an_infrastructure_failure_without_counts_still_says_what_happened():
    status = {"phase": "Failed", "reason": "OutOfMemory", "message": "the loader was killed"}
    text = mail.body(the_import(), status)
    assert "Reason:   OutOfMemory" in text and "none: the import ended before" in text


@pytest.mark.parametrize(
    "address", ["a,b@example.com", "Eve <eve@example.com>", "x@exa mple.com", "a@"]
)
def test_only_one_plain_address_is_a_recipient(address):
    with pytest.raises(ValueError, match="not one mail address"):
        mail.recipient(address)


# -- delivery --------------------------------------------------------------------------------


def test_a_message_travels_over_smtp_and_arrives_whole(tmp_path):
    sink = Sink(tmp_path / "mail")
    outcomes = Outcomes()
    with smtp_server(sink) as port:
        mailer = outcomes.mailer(settings(port))
        assert mailer.submit(TO, the_import(), FAILED).result(timeout=30) is True
    (msg,) = sink.messages()
    assert msg["Delivered-To"] == TO and msg["Return-Path"] == f"<{SENDER}>"
    assert msg["To"] == TO
    assert msg["Subject"] == f"ProductImport {NS}/spring: Failed (ErrorPolicyExceeded)"
    assert "negative_price" in msg.get_content()
    assert outcomes.sent == [TO] and outcomes.failed == []


def test_starttls_and_login_protect_the_password(tmp_path):
    pki = pki_mod.ensure(tmp_path / "pki", "127.0.0.1", "mailhost")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.cert("test-receiver"), pki.key("test-receiver"))
    client_tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        logins.append((auth_data.login, auth_data.password))
        # handled=False: aiosmtpd answers a refusal with 535 itself.
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    sink = Sink(tmp_path / "mail")
    outcomes = Outcomes()
    options = {
        "tls_context": server_tls,
        "require_starttls": True,
        "authenticator": authenticator,
        "auth_require_tls": True,
    }
    with smtp_server(sink, **options) as port:
        good = settings(port, smtp_starttls=True, smtp_username="mailer", smtp_password="s3cret")
        mailer = outcomes.mailer(good, tls_context=client_tls)
        assert mailer.submit(TO, the_import(), SUCCEEDED).result(timeout=30)
        # A wrong password is refused for good (535): one attempt, then EmailFailed.
        bad = settings(port, smtp_starttls=True, smtp_username="mailer", smtp_password="nope")
        ehlos = sink.ehlos
        assert (
            not outcomes.mailer(bad, tls_context=client_tls)
            .submit(TO, the_import(), SUCCEEDED)
            .result(timeout=30)
        )
        assert sink.ehlos == ehlos + 2  # one connection: EHLO, STARTTLS, EHLO, AUTH, QUIT
        # The server's certificate is checked: an unknown CA is refused, nothing is sent.
        untrusted = outcomes.mailer(good, tls_context=ssl.create_default_context())
        assert not untrusted.submit(TO, the_import(), SUCCEEDED).result(timeout=30)
    assert logins[0] == (b"mailer", b"s3cret")
    assert len(sink.messages()) == 1
    assert outcomes.sent == [TO]
    (_, wrong_password), (_, unknown_ca) = outcomes.failed
    assert "535" in wrong_password
    assert "CERTIFICATE_VERIFY_FAILED" in unknown_ca or "certificate" in unknown_ca


def test_starttls_is_required_unless_turned_off(tmp_path):
    """A server without STARTTLS: the message is not sent in clear, nor tried again."""
    sink = Sink(tmp_path / "mail")
    outcomes = Outcomes()
    with smtp_server(sink) as port:
        mailer = outcomes.mailer(settings(port, smtp_starttls=True))
        assert mailer.submit(TO, the_import(), SUCCEEDED).result(timeout=30) is False
    assert sink.messages() == [] and sink.ehlos == 1
    ((to, why),) = outcomes.failed
    assert to == TO and "STARTTLS" in why


def test_a_refused_recipient_is_not_tried_again(tmp_path):
    sink = Sink(tmp_path / "mail", refuse=lambda n: "550 5.1.1 no such mailbox")
    outcomes = Outcomes()
    with smtp_server(sink) as port:
        assert not outcomes.mailer(settings(port)).submit(TO, the_import(), FAILED).result(30)
    assert sink.rcpts == 1 and sink.messages() == []
    ((_, why),) = outcomes.failed
    assert "550" in why and "no such mailbox" in why and TO in why


def test_a_temporary_refusal_is_tried_again(tmp_path):
    sink = Sink(tmp_path / "mail", refuse=lambda n: "451 4.3.0 try later" if n == 1 else None)
    outcomes = Outcomes()
    with smtp_server(sink) as port:
        assert outcomes.mailer(settings(port)).submit(TO, the_import(), FAILED).result(30)
    assert sink.rcpts == 2 and len(sink.messages()) == 1
    assert outcomes.sent == [TO] and outcomes.failed == []


def test_an_address_a_header_would_read_as_a_list_is_never_sent(tmp_path):
    sink = Sink(tmp_path / "mail")
    outcomes = Outcomes()
    with smtp_server(sink) as port:
        mailer = outcomes.mailer(settings(port))
        assert not mailer.submit("a,b@example.com", the_import(), FAILED).result(30)
    assert sink.ehlos == 0
    ((_, why),) = outcomes.failed
    assert "not one mail address" in why


# -- from the reconciler -----------------------------------------------------------------------


def _finished_import(world: World, name: str, **spec: Any) -> dict[str, Any]:
    world.apply(name, **spec)
    world.reconcile(name)
    world.kube.complete(NS, world.job(name))
    world.write_result(name)
    world.reconcile(name)
    status = world.status(name)
    assert status["phase"] == "Succeeded", status
    return status


def _events(world: World, name: str) -> list[dict[str, Any]]:
    return [e for e in world.kube.events if e["name"] == name]


def _configure(world: World, port: int) -> None:
    world.settings.smtp_host = "127.0.0.1"
    world.settings.smtp_port = port
    world.settings.smtp_starttls = False
    world.settings.smtp_sender = SENDER
    world.reconciler.mailer = Mailer.with_events(world.settings, world.kube, backoff_seconds=0.01)


def test_the_reconciler_mails_once_when_an_import_ends(tmp_path):
    world = World(tmp_path / "store")
    sink = Sink(tmp_path / "mail")
    with smtp_server(sink) as port:
        _configure(world, port)
        _finished_import(world, "quiet")
        status = _finished_import(world, "mailed", notify={"email": TO})
        wait_until("EmailSent", lambda: any(
            e["reason"] == "EmailSent" for e in _events(world, "mailed")))  # fmt: skip
        world.reconcile("mailed")  # a terminal import: nothing more, no second message
        time.sleep(0.2)
    (msg,) = sink.messages()
    assert msg["To"] == TO and msg["Subject"] == f"ProductImport {NS}/mailed: Succeeded"
    assert "  created    1994" in msg.get_content()
    assert world.status("mailed") == status
    assert not [e for e in _events(world, "quiet") if e["reason"].startswith("Email")]


def test_a_mail_server_that_refuses_leaves_email_failed_and_the_status_alone(tmp_path):
    world = World(tmp_path / "store")
    _configure(world, free_port())  # nothing listens there: connection refused
    status = _finished_import(world, "unheard", notify={"email": TO})
    event = wait_until("EmailFailed", lambda: next(
        (e for e in _events(world, "unheard") if e["reason"] == "EmailFailed"), None))  # fmt: skip
    assert event["type"] == "Warning"
    assert TO in event["message"] and "ConnectionRefusedError" in event["message"]
    assert world.status("unheard") == status
    assert _events(world, "unheard")[-2]["reason"] == "ImportSucceeded"


def test_without_an_smtp_server_the_import_says_no_mail_was_sent(tmp_path):
    world = World(tmp_path / "store")
    assert not world.settings.smtp_host
    status = _finished_import(world, "asked", notify={"email": TO})
    (event,) = [e for e in _events(world, "asked") if e["reason"].startswith("Email")]
    assert event["type"] == "Warning" and event["reason"] == "EmailNotConfigured"
    assert TO in event["message"] and "SMTP" in event["message"]
    assert world.status("asked") == status
