"""`productimport-operator`: run the Kopf operator (the chart's and `make dev-up`'s entry)."""

from __future__ import annotations

import logging
import os

import kopf
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_client import start_http_server

from productimport.operator import handlers
from productimport.operator.kube import Kube
from productimport.operator.queue import ImportQueues
from productimport.operator.reconcile import Reconciler
from productimport.operator.settings import OperatorSettings


def api_client() -> k8s.ApiClient:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        k8s_config.load_incluster_config()
    else:
        k8s_config.load_kube_config()
    return k8s.ApiClient()


def main() -> None:
    settings = OperatorSettings()
    kopf.configure(log_format=kopf.LogFormat.JSON, verbose=settings.log_level == "DEBUG")
    logging.getLogger().setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # kopf logs every handler run ("Handler 'on_import_event' succeeded.") at INFO: a
        # line per watch event, thousands a minute in a flood. Its failures stay logged.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The catalogs' queues, kept from the watch (handlers.on_import_event).
    reconciler = Reconciler(Kube(api_client()), settings, queues=ImportQueues())
    memo = handlers.operator_memo(reconciler, settings)
    start_http_server(settings.metrics_port, addr=settings.health_host)
    namespaces = settings.namespace_list
    kopf.run(
        # One operator at a time (the chart's Deployment uses the Recreate strategy);
        # no peering objects to install.
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=f"http://{settings.health_host}:{settings.health_port}/healthz",
        # The reconciler and the settings, for every handler (handlers.py).
        memo=memo,
    )


if __name__ == "__main__":
    main()
