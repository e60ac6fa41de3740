"""The reconciler of this checkout, run by a test against the real cluster and MinIO.

The dev operator runs the code `make dev-up` started it with and watches every
namespace: it would act on any ProductImport a test applies, and restarting it with new
code would disturb everyone else using the environment. An end-to-end test of new
reconciler code runs its own Reconciler instead (with the dev operator's settings),
passes driven by the test: its Jobs, Pods, Secrets and Events are real (operator/kube.py's
Kube, with the real Job controller, scheduler, kubelet, quota admission, the loader image
and MinIO), and its ProductImports live where only it sees them, in a MemoryKube. Each
of them also exists on the API server, applied already cancelled, with no Job: the dev
operator ends it at once and never looks at it again, and it is the real owner of the
Jobs (the garbage collector deletes a Job whose owner does not exist). Imported as
`live_reconciler`, like imports_support.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from imports_support import get, running_loader
from kubernetes import config as k8s_config
from memory_kube import MemoryKube

from devenv import node, services
from devenv.component import DevEnvError
from devenv.waiting import wait_for
from productimport.engine.errors import TemporaryFailure
from productimport.engine.objectstore import MinioSettings
from productimport.models.resource import ANNOTATION_CANCEL, GROUP, KIND, VERSION
from productimport.operator.credentials import StsCredentials
from productimport.operator.jobs import job_name
from productimport.operator.kube import Kube
from productimport.operator.reconcile import Reconciler
from productimport.operator.settings import OperatorSettings

T = TypeVar("T")
SETTINGS_PREFIX = "PRODUCTIMPORT_OPERATOR_"


class LiveKube(Kube):
    """The real KubeApi, but for the ProductImports, which are kept in `memory`."""

    def __init__(self, api_client: Any) -> None:
        super().__init__(api_client)
        self.memory = MemoryKube()

    def get_import(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.memory.get_import(namespace, name)

    def list_imports(self, namespace: str) -> list[dict[str, Any]]:
        return self.memory.list_imports(namespace)

    def patch_status(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
        return self.memory.patch_status(obj, patch)

    def set_queue_position(
        self, namespace: str, name: str, version: str, position: int
    ) -> dict[str, Any] | None:
        return self.memory.set_queue_position(namespace, name, version, position)

    def annotate_import(self, obj: dict[str, Any], key: str, value: str) -> dict[str, Any] | None:
        return self.memory.annotate_import(obj, key, value)


class LiveOperator:
    """A Reconciler with the dev operator's settings (`overrides` on top), for the
    ProductImports of one namespace that the test applies with `apply`."""

    def __init__(
        self,
        cluster: Any,
        namespace: str,
        clock: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        (operator,) = [c for c in services.components(cluster.devenv) if c.name == "operator"]
        env = operator.env
        values = {
            k.removeprefix(SETTINGS_PREFIX).lower(): v
            for k, v in env.items()
            if k.startswith(SETTINGS_PREFIX)
        }
        self.settings = OperatorSettings(**{**values, **overrides})
        # The operator's own MinIO user mints the loaders' credentials, as in dev-up.
        minio = MinioSettings(
            endpoint=env["MINIO_ENDPOINT"],
            access_key=env["MINIO_ACCESS_KEY"],
            secret_key=env["MINIO_SECRET_KEY"],
        )
        self.kube = LiveKube(k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        extra = {"clock": clock} if clock is not None else {}
        self.reconciler = Reconciler(
            self.kube,
            self.settings,
            loader_credentials=StsCredentials(minio, self.settings.loader_credentials_seconds),
            **extra,
        )

    # -- ProductImports ----------------------------------------------------------------

    def apply(self, name: str, source: dict[str, str], catalog: str = "main", **spec: Any) -> str:
        """A ProductImport of an object source: on the API server (cancelled, ended by
        the dev operator without a Job) and, as it was meant, in this reconciler's memory
        under the same name and uid."""
        spec = {"catalog": catalog, "source": {"object": source}, **spec}
        doc = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "annotations": {ANNOTATION_CANCEL: "true"},
            },
            "spec": spec,
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(doc))

        def ended() -> dict | None:
            obj = get(self.cluster, "productimport", name, self.namespace) or {}
            return obj if (obj.get("status") or {}).get("reason") == "Cancelled" else None

        real = wait_for(f"the dev operator to end {name} (cancelled)", ended)["metadata"]
        # Created in `apply` order, a second apart, as the queue reads it (the API server's
        # creationTimestamp has whole seconds), with the real uid: the Jobs' owner.
        self.kube.memory.apply(self.namespace, name, spec)
        self.kube.memory.imports[(self.namespace, name)]["metadata"]["uid"] = real["uid"]
        return name

    def cancel(self, name: str) -> None:
        self.kube.memory.annotate(self.namespace, name, ANNOTATION_CANCEL, "true")

    def uid(self, name: str) -> str:
        return self.kube.memory.imports[(self.namespace, name)]["metadata"]["uid"]

    def status(self, name: str) -> dict[str, Any]:
        return self.kube.memory.status(self.namespace, name)

    # -- passes --------------------------------------------------------------------------

    def reconcile(self, name: str) -> None:
        """One pass, as kopf makes it; a TemporaryFailure is what kopf retries."""
        with contextlib.suppress(TemporaryFailure):
            self.reconciler.reconcile(self.namespace, name)

    def reconcile_until(self, what: str, probe: Callable[[], T | None], *names: str) -> T:
        """Passes over `names` (all the namespace's imports by default) until `probe`."""
        names = names or tuple(n for (ns, n) in self.kube.memory.imports if ns == self.namespace)

        def step() -> T | None:
            for name in names:
                self.reconcile(name)
            return probe()

        return wait_for(what, step, why=lambda: json.dumps({n: self.status(n) for n in names}))

    # -- what the cluster says -----------------------------------------------------------

    def job_name(self, name: str) -> str:
        return job_name(self.kube.memory.imports[(self.namespace, name)])

    def job_of(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_job(self.namespace, self.job_name(name))

    def loader_pod(self, name: str) -> dict[str, Any] | None:
        pods = self.kube.job_pods(self.namespace, self.job_name(name))
        return pods[0] if pods else None

    def progress_stage(self, name: str) -> str | None:
        catalog = self.kube.memory.imports[(self.namespace, name)]["spec"]["catalog"]
        progress = self.reconciler.reports.progress(self.namespace, catalog, self.uid(name))
        return (progress or {}).get("stage")


@contextlib.contextmanager
def frozen_loader(cluster: Any, namespace: str) -> Iterator[str]:
    """The namespace's running loader container, frozen (the cgroup freezer) until the
    block ends: a test can stop it at a stage with step_until."""
    loader = wait_for("the loader container", lambda: running_loader(cluster, namespace))
    node.freeze(loader, True)
    try:
        yield loader
    finally:
        with contextlib.suppress(OSError, DevEnvError):
            node.freeze(loader, False)
