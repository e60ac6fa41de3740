"""Bring the local cluster and MinIO up (idempotently) and down again.

Every component is the real program: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from their Go modules, MinIO, and a real node (devenv/node.py: the
kubelet and kube-proxy over containerd) whose Pods run the image built from this
checkout (devenv/images.py). Whatever Pods talk to listens on the dev bridge's address
(Layout.network); the rest on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from devenv import node
from devenv import pki as pki_mod
from devenv.component import (
    Component,
    DevEnvError,
    ForeignComponent,
    http_ok,
    unverified_tls,
    write_kubeconfig,
)
from devenv.layout import REPO, Layout
from devenv.supervisor import Supervisor

__all__ = ["DevEnv", "DevEnvError"]

# The controllers this product relies on, and the ones they need in turn (serviceaccount
# creates the namespace's default ServiceAccount that Pods run as; root-ca-cert-publisher
# and clusterrole-aggregation keep the defaults a real cluster has; node-lifecycle takes
# the kubelet's initial not-ready taint off a Ready node; the endpoint controllers feed
# kube-proxy). No taint-eviction controller: a node that was stopped for a while (between
# two `make dev-up`s) keeps its Pods.
CONTROLLERS = (
    "job-controller",
    "garbage-collector-controller",
    "ttl-after-finished-controller",
    "replicaset-controller",
    "deployment-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "pod-garbage-collector-controller",
    "node-lifecycle-controller",
    "endpoints-controller",
    "endpointslice-controller",
)
READY_TIMEOUT = 180.0
NODE_NAME = node.NODE_NAME
# Stopped newest first; anything else with a PID file (a test's extra process) before.
STOP_ORDER = (
    "api", "operator", "smtp", "kube-proxy", "kubelet", "containerd", "minio",
    "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd",
)  # fmt: skip


def obtain_binaries() -> Path:
    """Build (first time) or find the cached binaries; see devenv/obtain.sh."""
    done = subprocess.run(
        ["bash", str(REPO / "devenv" / "obtain.sh")],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise DevEnvError(f"devenv/obtain.sh failed with exit code {done.returncode} (see above)")
    return Path(done.stdout.strip().splitlines()[-1])


def _minio_credentials(layout: Layout) -> dict[str, str]:
    """Generated once per dev directory, so no well-known password guards even a loopback
    server."""
    path = layout.root / "minio-credentials.json"
    if not path.exists():
        creds = {"accessKey": "productimport", "secretKey": secrets.token_urlsafe(24)}
        path.write_text(json.dumps(creds))
        path.chmod(0o600)
    return json.loads(path.read_text())


def _admin_ssl(pki: pki_mod.Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.cert("admin")), str(pki.key("admin")))
    return ctx


class DevEnv:
    def __init__(self, layout: Layout | None = None) -> None:
        self.layout = layout or Layout.default()
        self.sup = Supervisor(self.layout)
        self._product_image: str | None = None

    # -- the pieces ---------------------------------------------------------------------

    def _control_plane(self, bin_dir: Path, pki: pki_mod.Pki) -> list[Component]:
        L, p = self.layout, self.layout.ports
        host_ip = L.network.host_ip
        etcd_url = f"http://127.0.0.1:{p.etcd}"
        cm_kubeconfig = write_kubeconfig(
            L.root / "controller-manager.kubeconfig", L, pki, "controller-manager"
        )
        sched_kubeconfig = write_kubeconfig(
            L.root / "kube-scheduler.kubeconfig", L, pki, "kube-scheduler"
        )
        admin_ssl = _admin_ssl(pki)
        return [
            Component(
                "etcd",
                [
                    str(bin_dir / "etcd"),
                    "--name=dev",
                    f"--data-dir={L.sub('etcd')}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{p.etcd_peer}",
                    f"--initial-cluster=dev=http://127.0.0.1:{p.etcd_peer}",
                    "--listen-metrics-urls=",
                    "--log-level=warn",
                    # A dev cluster's etcd: no fsync per write (much faster on shared disks).
                    "--unsafe-no-fsync",
                ],
                lambda: http_ok(f"{etcd_url}/health"),
            ),
            Component(
                "kube-apiserver",
                [
                    str(bin_dir / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    # The bridge's address: Pods reach it there (through the `kubernetes`
                    # Service), and it is the address the `kubernetes` Endpoints name.
                    f"--bind-address={host_ip}",
                    f"--advertise-address={host_ip}",
                    f"--secure-port={p.apiserver}",
                    f"--tls-cert-file={pki.cert('apiserver')}",
                    f"--tls-private-key-file={pki.key('apiserver')}",
                    f"--client-ca-file={pki.ca_cert}",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-cluster-ip-range={node.SERVICE_CIDR}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--allow-privileged=true",
                    f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                    f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                    f"--kubelet-certificate-authority={pki.ca_cert}",
                    "--kubelet-preferred-address-types=InternalIP",
                    f"--cert-dir={L.sub('apiserver-certs')}",
                    "--v=1",
                ],
                lambda: http_ok(f"{L.apiserver_url}/readyz", admin_ssl),
            ),
            Component(
                "kube-controller-manager",
                [
                    str(bin_dir / "kube-controller-manager"),
                    f"--kubeconfig={cm_kubeconfig}",
                    f"--authentication-kubeconfig={cm_kubeconfig}",
                    f"--authorization-kubeconfig={cm_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={p.controller_manager}",
                    f"--cert-dir={L.sub('controller-manager-certs')}",
                    f"--controllers={','.join(CONTROLLERS)}",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki.sa_key}",
                    f"--root-ca-file={pki.ca_cert}",
                    "--leader-elect=false",
                    "--v=1",
                ],
                lambda: http_ok(
                    f"https://127.0.0.1:{p.controller_manager}/healthz", unverified_tls()
                ),
            ),
            Component(
                "kube-scheduler",
                [
                    str(bin_dir / "kube-scheduler"),
                    f"--kubeconfig={sched_kubeconfig}",
                    f"--authentication-kubeconfig={sched_kubeconfig}",
                    f"--authorization-kubeconfig={sched_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={p.kube_scheduler}",
                    f"--cert-dir={L.sub('kube-scheduler-certs')}",
                    "--leader-elect=false",
                    "--v=1",
                ],
                lambda: http_ok(f"https://127.0.0.1:{p.kube_scheduler}/healthz", unverified_tls()),
            ),
        ]

    def _minio(self, bin_dir: Path) -> Component:
        L, p = self.layout, self.layout.ports
        creds = _minio_credentials(L)
        return Component(
            "minio",
            [
                str(bin_dir / "minio"),
                "server",
                str(L.sub("minio")),
                # The bridge's address: the loader Pods read and write here.
                f"--address={L.minio_endpoint}",
                f"--console-address=127.0.0.1:{p.minio_console}",
                "--quiet",
            ],
            lambda: http_ok(f"http://{L.minio_endpoint}/minio/health/ready"),
            env={
                "MINIO_ROOT_USER": creds["accessKey"],
                "MINIO_ROOT_PASSWORD": creds["secretKey"],
                "MINIO_BROWSER": "off",
                "MINIO_UPDATE": "off",
                "HOME": str(L.sub("minio-home")),
            },
        )

    def _node(self, bin_dir: Path, pki: pki_mod.Pki) -> None:
        """containerd with the images loaded, then the kubelet and kube-proxy."""
        from devenv import images  # buildah and friends: only where a node runs

        pause = images.ensure_pause_image()
        self.start(node.containerd(self.layout, pause))
        paths = node.NodePaths(self.layout)
        stamps = paths.sub("image-stamps")
        # Once per DevEnv: tests call up() again to restart a component, and the
        # checkout does not change under a running test session.
        if self._product_image is None:
            self._product_image = images.build_product_image()
        product = self._product_image
        for ref in (pause, product):
            if images.load(ref, paths.containerd_socket, stamps):
                print(f"devenv: loaded {ref} into the node's containerd", flush=True)
        self.start(node.kubelet(self.layout, pki, bin_dir))
        self.start(node.kube_proxy(self.layout, pki, bin_dir))

    # -- public -------------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        path = self.layout.root / "bin"
        if not path.exists():
            raise DevEnvError("the dev environment has never been started (make dev-up)")
        return path.resolve()

    def env(self) -> dict[str, str]:
        """The variables written to .dev/env (and handed to tests)."""
        creds = _minio_credentials(self.layout)
        return {
            "KUBECONFIG": str(self.layout.kubeconfig),
            "MINIO_ENDPOINT": self.layout.minio_endpoint,
            "MINIO_ACCESS_KEY": creds["accessKey"],
            "MINIO_SECRET_KEY": creds["secretKey"],
            "MINIO_SECURE": "false",
            "PRODUCTIMPORT_DEV_BIN": str(self.bin_dir),
        }

    def minio_client(self):
        from minio import Minio

        values = self.env()
        return Minio(
            values["MINIO_ENDPOINT"], values["MINIO_ACCESS_KEY"], values["MINIO_SECRET_KEY"],
            secure=False,
        )  # fmt: skip

    def kubectl(self, *args: str, check: bool = True, input: str | None = None):
        done = subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.layout.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            check=False,
        )
        if check and done.returncode != 0:
            raise DevEnvError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def start(self, comp: Component) -> None:
        env = {**os.environ, **comp.env}
        started = self.sup.pid(comp.name) is None
        if started and comp.probes_itself and comp.ready():
            # Not ours, yet it answers where ours would: a process an earlier environment
            # lost track of. Tests would talk to it (other tokens, other code) and fail
            # in baffling ways; the new process would not even bind its port.
            raise ForeignComponent(
                f"something already answers for {comp.name} although this environment runs "
                f"no {comp.name}: stop the process listening on its port (`ss -ltnp`), "
                "then run again"
            )
        pid = self.sup.start(comp.name, comp.argv, env=env)
        deadline = time.monotonic() + READY_TIMEOUT
        while not comp.ready():
            if not self.sup.alive(pid):
                raise DevEnvError(
                    f"{comp.name} exited during start-up; the end of {self.sup.log(comp.name)}:"
                    f"\n{self.sup.tail(comp.name)}"
                )
            if time.monotonic() > deadline:
                raise DevEnvError(
                    f"{comp.name} was not ready after {READY_TIMEOUT:.0f}s; the end of "
                    f"{self.sup.log(comp.name)}:\n{self.sup.tail(comp.name)}"
                )
            time.sleep(0.25)
        print(f"devenv: {comp.name} {'started' if started else 'already running'}", flush=True)

    def up(self, with_services: bool = True, with_node: bool = True) -> dict[str, str]:
        """Start what is not running yet; with_node adds the node (one per machine: its
        cgroups and iptables chains are the machine's), with_services the operator and
        the API."""
        L = self.layout
        L.root.mkdir(parents=True, exist_ok=True)
        bin_dir = obtain_binaries()
        link = L.root / "bin"
        if not (link.is_symlink() and link.resolve() == bin_dir.resolve()):
            # Swapped in one rename: a kubectl another thread starts meanwhile (a test
            # that restarts a component under traffic) never finds the link missing.
            staged = L.root / "bin.new"
            staged.unlink(missing_ok=True)
            staged.symlink_to(bin_dir)
            staged.replace(link)
        if with_node:
            node.require_root()
            node.record_host_paths(L)
        node.ensure_bridge(L.network)
        pki = pki_mod.ensure(L.sub("pki"), L.network.host_ip, NODE_NAME)
        write_kubeconfig(L.kubeconfig, L, pki, "admin")
        for comp in self._control_plane(bin_dir, pki):
            self.start(comp)
        self.start(self._minio(bin_dir))
        if with_node:
            self._node(bin_dir, pki)
        self.apply_crds()
        env = self.env()
        if with_services:
            from devenv import services  # it builds on this module

            for comp in services.components(self):
                self.start(comp)
            env.update(services.service_env(self))
        self.write_env(env)
        return env

    def apply_crds(self) -> None:
        crds = sorted((REPO / "crds").glob("*.yaml"))
        if not crds:
            return
        args = ["apply", "--server-side", "--force-conflicts"]
        for crd in crds:
            args += ["-f", str(crd)]
        self.kubectl(*args)
        self._wait_established(crds)

    def _wait_established(self, crds: list[Path], timeout: float = 60.0) -> None:
        """Wait until the API server serves every CRD.

        Not `kubectl wait --for=condition=Established`: when it looks before the apiserver
        has written the CRD's first status, it fails at once (".status.conditions accessor
        error: <nil> is of the type <nil>") instead of waiting, which broke a CI run.
        """
        deadline = time.monotonic() + timeout
        while True:
            listing = json.loads(
                self.kubectl("get", "-o", "json", *[f"-f={c}" for c in crds]).stdout
            )
            items = listing.get("items", [listing])
            waiting = [i["metadata"]["name"] for i in items if not _established(i)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise DevEnvError(f"CRDs not Established after {timeout:.0f}s: {waiting}")
            time.sleep(0.2)

    def write_env(self, env: Mapping[str, str]) -> None:
        lines = ["# Written by `make dev-up` (python -m devenv up). Source it: . .dev/env"]
        lines += [f"export {k}={_shell_quote(v)}" for k, v in env.items()]
        lines.append(f'export PATH={_shell_quote(str(self.bin_dir))}:"$PATH"')
        self.layout.env_file.write_text("\n".join(lines) + "\n")

    def down(self) -> list[str]:
        """Stop everything, newest first, and take the node's traces off the machine;
        returns the names of what was running."""
        known = {p.stem for p in self.layout.pids.glob("*.pid")}
        stopped = []
        for name in [*(sorted(known - set(STOP_ORDER))), *STOP_ORDER]:
            if name == "containerd" and self.layout.root.joinpath("bin").exists():
                # With the kubelet gone (stopped just before), nothing restarts them.
                node.remove_pods(self.layout, self.bin_dir)
            if self.sup.stop(name):
                stopped.append(name)
        bin_dir = self.bin_dir if (self.layout.root / "bin").exists() else None
        node.teardown(self.layout, bin_dir)
        self.layout.env_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, int | None]:
        return {p.stem: self.sup.pid(p.stem) for p in sorted(self.layout.pids.glob("*.pid"))}


def _established(crd: Mapping) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
