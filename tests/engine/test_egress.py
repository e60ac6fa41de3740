"""URL sources under the egress policy, against real HTTPS servers on this machine.

The servers listen on 127.0.0.1, which the policy refuses unless an administrator's rule
allows it: each test states the rule it runs under (PRODUCTIMPORT_EGRESS_ALLOW), the way
an administrator would, and trusts the servers' CA the way an administrator would
(SSL_CERT_FILE).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from devenv import pki as pki_mod
from devenv.waiting import wait_for
from productimport import egress
from tests.receivers import Receiver, body, endless, https_receiver, redirect, trickle

FEED = b"sku,name,price,currency\nA-1,Anvil,10.50,EUR\nB-2,Bucket,3.25,EUR\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> pki_mod.Pki:
    return pki_mod.ensure(tmp_path_factory.mktemp("pki"), "127.0.0.1", "test-node")


@pytest.fixture
def feeds(certs, monkeypatch) -> Iterator[Receiver]:
    """A feed server, allowed by an administrator's rule for its own port only; tests add
    routes to `feeds.routes`."""
    routes = {"/feed.csv": body(FEED)}
    with https_receiver(
        "127.0.0.1", 0, certs.cert("test-receiver"), certs.key("test-receiver"), routes
    ) as server:
        server.routes = routes  # type: ignore[attr-defined]
        rule = [{"cidr": "127.0.0.1/32", "ports": [server.port]}]
        monkeypatch.setenv("PRODUCTIMPORT_EGRESS_ALLOW", json.dumps(rule))
        monkeypatch.setenv("SSL_CERT_FILE", str(certs.ca_cert))
        yield server


def test_a_url_source_the_administrator_allows_is_imported(engine, feeds):
    result = engine.run(feeds.url("/feed.csv"))
    assert result.phase == "Succeeded", result.message
    assert set(engine.products()) == {"A-1", "B-2"}


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:1/feed.csv",  # loopback, on a port no rule allows
        "https://localhost:1/feed.csv",  # a name for loopback
        "https://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "https://10.96.0.1/api",  # a cluster Service address
        "https://[::ffff:127.0.0.1]:1/feed.csv",  # loopback written as IPv6
        "https://192.168.1.1/admin",
    ],
)
def test_private_loopback_and_link_local_addresses_are_refused(engine, feeds, url):
    result, code = engine.run_with_code(url)
    assert (result.phase, result.reason) == ("Failed", "SourceNotAllowed"), result.message
    assert "not a public address" in result.message
    assert code == 65  # permanent: the Job is not retried
    assert feeds.seen == []


def test_plain_http_is_refused_unless_allowed(engine, feeds, monkeypatch):
    url = feeds.url("/feed.csv").replace("https://", "http://")
    result = engine.run(url)
    assert result.reason == "SourceNotAllowed" and "only https" in result.message
    assert feeds.seen == []


def test_every_redirect_is_checked_like_the_first_url(engine, feeds):
    feeds.routes["/moved"] = redirect("https://169.254.169.254/latest/meta-data/iam")
    result = engine.run(feeds.url("/moved"))
    assert result.reason == "SourceNotAllowed" and "169.254.169.254" in result.message

    feeds.routes["/moved"] = redirect(feeds.url("/feed.csv").replace("https:", "http:"))
    assert engine.run(feeds.url("/moved")).reason == "SourceNotAllowed"

    feeds.routes["/moved"] = redirect("/feed.csv")  # allowed: followed
    assert engine.run(feeds.url("/moved")).phase == "Succeeded"
    assert [s.path for s in feeds.seen][-2:] == ["/moved", "/feed.csv"]


def test_a_download_over_the_byte_cap_fails_without_filling_the_disk(engine, feeds, monkeypatch):
    monkeypatch.setenv("PRODUCTIMPORT_EGRESS_SOURCE_MAX_BYTES", "100000")
    feeds.routes["/big.csv"] = body(FEED + b"C-3,Crate,1.00,EUR\n" * 20_000)
    result, code = engine.run_with_code(feeds.url("/big.csv"))
    assert (result.reason, code) == ("SourceTooLarge", 65), result.message

    # No Content-Length, and no end: the cap stops it all the same.
    feeds.routes["/endless.csv"] = endless(b"D-4,Drum,2.00,EUR\n" * 100)
    result = engine.run(feeds.url("/endless.csv"))
    assert result.reason == "SourceTooLarge", result.message
    assert "larger than 100000 bytes" in result.message


@pytest.mark.parametrize("headers_first", [True, False], ids=["body", "status-line"])
def test_a_server_that_trickles_bytes_is_cut_off_at_the_deadline(
    engine, feeds, monkeypatch, headers_first
):
    """One byte every 0.2 s never trips a per-read timeout; the overall deadline (1 s here)
    ends the download while the server still has bytes to send (it would go on for 60 s)."""
    monkeypatch.setenv("PRODUCTIMPORT_EGRESS_SOURCE_DEADLINE_SECONDS", "1")
    feeds.routes["/slow.csv"] = trickle(
        b"sku,name\n", every=0.2, for_at_most=60, headers_first=headers_first
    )
    result, code = engine.run_with_code(feeds.url("/slow.csv"))
    assert (result.reason, code) == ("SourceUnreachable", 75), result.message
    assert "deadline" in result.message
    # The server notices on its next write that the client has gone: the import did not
    # wait for it to finish.
    wait_for("the server to see the client leave", lambda: feeds.seen[-1].client_left, timeout=10)


def test_the_policy_checks_the_address_it_connects_to():
    rules = [egress.EgressRule(cidr="10.0.0.5/32", ports=[443])]
    allowed = egress.is_allowed
    assert allowed(_ip("10.0.0.5"), 443, rules)
    assert not allowed(_ip("10.0.0.5"), 80, rules)  # the rule names its port
    assert not allowed(_ip("10.0.0.6"), 443, rules)
    assert not allowed(_ip("100.64.0.1"), 443, [])  # shared address space (carrier NAT)
    assert not allowed(_ip("::1"), 443, [])
    assert not allowed(_ip("fd00::1"), 443, [])  # unique local
    assert not allowed(_ip("224.0.0.1"), 443, [])
    assert allowed(_ip("93.184.215.14"), 443, [])


def _ip(text: str) -> egress.IPAddress:
    import ipaddress

    return ipaddress.ip_address(text)


def test_the_operator_hands_its_policy_to_the_loader(monkeypatch):
    operator_side = egress.EgressSettings(
        allow=[egress.EgressRule(cidr="10.0.0.0/8", ports=[8443])], source_max_bytes=1234
    )
    for key, value in operator_side.environment().items():
        monkeypatch.setenv(key, value)
    loader_side = egress.EgressSettings()
    assert loader_side.allow == operator_side.allow
    assert loader_side.source_max_bytes == 1234
