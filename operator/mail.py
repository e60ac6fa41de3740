"""Mail at the end of an import (spec.notify.email): one message after the terminal status.

The same contract as the webhook (notify.py): the status is written first, then the
message is handed to a small pool of threads, so a slow or unreachable mail server
delays only its own message, never the reconciler or its catalog's queue; a crash in
between loses the message rather than sending a second one. Each message is tried at
most ATTEMPTS times with a growing pause; a refusal the server calls permanent (5xx: an
unknown recipient, a bad password) is not tried again. The outcome is an Event on the
ProductImport: `EmailSent`, or `EmailFailed` saying why. Without an SMTP server
(PRODUCTIMPORT_OPERATOR_SMTP_HOST unset) nothing is sent and the import records
`EmailNotConfigured`: asking for mail is never silently ignored.

The message is plain text: the import, its phase and reason, the counts, the first
errors (status.errors) and where the full report is (status.errorsRef, and the API path
that serves it).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from productimport.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

ATTEMPTS = 3
EMAIL_SENT, EMAIL_FAILED, EMAIL_NOT_CONFIGURED = "EmailSent", "EmailFailed", "EmailNotConfigured"
COUNT_NAMES = ("rows", "created", "updated", "unchanged", "deleted", "rejected")
# A rejected value from the file is shown up to this many characters.
VALUE_CHARS = 120


class Permanent(Exception):
    """A refusal that another attempt would meet again."""


def recipient(address: str) -> Address:
    """The one mailbox `address` names, or ValueError. The CRD's pattern lets through
    text that a mail header would read as several addresses (`a,b@example.com`) or as a
    display name; only a plain addr-spec that reads back as itself is accepted."""
    try:
        parsed = Address(addr_spec=address)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"{address!r} is not one mail address: {exc}") from exc
    if parsed.addr_spec != address or not parsed.username or not parsed.domain:
        raise ValueError(f"{address!r} is not one mail address")
    return parsed


def _printable(text: Any, limit: int) -> str:
    value = "".join(c if c.isprintable() else " " for c in str(text))
    return value if len(value) <= limit else value[: limit - 1] + "…"


def errors_path(obj: dict[str, Any]) -> str:
    """The upload API's route that serves an import's full error report (docs/api.md)."""
    meta = obj["metadata"]
    return (
        f"/api/v1/namespaces/{meta['namespace']}/catalogs/{obj['spec']['catalog']}"
        f"/imports/{meta['name']}/errors"
    )


def subject(obj: dict[str, Any], status: dict[str, Any]) -> str:
    meta = obj["metadata"]
    phase = status.get("phase") or "Ended"
    text = f"ProductImport {meta['namespace']}/{meta['name']}: {phase}"
    if phase != "Succeeded" and status.get("reason"):
        text += f" ({status['reason']})"
    return text


def body(obj: dict[str, Any], status: dict[str, Any], api_url: str | None = None) -> str:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    phase = status.get("phase") or "Ended"
    lines = [
        f"ProductImport {meta['namespace']}/{meta['name']} (catalog {spec.get('catalog')}) "
        f"has ended: {phase}.",
        "",
        f"Reason:   {status.get('reason') or '-'}",
        f"Message:  {_printable(status.get('message') or '-', 900)}",
    ]
    if status.get("completionTime"):
        lines.append(f"Finished: {status['completionTime']}")
    if phase == "Succeeded" and status.get("catalogVersion") is not None:
        lines.append(f"Catalog version: {status['catalogVersion']}")
    if spec.get("dryRun"):
        lines.append("Dry run: nothing was committed to the catalog.")
    counts = status.get("counts")
    lines += ["", "Counts"]
    if counts:
        width = max(len(str(counts.get(k, 0))) for k in COUNT_NAMES)
        lines += [f"  {k:<10} {counts.get(k, 0):>{width}}" for k in COUNT_NAMES]
    else:
        lines.append("  none: the import ended before the loader counted any rows")
    errors = status.get("errors") or []
    if errors:
        more = "; the full report below has them all" if status.get("errorsRef") else ""
        lines += ["", f"First errors ({len(errors)} shown{more})"]
        for err in errors:
            where = ", ".join(
                part
                for part in (
                    f"line {err['line']}" if err.get("line") is not None else "",
                    f"column {err['column']}" if err.get("column") else "",
                )
                if part
            )
            text = f"{err.get('code')}: {_printable(err.get('message', ''), 500)}"
            if err.get("value") is not None:
                text += f' (value "{_printable(err["value"], VALUE_CHARS)}")'
            lines.append(f"  {where + ': ' if where else ''}{text}")
    if status.get("errorsRef"):
        path = errors_path(obj)
        url = f"{api_url.rstrip('/')}{path}" if api_url else f"{path} on the upload API"
        lines += [
            "",
            "The full error report (every rejected row)",
            f"  GET {url}",
            "    (CSV; JSON with Accept: application/json)",
            f"  in the store: {status['errorsRef']}",
        ]
    lines += [
        "",
        "-- ",
        "Sent by the productimport operator: the ProductImport's spec.notify.email asks "
        "for this message.",
        f"kubectl describe productimport -n {meta['namespace']} {meta['name']}",
    ]
    return "\n".join(lines) + "\n"


def compose(
    obj: dict[str, Any],
    status: dict[str, Any],
    *,
    sender: str,
    to: str,
    api_url: str | None = None,
) -> EmailMessage:
    meta = obj["metadata"]
    message = EmailMessage()
    message["From"] = Address("productimport", addr_spec=sender)
    message["To"] = recipient(to)
    message["Subject"] = subject(obj, status)
    message["Date"] = formatdate(usegmt=True)
    # The same id on every attempt, so a server that saw one attempt through can drop
    # the next as a duplicate.
    domain = sender.rpartition("@")[2] or "productimport"
    message["Message-ID"] = f"<{meta['uid']}.{(status.get('phase') or 'ended').lower()}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    message["X-ProductImport"] = f"{meta['namespace']}/{meta['name']}"
    message["X-ProductImport-Uid"] = meta["uid"]
    text = body(obj, status, api_url)
    # Plain 7bit where it can be (every line is far below SMTP's 998): readable as it lies.
    message.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return message


def _text(answer: bytes | str) -> str:
    return answer.decode(errors="replace") if isinstance(answer, bytes) else str(answer)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{a}: {code} {_text(answer)}" for a, (code, answer) in exc.recipients.items()]
        return "the server refused the recipient " + "; ".join(parts)
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{type(exc).__name__}: {exc.smtp_code} {_text(exc.smtp_error)}".strip()
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _permanent(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(code >= 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code >= 500
    # No STARTTLS, or no AUTH, on offer; a certificate that does not verify: each a
    # matter of configuration, the same on every attempt.
    return isinstance(exc, smtplib.SMTPNotSupportedError | ssl.SSLCertVerificationError)


class Mailer:
    """Sends outcome mails in the background; `sent` and `failed` hear how each ended."""

    def __init__(
        self,
        settings: OperatorSettings,
        failed: Callable[[dict[str, Any], str, str], None],
        sent: Callable[[dict[str, Any], str], None] | None = None,
        *,
        workers: int = 2,
        backoff_seconds: float = 2.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if not settings.smtp_host:
            raise ValueError("no SMTP server: set PRODUCTIMPORT_OPERATOR_SMTP_HOST")
        self.settings = settings
        self._failed = failed
        self._sent = sent
        self._backoff = backoff_seconds
        self._tls = tls_context
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mail")

    @classmethod
    def with_events(cls, settings: OperatorSettings, kube: Any, **options: Any) -> Mailer:
        """A Mailer that tells each outcome as an Event on the ProductImport."""

        def failed(obj: dict[str, Any], to: str, why: str) -> None:
            kube.event(obj, "Warning", EMAIL_FAILED, f"the mail to {to} was not sent: {why}")

        def sent(obj: dict[str, Any], to: str) -> None:
            kube.event(obj, "Normal", EMAIL_SENT, f"the outcome was mailed to {to}")

        return cls(settings, failed, sent, **options)

    @property
    def server(self) -> str:
        return f"{self.settings.smtp_host}:{self.settings.smtp_port}"

    def submit(self, to: str, obj: dict[str, Any], status: dict[str, Any]) -> Future[bool]:
        return self._pool.submit(self._deliver, to, obj, status)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, to: str, obj: dict[str, Any], status: dict[str, Any]) -> bool:
        s = self.settings
        name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        try:
            message = compose(obj, status, sender=s.smtp_sender, to=to, api_url=s.api_url)
        except ValueError as exc:  # the address, or the configured sender
            return self._give_up(obj, to, str(exc))
        why = "no attempt was made"
        for attempt in range(1, ATTEMPTS + 1):
            try:
                self._send(message, to)
            except (smtplib.SMTPException, OSError) as exc:
                why = f"{self.server}: {_describe(exc)}"
                if _permanent(exc):
                    break
                log.warning("mail for %s to %s, attempt %d failed: %s", name, to, attempt, why)
                if attempt < ATTEMPTS:
                    time.sleep(self._backoff * attempt)
                continue
            log.info("mailed the outcome of %s to %s", name, to)
            if self._sent is not None:
                self._sent(obj, to)
            return True
        return self._give_up(obj, to, why)

    def _give_up(self, obj: dict[str, Any], to: str, why: str) -> bool:
        log.warning("mail for %s/%s to %s not sent: %s", obj["metadata"]["namespace"],
                    obj["metadata"]["name"], to, why)  # fmt: skip
        self._failed(obj, to, why)
        return False

    def _send(self, message: EmailMessage, to: str) -> None:
        s = self.settings
        # gethostname, not smtplib's default getfqdn: no DNS lookup before each message.
        with smtplib.SMTP(
            s.smtp_host, s.smtp_port, local_hostname=socket.gethostname(),
            timeout=s.smtp_timeout_seconds,
        ) as smtp:  # fmt: skip
            smtp.ehlo()
            if s.smtp_starttls:
                # Raises SMTPNotSupportedError when the server offers no STARTTLS: never
                # fall back to sending the password and the message in clear.
                smtp.starttls(context=self._tls or ssl.create_default_context())
                smtp.ehlo()
            if s.smtp_username:
                password = s.smtp_password.get_secret_value() if s.smtp_password else ""
                smtp.login(s.smtp_username, password)
            smtp.send_message(message, from_addr=s.smtp_sender, to_addrs=[to])
