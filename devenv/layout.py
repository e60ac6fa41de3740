"""Where the dev environment keeps its state, and the loopback ports it listens on."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Layout:
    """Everything lives under one directory (default: .dev/ in the repository, ignored
    by git; PRODUCTIMPORT_DEV_DIR moves it)."""

    root: Path
    ports: Ports = Ports()

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
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def minio_endpoint(self) -> str:
        return f"127.0.0.1:{self.ports.minio}"
