"""The product's own processes in the dev environment: the operator and the upload API,
and the SMTP server the operator mails import outcomes to (devenv/mailsink.py).

They run as local processes against the local cluster and MinIO, the way a developer
iterates on them (a code change needs no image for them); the import Jobs the operator
launches run the image built from this checkout on the real node. The chart's
Deployments (charts/productimport) run as Pods in tests/chart.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import smtplib
import sys
from collections.abc import Iterator
from pathlib import Path

from devenv import images
from devenv.component import Component, http_ok
from devenv.controlplane import DevEnv
from devenv.layout import REPO
from devenv.pki import Pki

CATALOG_BUCKET = "catalog"
UPLOAD_BUCKET = "uploads"
# The dev token's principal has this address (notify_email on the SaaS route mails it),
# and the dev operator sends as MAIL_SENDER. Reserved names (RFC 2606): no mail leaves
# the machine anyway, the dev SMTP server keeps every message in .dev/mail.
DEV_ADMIN_EMAIL = "dev-admin@example.com"
MAIL_SENDER = "productimport@example.com"


def _generated_secret(env: DevEnv, name: str) -> str:
    """A random secret made once per dev directory and kept there (mode 0600)."""
    path = env.layout.root / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def api_token(env: DevEnv) -> str:
    """A static token allowed on every namespace, generated once per dev directory."""
    return _generated_secret(env, "api-token")


# The operator's own MinIO user: what it reads itself (results, progress), and the most an
# import's credentials, which it mints with these keys, could ever be allowed
# (docs/security.md). Never root: a session policy narrows its parent's rights.
OPERATOR_STORE_USER = "productimport-operator"
OPERATOR_STORE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        # Retention (operator/retention.py) lists the uploads and deletes expired sources
        # and import documents.
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{UPLOAD_BUCKET}/*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:aws:s3:::{UPLOAD_BUCKET}"]},
        {"Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{CATALOG_BUCKET}/*"]},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:CreateBucket"],
         "Resource": [f"arn:aws:s3:::{CATALOG_BUCKET}"]},
        # Each catalog's Delta table has a bucket of its own, named after the catalog
        # bucket (productimport/engine/s3store.py table_bucket): the operator makes it,
        # an import lists, reads and writes its own only, and retention deletes in it.
        {"Effect": "Allow",
         "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:CreateBucket"],
         "Resource": [f"arn:aws:s3:::{CATALOG_BUCKET}-*"]},
        {"Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload",
                    "s3:DeleteObject"],
         "Resource": [f"arn:aws:s3:::{CATALOG_BUCKET}-*/*"]},
    ],
}  # fmt: skip


def operator_store_credentials(env: DevEnv) -> dict[str, str]:
    """The operator's MinIO user, made (idempotently) with the root credentials."""
    from minio.credentials import StaticProvider
    from minio.minioadmin import MinioAdmin

    secret = _generated_secret(env, "minio-operator-secret")
    root = env.env()
    admin = MinioAdmin(
        endpoint=root["MINIO_ENDPOINT"],
        credentials=StaticProvider(root["MINIO_ACCESS_KEY"], root["MINIO_SECRET_KEY"]),
        secure=False,
    )
    admin.user_add(OPERATOR_STORE_USER, secret)
    admin.policy_add(OPERATOR_STORE_USER, policy=OPERATOR_STORE_POLICY)
    admin.policy_set(OPERATOR_STORE_USER, user=OPERATOR_STORE_USER)
    return {"MINIO_ACCESS_KEY": OPERATOR_STORE_USER, "MINIO_SECRET_KEY": secret}


def egress_policy(env: DevEnv) -> dict[str, str]:
    """Outbound requests of the operator (webhooks) and its loaders (URL sources): as in
    production (public https only), except for the tests' own receivers on the bridge,
    whose certificates the dev CA signs."""
    L = env.layout
    allow = [{"cidr": f"{L.network.host_ip}/32", "ports": list(L.ports.test_receivers)}]
    return {
        "PRODUCTIMPORT_EGRESS_ALLOW": json.dumps(allow),
        "SSL_CERT_FILE": str(Pki(L.sub("pki")).ca_cert),
    }


def _console_script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def mail_dir(env: DevEnv) -> Path:
    """Where the dev SMTP server keeps each message it receives (one .eml file each)."""
    return env.layout.sub("mail")


