"""The dev environment's SMTP server: every message it accepts is kept as one .eml file.

`make dev-up` starts it (devenv/services.py) as `python -m devenv.mailsink --host
127.0.0.1 --port PORT --dir .dev/mail`, and points the dev operator at it, so the mail an
import asks for (spec.notify.email) really travels over SMTP and can be read afterwards:

    ls .dev/mail/            # 20261129T092840.123456Z-3f2a9c1e.eml, one file a message
    python -m email ...      # or any mail client: they are plain RFC 5322 messages

It is aiosmtpd, a real SMTP server (EHLO, MAIL, RCPT, DATA), on the loopback address:
the dev operator runs as a host process. It relays nothing and needs no login. Each file
starts with `Return-Path` and one `Delivered-To` per envelope recipient, as a delivering
mail server writes them, and appears whole (written aside, then renamed).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MailDirectory:
    """An aiosmtpd handler that stores each message in `directory` as NAME.eml."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", errors="surrogateescape")
        trace = [f"Return-Path: <{envelope.mail_from or ''}>"]
        trace += [f"Delivered-To: {rcpt}" for rcpt in envelope.rcpt_tos]
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(("\r\n".join(trace) + "\r\n").encode() + content)
        os.replace(partial, self.directory / name)
        return "250 Message accepted for delivery"


def serve(host: str, port: int, directory: Path) -> Controller:
    """Started in a thread of its own; `stop()` it."""
    controller = Controller(
        MailDirectory(directory), hostname=host, port=port, server_hostname="devenv-mail"
    )
    controller.start()
    return controller


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m devenv.mailsink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    controller = serve(args.host, args.port, args.dir)
    print(f"mailsink: listening on {args.host}:{args.port}, keeping messages in {args.dir}",
          flush=True)  # fmt: skip
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
