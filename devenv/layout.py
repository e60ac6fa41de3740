"""Where the dev environment keeps its state, its network, and the ports it listens on."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Ports:
    # Away from the usual defaults (2379, 6443, 9000, …) so a developer's own servers
    # on this machine do not collide with the dev environment, and below the kernel's
    # ephemeral range (32768-60999 on Linux), where any outgoing connection may hold a
    # port for a while.
    etcd: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 20257
    minio: int = 19000
    minio_console: int = 19001
    api: int = 18080
    operator_health: int = 18081
    # The dev SMTP server (devenv/mailsink.py) on 127.0.0.1: the dev operator's mail.
    smtp: int = 18025
    kube_scheduler: int = 20259
    kubelet: int = 20250
    kubelet_healthz: int = 20248
    kube_proxy_healthz: int = 20256
    kube_proxy_metrics: int = 20249
    containerd_stream: int = 20010
    # The tests' own HTTPS servers (source feeds, webhook receivers) on the bridge's
    # address: the only private endpoints the dev egress policy allows (services.py).
    test_receivers: tuple[int, int] = (18443, 18444)


@dataclass(frozen=True)
class Network:
    """The node's bridge and Pod network, made by devenv on this machine only.

    Pods cannot reach 127.0.0.1 of the host (it is their own loopback), so everything a
    Pod talks to (the API server, MinIO) listens on the bridge's own address instead;
    host-side clients use that address too. The subnet is private and exists nowhere but
    on this bridge; no route or NAT leads from it to any other network.
    """

    bridge: str = "pidev0"
    subnet: str = "10.213.0.0/16"

    @property
    def host_ip(self) -> str:
        """The bridge's address on the host: the Pods' gateway, and where servers listen."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class Layout:
    """Everything lives under one directory (default: .dev/ in the repository, ignored
    by git; PRODUCTIMPORT_DEV_DIR moves it)."""

    root: Path
    ports: Ports = Ports()
    network: Network = Network()

    @classmethod
    def default(cls) -> Layout:
        root = os.environ.get("PRODUCTIMPORT_DEV_DIR")
        return cls(Path(root).resolve() if root else REPO / ".dev")

    def sub(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def pids(self) -> Path:
        return self.sub("pids")

    @property
    def logs(self) -> Path:
        return self.sub("logs")

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.network.host_ip}:{self.ports.apiserver}"

    @property
    def minio_endpoint(self) -> str:
        return f"{self.network.host_ip}:{self.ports.minio}"
