"""The mail the dev environment's SMTP server received (devenv/mailsink.py: one .eml file a
message under .dev/mail), for the tests that follow a message from an import to there."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

from devenv import services
from devenv.waiting import wait_for


def mail_dir(cluster) -> Path:
    return services.mail_dir(cluster.devenv)


def received(cluster, to: str, subject_has: str = "") -> list[EmailMessage]:
    """Every message delivered to `to` (its envelope recipient) whose subject contains
    `subject_has`, oldest first."""
    found = []
    for path in sorted(mail_dir(cluster).glob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if to in msg.get_all("Delivered-To", []) and subject_has in (msg["Subject"] or ""):
            found.append(msg)
    return found


def wait_for_mail(cluster, to: str, subject_has: str = "", timeout: float = 120) -> EmailMessage:
    return wait_for(
        f"a mail to {to} ({subject_has!r}) in {mail_dir(cluster)}",
        lambda: next(iter(received(cluster, to, subject_has)), None),
        timeout=timeout,
    )
