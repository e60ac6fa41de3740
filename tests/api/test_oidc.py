"""Bearer tokens from an OpenID Connect issuer: verified by the API against the issuer's
published keys, authorized by the cluster's RBAC (SubjectAccessReview).

The issuer is real: an https server on 127.0.0.1 (its own CA, given to the API as
oidc_ca_file) serving a discovery document and a JWKS of keys this module generates.
The API runs in kubernetes auth mode against the dev kube-apiserver, so RoleBindings the
tests create decide what each OIDC user may do."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from api_testdata import DATA
from apiserver import RunningApi, start_api
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from productimport.api import oidc
from productimport.api.settings import ApiSettings
from productimport.models.resource import GROUP, PLURAL

CSV = (DATA / "elasticpath-pcm" / "pim_product_import_example.csv").read_bytes()
AUDIENCE = "productimport-cli"
PREFIX = "oidc:"


# --- the identity provider -----------------------------------------------------------


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a serving certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "tls.crt", directory / "tls.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class Issuer:
    """An OpenID Connect issuer at https://127.0.0.1:PORT/dex (a path, as Dex and
    Keycloak have one) that signs the tests' tokens."""

    def __init__(self, directory: Path) -> None:
        self.ca_file, cert, key = _tls_files(directory)
        self.keys: dict[str, tuple[Any, str]] = {
            "rsa-1": (_rsa(), "RS256"),
            "ec-1": (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        }
        self.published = ["rsa-1", "ec-1"]
        self.hits: Counter[str] = Counter()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.hits[self.path] += 1
                if self.path == "/dex/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/keys",
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    }
                elif self.path == "/dex/keys":
                    body = {
                        "keys": [
                            _jwk(issuer.keys[kid][0], kid, issuer.keys[kid][1])
                            for kid in list(issuer.published)
                        ]
                    }
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/dex"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def key_fetches(self) -> int:
        return self.hits["/dex/keys"]

    def token(
        self,
        sub: str,
        *,
        kid: str = "rsa-1",
        key: Any = None,
        expires_in: int = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,  # every token different (the failure cache)
            **claims,
        }
        signing_key, alg = self.keys.get(kid, (None, "RS256"))
        return jwt.encode(payload, key or signing_key, algorithm=alg, headers={"kid": kid})

    def add_key(self, kid: str) -> None:
        self.keys[kid] = (_rsa(), "RS256")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> Iterator[Issuer]:
    running = Issuer(tmp_path_factory.mktemp("issuer"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def oidc_api(api_settings, issuer) -> Iterator[RunningApi]:
    running = start_api(
        api_settings(
            auth_mode="kubernetes",
            token_audiences="productimport",
            oidc_issuer_url=issuer.url,
            oidc_audience=AUDIENCE,
            oidc_ca_file=str(issuer.ca_file),
        )
    )
    yield running
    running.stop()


# --- RBAC in the dev cluster ---------------------------------------------------------


def _grant(cluster, namespace: str, subject: str) -> None:
    """`create`, `get` and `list` on productimports in the namespace for `subject`
    (`--user=...` or `--group=...`), as a tenant's administrator would."""
    cluster.kubectl(
        "-n", namespace, "create", "role", "importer", "--verb=create,get,list",
        f"--resource={PLURAL}.{GROUP}",
    )  # fmt: skip
    cluster.kubectl(
        "-n", namespace, "create", "rolebinding", "importer", "--role=importer", subject
    )


@pytest.fixture(scope="module")
def alice_ns(cluster) -> str:
    namespace = cluster.namespace("oidc-user")
    _grant(cluster, namespace, f"--user={PREFIX}alice")
    return namespace


@pytest.fixture(scope="module")
def team_ns(cluster) -> str:
    namespace = cluster.namespace("oidc-group")
    _grant(cluster, namespace, f"--group={PREFIX}importers")
    return namespace


@pytest.fixture(scope="module")
def nobody_ns(cluster) -> str:
    return cluster.namespace("oidc-none")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(api: RunningApi, namespace: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{api.url}/api/v1/namespaces/{namespace}/catalogs/main/imports",
        headers=bearer(token),
        files={"file": ("p.csv", CSV, "text/csv")},
        timeout=60,
    )


def list_imports(api: RunningApi, namespace: str, token: str) -> httpx.Response:
    return httpx.get(
        f"{api.url}/api/v1/namespaces/{namespace}/catalogs/main/imports", headers=bearer(token)
    )


def metric(api: RunningApi, name: str, labels: str = "") -> float:
    text = httpx.get(f"{api.url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# --- the tests -----------------------------------------------------------------------


@pytest.mark.cluster
def test_a_bound_user_uploads_and_reads_and_is_403_elsewhere(oidc_api, issuer, alice_ns, nobody_ns):
    token = issuer.token("alice", email="alice@example.com", email_verified=True)
    r = upload(oidc_api, alice_ns, token)
    assert r.status_code == 202, r.text
    created = r.json()
    base = f"{oidc_api.url}/api/v1/namespaces/{alice_ns}/catalogs/main/imports"
    r = httpx.get(f"{base}/{created['name']}", headers=bearer(token))
    assert r.status_code == 200, r.text
    r = list_imports(oidc_api, alice_ns, token)
    assert r.status_code == 200, r.text
    assert created["name"] in {item["name"] for item in r.json()["items"]}

    # The same user where no RoleBinding names them: 403, on upload and read alike.
    r = upload(oidc_api, nobody_ns, token)
    assert r.status_code == 403, r.text
    assert f"{PREFIX}alice" in r.json()["error"]["message"]
    assert list_imports(oidc_api, nobody_ns, token).status_code == 403

    # The user is the prefixed claim: a RoleBinding for plain "alice" means nothing here.
    ns_user = issuer.token("alice-unbound")
    assert list_imports(oidc_api, alice_ns, ns_user).status_code == 403


@pytest.mark.cluster
def test_an_es256_token_is_accepted(oidc_api, issuer, alice_ns):
    r = list_imports(oidc_api, alice_ns, issuer.token("alice", kid="ec-1"))
    assert r.status_code == 200, r.text


@pytest.mark.cluster
def test_a_group_claim_grants_through_a_group_rolebinding(oidc_api, issuer, team_ns):
    member = issuer.token("bob", groups=["importers", "system:masters"])
    assert upload(oidc_api, team_ns, member).status_code == 202
    assert list_imports(oidc_api, team_ns, member).status_code == 200
    # Without the group (or with it under another name) bob has no rights there.
    assert list_imports(oidc_api, team_ns, issuer.token("bob")).status_code == 403
    other = issuer.token("bob", groups=["readers"])
    assert list_imports(oidc_api, team_ns, other).status_code == 403


@pytest.mark.cluster
def test_a_claimed_system_group_grants_nothing(issuer, nobody_ns, api_settings):
    """A group claim is prefixed, and a `system:` group is never mapped: an identity
    provider cannot make anyone a cluster administrator."""
    api = start_api(
        api_settings(
            auth_mode="kubernetes",
            oidc_issuer_url=issuer.url,
            oidc_audience=AUDIENCE,
            oidc_ca_file=str(issuer.ca_file),
            oidc_username_prefix="",
            oidc_groups_prefix="",
        )
    )
    try:
        token = issuer.token("mallory", groups=["system:masters"])
        assert list_imports(api, nobody_ns, token).status_code == 403
        # Nor is a user name in Kubernetes' own `system:` names: not a user at all.
        r = list_imports(api, nobody_ns, issuer.token("system:admin"))
        assert r.status_code == 401, r.text
    finally:
        api.stop()


def _hs256_with_public_key(issuer: Issuer) -> str:
    """The algorithm-confusion attack: HS256 keyed with the issuer's public key."""
    public_pem = (
        issuer.keys["rsa-1"][0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "alice", "exp": now + 300}
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest())
    return (header + b"." + payload + b"." + signature).decode()


@pytest.mark.cluster
def test_invalid_tokens_are_401(oidc_api, issuer, alice_ns):
    now = int(time.time())
    forged_key = _rsa()
    cases = {
        "expired": issuer.token("alice", expires_in=-120),
        "not yet valid": issuer.token("alice", nbf=now + 600),
        "wrong audience": issuer.token("alice", aud="someone-else"),
        "wrong issuer": issuer.token("alice", iss="https://idp.example.com"),
        "bad signature": issuer.token("alice", key=forged_key),
        "unknown kid": issuer.token("alice", kid="nobody-knows-me", key=forged_key),
        "alg none": jwt.encode(
            {"iss": issuer.url, "aud": AUDIENCE, "sub": "alice", "exp": now + 300},
            None,
            algorithm="none",
            headers={"kid": "rsa-1"},
        ),
        "hs256 with the public key": _hs256_with_public_key(issuer),
        "no exp": jwt.encode(
            {"iss": issuer.url, "aud": AUDIENCE, "sub": "alice"},
            issuer.keys["rsa-1"][0],
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        ),
    }
    for case, token in cases.items():
        r = list_imports(oidc_api, alice_ns, token)
        assert r.status_code == 401, (case, r.text)
        assert r.json()["error"]["code"] == "unauthorized", case
        assert r.headers["www-authenticate"] == "Bearer", case
    # And the same user with a good token is fine (nothing above was cached for them).
    assert list_imports(oidc_api, alice_ns, issuer.token("alice")).status_code == 200


@pytest.mark.cluster
def test_a_failed_token_is_answered_from_memory(oidc_api, issuer, alice_ns):
    rejected = 'productimport_api_oidc_tokens_total{result="rejected"}'
    before = metric(oidc_api, rejected)
    token = issuer.token("alice", aud="someone-else")
    for _ in range(3):
        r = list_imports(oidc_api, alice_ns, token)
        assert r.status_code == 401
        assert "Audience" in r.json()["error"]["message"]
    assert metric(oidc_api, rejected) == before + 1


@pytest.mark.cluster
def test_service_account_tokens_still_work_next_to_oidc(oidc_api, cluster, alice_ns):
    cluster.kubectl("-n", alice_ns, "create", "serviceaccount", "ci")
    cluster.kubectl(
        "-n", alice_ns, "create", "rolebinding", "ci-importer", "--role=importer",
        f"--serviceaccount={alice_ns}:ci",
    )  # fmt: skip
    sa = cluster.kubectl("-n", alice_ns, "create", "token", "ci", "--audience", "productimport")
    r = list_imports(oidc_api, alice_ns, sa.stdout.strip())
    assert r.status_code == 200, r.text


@pytest.mark.cluster
def test_a_rotated_key_is_fetched_at_most_once_per_interval(
    oidc_api, issuer, alice_ns, monkeypatch
):
    """The key set is fetched again for an unknown kid, but not more often than the
    refresh interval (60 s in production; 2 s here)."""
    monkeypatch.setattr(oidc, "JWKS_REFRESH_INTERVAL", 2.0)
    assert list_imports(oidc_api, alice_ns, issuer.token("alice")).status_code == 200
    time.sleep(2.1)
    before = issuer.key_fetches

    # An unknown kid after the interval: one fetch, still unknown: 401.
    issuer.add_key("rsa-2")
    assert list_imports(oidc_api, alice_ns, issuer.token("alice", kid="rsa-2")).status_code == 401
    assert issuer.key_fetches == before + 1
    # The issuer publishes the new key now; within the interval it is not asked again.
    issuer.published.append("rsa-2")
    assert list_imports(oidc_api, alice_ns, issuer.token("alice", kid="rsa-2")).status_code == 401
    assert issuer.key_fetches == before + 1
    # After the interval the new key is fetched and accepted, and so is the old one.
    time.sleep(2.1)
    assert list_imports(oidc_api, alice_ns, issuer.token("alice", kid="rsa-2")).status_code == 200
    assert issuer.key_fetches == before + 2
    assert list_imports(oidc_api, alice_ns, issuer.token("alice")).status_code == 200
    assert issuer.key_fetches == before + 2


@pytest.mark.cluster
def test_oidc_next_to_static_tokens(api_settings, issuer, alice_ns, tenant, tokens):
    api = start_api(
        api_settings(
            oidc_issuer_url=issuer.url,
            oidc_audience=AUDIENCE,
            oidc_ca_file=str(issuer.ca_file),
        )
    )
    try:
        assert list_imports(api, alice_ns, issuer.token("alice")).status_code == 200
        r = httpx.get(
            f"{api.url}/api/v1/namespaces/{tenant}/catalogs/main/imports", headers=tokens["a"]
        )
        assert r.status_code == 200, r.text
        # A static token is not an OIDC user in another namespace either.
        assert list_imports(api, alice_ns, tokens["a"]["Authorization"][7:]).status_code == 403
    finally:
        api.stop()


@pytest.mark.cluster
def test_an_unreachable_issuer_is_503_not_401(api_settings, alice_ns, issuer):
    # An issuer URL nothing listens on (the port of a socket closed at once).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    api = start_api(api_settings(auth_mode="kubernetes", oidc_issuer_url=url, oidc_audience="x"))
    try:
        token = jwt.encode(
            {"iss": url, "aud": "x", "sub": "alice", "exp": int(time.time()) + 300},
            issuer.keys["rsa-1"][0],
            algorithm="RS256",
            headers={"kid": "rsa-1"},
        )
        r = list_imports(api, alice_ns, token)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "identity_provider_unavailable"
        assert int(r.headers["Retry-After"]) >= 1
    finally:
        api.stop()


def test_oidc_settings_are_checked_at_start():
    with pytest.raises(ValidationError, match="https"):
        ApiSettings(oidc_issuer_url="http://idp.example.com", oidc_audience="x")
    with pytest.raises(ValidationError, match="oidc_audience"):
        ApiSettings(oidc_issuer_url="https://idp.example.com")
    ok = ApiSettings(oidc_issuer_url="https://idp.example.com/realms/shop", oidc_audience="x")
    assert ok.oidc_username_prefix == "oidc:" and ok.oidc_groups_claim == "groups"
