"""Run the upload API for tests: uvicorn on 127.0.0.1 in a thread, real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import uvicorn

from productimport.api.app import create_app
from productimport.api.settings import ApiSettings


@dataclass
class RunningApi:
    url: str
    settings: ApiSettings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_api(settings: ApiSettings) -> RunningApi:
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # Readiness, not a time limit: wait for uvicorn's own flag (or its thread dying).
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the API server did not start (see the log above)")
        time.sleep(0.02)
    return RunningApi(f"http://127.0.0.1:{port}", settings, server, thread)
