"""A fault-injecting proxy in front of the real kube-apiserver, for the upload API tests.

The API under test gets a kubeconfig that points at this proxy (plain HTTP on 127.0.0.1,
no credentials); the proxy forwards every request to the real API server with the
credentials of the dev kubeconfig. A rule changes what matching requests get:

- `drop-answer`: forwarded (the API server acts on it), then the connection is closed
  without an answer: a response lost on the way back;
- `gateway-timeout`: forwarded, then answered 504, as a gateway or the API server's
  own timeout answers while the request may still land;
- `drop-request`: never forwarded, the connection closed: a request lost on the way;
- `hold`: kept until `count` matching requests have arrived, then all forwarded at once
  (two creates racing for one name).
"""

from __future__ import annotations

import json
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

PRODUCTIMPORTS = r"/apis/catalog\.productimport\.dev/v1alpha1/namespaces/[^/]+/productimports"


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    action: str
    times: int | None = None  # None: every matching request
    count: int = 2  # for `hold`
    hits: int = 0
    barrier: threading.Barrier | None = None

    def __post_init__(self) -> None:
        if self.action == "hold":
            self.barrier = threading.Barrier(self.count)


@dataclass
class Seen:
    method: str
    path: str
    action: str
    status: int | None = None  # the API server's answer, when it was asked


@dataclass
class KubeProxy:
    kubeconfig: Path
    rules: list[Rule] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = k8s.Configuration()
        k8s_config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {}
        if cfg.api_key.get("authorization"):
            headers["Authorization"] = cfg.api_key["authorization"]
        self._upstream = httpx.Client(base_url=cfg.host, verify=context, headers=headers)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def on(self, method: str, path: str, action: str, times: int | None = None) -> Rule:
        rule = Rule(method, re.compile(path), action, times)
        self.rules.append(rule)
        return rule

    def write_kubeconfig(self, directory: Path) -> Path:
        path = directory / "proxy-kubeconfig"
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        }
        path.write_text(json.dumps(doc))  # JSON is YAML
        return path

    def creates(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and re.search(PRODUCTIMPORTS, s.path)]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._upstream.close()

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method == method and rule.path.search(path):
                    if rule.times is not None and rule.hits >= rule.times:
                        continue
                    rule.hits += 1
                    return rule
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        rule = self._rule_for(handler.command, handler.path)
        seen = Seen(handler.command, handler.path, rule.action if rule else "forward")
        with self._lock:
            self.seen.append(seen)
        if seen.action == "drop-request":
            handler.close_connection = True
            return
        if rule is not None and rule.barrier is not None:
            rule.barrier.wait()
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() in ("content-type", "accept")
        }
        answer = self._upstream.request(
            handler.command, handler.path, content=body, headers=headers
        )
        seen.status = answer.status_code
        if seen.action == "drop-answer":
            handler.close_connection = True
            return
        status, content = answer.status_code, answer.content
        content_type = answer.headers.get("content-type", "application/json")
        if seen.action == "gateway-timeout":
            status, content_type = 504, "application/json"
            content = json.dumps(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": "Timeout: request did not complete within the allowed duration",
                    "reason": "Timeout",
                    "code": 504,
                }
            ).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)
