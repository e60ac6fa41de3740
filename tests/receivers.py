"""A real HTTPS server for tests: source feeds that redirect, trickle or run long, and
webhook receivers that record what they are sent.

Each route is a function of the request handler; the server runs in a thread and keeps
a log of what it saw (method, path, headers, body, and whether the client went away).
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_left: bool = False  # the client closed the connection before we were done


@dataclass
class Receiver:
    host: str
    port: int
    seen: list[Seen] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"https://{self.host}:{self.port}{path}"


@contextmanager
def https_receiver(
    host: str,
    port: int,
    cert: Path,
    key: Path,
    routes: dict[str, Route],
    # port 0 picks a free one
) -> Iterator[Receiver]:
    receiver = Receiver(host, port)

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, dict(self.headers), self.rfile.read(length))
            receiver.seen.append(seen)
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            try:
                route(self)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                seen.client_left = True

        do_GET = do_POST = _handle

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((host, port), Handler)
    receiver.port = server.server_address[1]  # port 0: whichever was free
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def body(data: bytes, status: int = 200, content_type: str = "text/csv") -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def redirect(location: str) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def trickle(first: bytes, every: float, for_at_most: float, headers_first: bool = True) -> Route:
    """Answer one byte every `every` seconds for up to `for_at_most` seconds (in the body,
    or, headers_first=False, in the status line itself): a server that would hold a
    client with a per-read timeout forever."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        if headers_first:
            handler.send_response(200)
            handler.send_header("Content-Type", "text/csv")
            handler.end_headers()
            handler.wfile.write(first)
        payload = b"x" * 10_000 if headers_first else b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 10_000
        ends = time.monotonic() + for_at_most
        for byte in payload:
            if time.monotonic() > ends:
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(every)

    return route


def endless(chunk: bytes) -> Route:
    """A body without Content-Length that never ends (until the client leaves)."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/csv")
        handler.end_headers()
        handler.close_connection = True
        while True:
            handler.wfile.write(chunk)

    return route


def status(code: int) -> Route:
    return body(b"", status=code, content_type="text/plain")