def _smtp_ready(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
            return smtp.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def mail_server(env: DevEnv) -> Component:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: the operator is a host process here."""
    port = env.layout.ports.smtp
    return Component(
        "smtp",
        [sys.executable, "-m", "devenv.mailsink", "--host", "127.0.0.1", "--port", str(port),
         "--dir", str(mail_dir(env))],
        lambda: _smtp_ready(port),
        env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip


def mail_settings(env: DevEnv) -> dict[str, str]:
    """The dev operator's SMTP settings: the dev server, in clear on the loopback."""
    return {
        "PRODUCTIMPORT_OPERATOR_SMTP_HOST": "127.0.0.1",
        "PRODUCTIMPORT_OPERATOR_SMTP_PORT": str(env.layout.ports.smtp),
        "PRODUCTIMPORT_OPERATOR_SMTP_STARTTLS": "false",
        "PRODUCTIMPORT_OPERATOR_SMTP_SENDER": MAIL_SENDER,
        "PRODUCTIMPORT_OPERATOR_API_URL": f"http://127.0.0.1:{env.layout.ports.api}",
    }


def components(env: DevEnv) -> list[Component]:
    p = env.layout.ports
    base = env.env()
    operator = Component(
        "operator",
        [_console_script("productimport-operator")],
        lambda: http_ok(f"http://127.0.0.1:{p.operator_health}/healthz"),
        env={
            **base,
            **operator_store_credentials(env),
            "PRODUCTIMPORT_OPERATOR_HEALTH_HOST": "127.0.0.1",
            "PRODUCTIMPORT_OPERATOR_HEALTH_PORT": str(p.operator_health),
            "PRODUCTIMPORT_OPERATOR_METRICS_PORT": str(p.operator_health + 1),
            "PRODUCTIMPORT_OPERATOR_STORE": f"s3://{CATALOG_BUCKET}",
            # The image `up` built from this checkout and loaded into the node: there is
            # no registry to pull from, so never try.
            "PRODUCTIMPORT_OPERATOR_IMAGE": images.product_ref(),
            "PRODUCTIMPORT_OPERATOR_IMAGE_PULL_POLICY": "Never",
            # Two cores: the chart's 250m per import would queue the tests' imports
            # behind the scheduler for CPU nobody uses.
            "PRODUCTIMPORT_OPERATOR_DEFAULT_CPU_REQUEST": "50m",
            "PRODUCTIMPORT_OPERATOR_WEBHOOK_SIGNING_KEY": _generated_secret(env, "webhook-key"),
            **mail_settings(env),
            **egress_policy(env),
            "PYTHONPATH": str(REPO),
        },
    )
    admin = {"name": "dev-admin", "token": api_token(env), "namespaces": ["*"],
             "email": DEV_ADMIN_EMAIL}  # fmt: skip
    tokens = {"tokens": [admin]}
    api = Component(
        "api",
        [_console_script("productimport-api")],
        lambda: http_ok(f"http://127.0.0.1:{p.api}/healthz"),
        env={
            **base,
            "PRODUCTIMPORT_API_HOST": "127.0.0.1",
            "PRODUCTIMPORT_API_PORT": str(p.api),
            "PRODUCTIMPORT_API_AUTH_MODE": "static",
            "PRODUCTIMPORT_API_TOKENS": json.dumps(tokens),
            "PRODUCTIMPORT_API_UPLOAD_BUCKET": UPLOAD_BUCKET,
            "PRODUCTIMPORT_API_CATALOG_BUCKET": CATALOG_BUCKET,
            # The dev operator has an SMTP server (mail_settings): notify_email works.
            "PRODUCTIMPORT_API_EMAIL_ENABLED": "true",
            # Webhook URLs given at upload are checked against the operator's policy.
            **egress_policy(env),
        },
    )
    return [mail_server(env), operator, api]


def service_env(env: DevEnv) -> dict[str, str]:
    return {
        "PRODUCTIMPORT_API_URL": f"http://127.0.0.1:{env.layout.ports.api}",
        "PRODUCTIMPORT_API_TOKEN": api_token(env),
        "PRODUCTIMPORT_DEV_MAIL_DIR": str(mail_dir(env)),
    }


@contextlib.contextmanager
def operator_with(env: DevEnv, **settings: str) -> Iterator[None]:
    """The dev operator restarted with some settings (environment variables) changed, and
    restarted as it was afterwards (tests and `make bench-operator`)."""
    env.sup.stop("operator")
    (operator,) = [c for c in components(env) if c.name == "operator"]
    operator.env = {**operator.env, **settings}
    try:
        env.start(operator)
        yield
    finally:
        env.sup.stop("operator")
        env.up()
