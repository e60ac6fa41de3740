"""Outbound HTTP for URL sources (the loader) and webhooks (the operator), on a leash.

A ProductImport names a URL that a Pod of ours then fetches or posts to: without checks
that is a way into whatever that Pod can reach (the cloud's metadata service, the API
server, MinIO, other tenants' Services). Every connection made here:

- goes only to a public address, unless an administrator's rule allows the address
  (and port): the check happens on the resolved address at connect time, and the
  connection is made to the address that was checked, so DNS cannot answer differently
  between the check and the connect;
- uses https, unless an administrator allows plain http;
- follows at most a few redirects, each one checked like the first URL (GET only);
- ends by an overall deadline (a watchdog shuts the socket down, so a server that
  sends one byte every few seconds cannot hold it) and after a byte cap.

httpcore (httpx's transport) does the HTTP; this module only chooses where it may go.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
from pydantic import BaseModel, Field, IPvAnyNetwork
from pydantic_settings import BaseSettings, SettingsConfigDict

GiB = 1024**3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRule(BaseModel):
    """An administrator's exception: this network (and these ports; none means any) may
    be reached although it is not public."""

    cidr: IPvAnyNetwork
    ports: list[int] = Field(default_factory=list)

    def matches(self, address: IPAddress, port: int) -> bool:
        return address in self.cidr and (not self.ports or port in self.ports)


class EgressSettings(BaseSettings):
    """`PRODUCTIMPORT_EGRESS_*`: read by the operator, which hands them to its loaders."""

    model_config = SettingsConfigDict(env_prefix="PRODUCTIMPORT_EGRESS_", extra="ignore")

    # JSON: [{"cidr": "10.20.0.5/32", "ports": [443]}]
    allow: list[EgressRule] = Field(default_factory=list)
    allow_http: bool = False
    max_redirects: int = 5
    # URL sources: the whole download, and its size.
    source_deadline_seconds: float = 3600
    source_max_bytes: int = 10 * GiB
    # Webhooks: one delivery attempt, from connect to the answer's status line.
    webhook_deadline_seconds: float = 10

    def environment(self) -> dict[str, str]:
        """These settings as the variables a loader reads them from."""
        return {
            "PRODUCTIMPORT_EGRESS_ALLOW": json.dumps(
                [r.model_dump(mode="json") for r in self.allow]
            ),
            "PRODUCTIMPORT_EGRESS_ALLOW_HTTP": str(self.allow_http).lower(),
            "PRODUCTIMPORT_EGRESS_MAX_REDIRECTS": str(self.max_redirects),
            "PRODUCTIMPORT_EGRESS_SOURCE_DEADLINE_SECONDS": str(self.source_deadline_seconds),
            "PRODUCTIMPORT_EGRESS_SOURCE_MAX_BYTES": str(self.source_max_bytes),
        }


class EgressError(Exception):
    """An outbound request that did not complete; the message is for the user."""


class Refused(EgressError):
    """The policy refuses the destination (scheme, address or redirect)."""


class TooLarge(EgressError):
    pass


class DeadlineExceeded(EgressError):
    pass


class Unreachable(EgressError):
    """Connection, TLS or protocol failure: worth retrying."""


def is_allowed(address: IPAddress, port: int, rules: list[EgressRule]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(rule.matches(address, port) for rule in rules):
        return True
    # is_global is False for loopback, link-local (169.254.169.254), private, shared
    # (100.64/10), documentation and reserved ranges.
    return address.is_global and not address.is_multicast


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves the host itself and connects only to an address the policy allows; the
    sockets it opens are handed to the current request's budget (for its watchdog)."""

    def __init__(self, rules: list[EgressRule]) -> None:
        self._rules = rules
        self.current = threading.local()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Unreachable(f"cannot resolve {host}: {exc}") from exc
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        allowed = [a for a in addresses if is_allowed(a, port, self._rules)]
        if not allowed:
            shown = ", ".join(sorted({str(a) for a in addresses}))
            raise Refused(
                f"{host} is {shown}, not a public address; an administrator can allow it "
                "(egress.allow in the chart's values)"
            )
        stream = super().connect_tcp(str(allowed[0]), port, timeout, local_address, socket_options)
        budget: _Budget | None = getattr(self.current, "budget", None)
        return stream if budget is None else _WatchedStream(stream, budget)


class _WatchedStream(httpcore.NetworkStream):
    """Hands the budget the socket the request really reads from: TLS wraps the TCP
    socket into a new object (the old one is detached), so it is registered again."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self._inner = inner
        self._budget = budget
        budget.watch(inner.get_extra_info("socket"))

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _WatchedStream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._budget
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _ssl_context() -> ssl.SSLContext:
    # SSL_CERT_FILE lets an administrator trust an internal CA (mounted into the Pod).
    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile)


@dataclass
class Answer:
    status: int
    reason: str
    url: str  # after redirects
    _stream: httpcore.Response
    _limits: _Budget

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, within the byte cap and the deadline."""
        for chunk in self._stream.iter_stream():
            self._limits.spend(len(chunk))
            yield chunk
        self._limits.check_time()


