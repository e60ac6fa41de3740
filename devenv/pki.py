"""Certificates and keys for the local control plane, made once and kept in .dev/pki.

One self-signed CA signs the serving certificates (API server, kubelet) and the client
certificates of every component (admin, controller manager, scheduler, kubelet,
kube-proxy, and the API server towards the kubelet); a separate RSA key pair signs
service-account tokens. The serving certificates name only this machine's addresses:
loopback, the dev bridge's address and the `kubernetes` Service's cluster IP.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = dt.timedelta(days=3650)
SERVING_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVING_IPS = ("127.0.0.1", "::1", "10.96.0.1")
NODE_GROUP = "system:nodes"


@dataclass(frozen=True)
class Pki:
    dir: Path

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    def cert(self, who: str) -> Path:
        return self.path(f"{who}.crt")

    def key(self, who: str) -> Path:
        return self.path(f"{who}.key")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common: str, org: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if org:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(parts)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def _alt_names(cert_path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in ext.get_values_for_type(x509.IPAddress)} | set(
        ext.get_values_for_type(x509.DNSName)
    )


def ensure(pki_dir: Path, host_ip: str, node_name: str) -> Pki:
    """Create whatever is missing; an existing CA and its certificates are kept (a serving
    certificate is issued again when the addresses it must name have changed)."""
    pki = Pki(pki_dir)
    pki_dir.mkdir(parents=True, exist_ok=True)
    if not pki.ca_cert.exists():
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("productimport-dev-ca")
        ca = (
            _builder(ca_name, ca_name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(pki.path("ca.key"), ca_key)
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        # A new CA invalidates everything it signed before.
        for old in pki_dir.glob("*.crt"):
            if old != pki.ca_cert:
                old.unlink()
    ca_key = serialization.load_pem_private_key(pki.path("ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())

    def issue(
        who: str,
        subject: x509.Name,
        usage: ExtendedKeyUsageOID,
        names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> None:
        if pki.cert(who).exists() and _alt_names(pki.cert(who)) == {*names, *ips}:
            return
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, ca.subject, key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if names or ips:
            alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
            alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(pki.key(who), key)
        pki.cert(who).write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    server = ExtendedKeyUsageOID.SERVER_AUTH
    client = ExtendedKeyUsageOID.CLIENT_AUTH
    issue("apiserver", _name("kube-apiserver"), server, SERVING_NAMES, (*SERVING_IPS, host_ip))
    issue("kubelet-serving", _name(node_name), server, (node_name,), (host_ip,))
    # system:masters: the dev admin (and the test fixtures) may do anything.
    issue("admin", _name("productimport-dev-admin", "system:masters"), client)
    # The controller manager's bootstrap identity; with --use-service-account-credentials
    # each controller then acts as its own service account under the default RBAC roles.
    issue("controller-manager", _name("system:kube-controller-manager"), client)
    # The identities the default RBAC bindings (and the Node authorizer) already know.
    issue("kube-scheduler", _name("system:kube-scheduler"), client)
    issue("kube-proxy", _name("system:kube-proxy"), client)
    issue("kubelet", _name(f"system:node:{node_name}", NODE_GROUP), client)
    # The API server towards the kubelet (logs, exec): the kubelet asks the API server
    # whether this user may, and system:masters may.
    issue(
        "apiserver-kubelet-client", _name("kube-apiserver-kubelet-client", "system:masters"), client
    )

    # The tests' HTTPS servers (feeds, webhook receivers) on this machine.
    issue(
        "test-receiver",
        _name("productimport-test-receiver"),
        server,
        ("localhost",),
        ("127.0.0.1", host_ip),
    )

    if not pki.sa_key.exists():
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(pki.sa_key, sa)
        pki.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return pki
