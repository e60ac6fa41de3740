"""What every part of the dev environment shares: a component to start, its readiness
probe, the error that says why something could not start, and kubeconfig files."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devenv import pki as pki_mod
from devenv.layout import Layout


class DevEnvError(RuntimeError):
    """A component could not be obtained or started; the message says which and why."""


class ForeignComponent(DevEnvError):
    """Something this environment did not start already answers where one of its
    components would (another checkout's environment, or a process an earlier one lost
    track of). Nothing of this environment was changed, and nothing must be stopped in
    return: the machine's shared parts (the node's bridge) are the other's."""


@dataclass
class Component:
    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    # ready() asks the process itself (its port or socket). False where it asks someone
    # else (the kubelet: its Node in the API server, which outlives the process).
    probes_itself: bool = True


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def unverified_tls() -> ssl.SSLContext:
    """For health checks of components that serve a self-signed certificate of their own."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def write_if_changed(path: Path, text: str, mode: int | None = None) -> Path:
    """Write only when the content differs: kube-proxy exits when its configuration file
    changes, and `up` writes every file again on each run."""
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def write_kubeconfig(path: Path, layout: Layout, pki: pki_mod.Pki, user: str) -> Path:
    """A kubeconfig for one of the client certificates in `pki` (see pki.ensure)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "productimport-dev",
                "cluster": {
                    "server": layout.apiserver_url,
                    "certificate-authority": str(pki.ca_cert),
                },
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki.cert(user)),
                    "client-key": str(pki.key(user)),
                },
            }
        ],
        "contexts": [
            {"name": "productimport-dev", "context": {"cluster": "productimport-dev", "user": user}}
        ],
        "current-context": "productimport-dev",
    }
    return write_if_changed(path, yaml.safe_dump(doc, sort_keys=False), 0o600)