@dataclass
class _Budget:
    """A request's deadline and byte cap. At the deadline the watchdog shuts down every
    socket the request opened, so a read blocked on a server that trickles bytes (into
    the headers or the body) returns at once rather than after the next byte."""

    deadline: float  # time.monotonic()
    max_bytes: int
    what: str
    seen: int = 0
    expired: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _timer: threading.Timer | None = None

    def start(self) -> None:
        self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        if sock is not None:
            self._sockets.append(sock)
            if self.expired.is_set():
                self._expire()

    def _expire(self) -> None:
        self.expired.set()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired.set()
        self.check_time()
        return left

    def check_time(self) -> None:
        if self.expired.is_set() or time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"{self.what} did not complete within its deadline")

    def spend(self, n: int) -> None:
        self.check_time()
        self.seen += n
        if self.seen > self.max_bytes:
            raise TooLarge(f"{self.what} is larger than {self.max_bytes} bytes")


class Client:
    """Outbound requests under one policy; reuse it (it pools connections)."""

    def __init__(self, settings: EgressSettings | None = None) -> None:
        self.settings = settings or EgressSettings()
        self._backend = _GuardedBackend(self.settings.allow)
        # No keep-alive: every request connects anew, so its watchdog knows its socket.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            network_backend=self._backend,
            max_keepalive_connections=0,
            retries=0,
        )

    def close(self) -> None:
        self._pool.close()

    def check_url(self, url: str) -> None:
        """Refuse a URL whose scheme the policy does not allow (addresses are checked when
        connecting)."""
        parts = urlsplit(url)
        schemes = ("https", "http") if self.settings.allow_http else ("https",)
        if parts.scheme not in schemes:
            only = " or ".join(schemes)
            raise Refused(f"{url}: only {only} URLs are allowed")
        if not parts.hostname:
            raise Refused(f"{url}: no host")

    @contextlib.contextmanager
    def request(
        self,
        method: str,
        url: str,
        *,
        deadline_seconds: float,
        max_bytes: int,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        read_timeout: float = 30.0,
    ) -> Iterator[Answer]:
        """Send one request (GET follows redirects, each checked); the answer's body is
        read within the deadline and the byte cap."""
        budget = _Budget(time.monotonic() + deadline_seconds, max_bytes, url)
        self._backend.current.budget = budget
        budget.start()
        try:
            yield from self._follow(method, url, budget, body, headers or {}, read_timeout)
        finally:
            budget.stop()
            self._backend.current.budget = None

    def _follow(
        self,
        method: str,
        url: str,
        budget: _Budget,
        body: bytes | None,
        headers: dict[str, str],
        read_timeout: float,
    ) -> Iterator[Answer]:
        redirects = 0
        while True:
            self.check_url(url)
            timeout = min(read_timeout, budget.remaining())
            phases = dict.fromkeys(("connect", "read", "write", "pool"), timeout)
            try:
                with self._pool.stream(
                    method,
                    url,
                    headers=list(headers.items()),
                    content=body,
                    extensions={"timeout": phases},
                ) as response:
                    location = _header(response, "location")
                    if method == "GET" and 300 <= response.status < 400 and location:
                        redirects += 1
                        if redirects > self.settings.max_redirects:
                            raise Refused(
                                f"{url}: more than {self.settings.max_redirects} redirects"
                            )
                        url = urljoin(url, location)
                        continue
                    length = _header(response, "content-length")
                    if length and length.isdigit() and int(length) > budget.max_bytes:
                        raise TooLarge(f"{url} is {length} bytes, more than {budget.max_bytes}")
                    yield Answer(
                        status=response.status,
                        reason=response.extensions.get("reason_phrase", b"").decode("latin-1"),
                        url=url,
                        _stream=response,
                        _limits=budget,
                    )
                    return
            except httpcore.TimeoutException as exc:
                budget.check_time()
                raise Unreachable(f"{url} timed out ({exc or 'no answer'})") from exc
            except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
                budget.check_time()  # the watchdog shut the socket: say so
                raise Unreachable(f"{url} is unreachable: {exc}") from exc
            except httpcore.UnsupportedProtocol as exc:
                raise Refused(f"{url}: {exc}") from exc


def _header(response: httpcore.Response, name: str) -> str | None:
    wanted = name.encode()
    for key, value in response.headers:
        if key.lower() == wanted:
            return value.decode("latin-1")
    return None
