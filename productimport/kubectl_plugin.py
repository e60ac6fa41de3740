"""`kubectl productimport`: the import lifecycle from a terminal, as a kubectl plugin.

Installed with the package as the console script `kubectl-productimport`; with it on
PATH, kubectl finds it (`kubectl productimport ...`, `kubectl plugin list`). Like kubectl
it reads the user's kubeconfig (`KUBECONFIG`, `--kubeconfig`, `--context`, `-n`), with
the official Python client.

Two ways to reach the system, per command:

- the REST API (`--api URL` or PRODUCTIMPORT_API_URL), with the kubeconfig user's bearer
  token or `--token` / PRODUCTIMPORT_API_TOKEN: upload, status, error reports, catalog
  versions and rollback, all authorized by the API (docs/api.md);
- without it, the cluster and MinIO directly: the file goes to the upload bucket under
  `<namespace>/` (the only place the operator and the admission policy accept an object
  source from) and a ProductImport is created with the kubeconfig's rights; status comes
  from the resource, the error report from `status.errorsRef` in MinIO (MINIO_ENDPOINT or
  `--minio-endpoint`, MINIO_ACCESS_KEY and MINIO_SECRET_KEY).

Exit codes: 0 done (an import that Succeeded); 1 the import Failed or was Cancelled, or
the API, the cluster or MinIO refused; 2 a usage error; 3 `watch --timeout` ran out.
docs/kubectl-plugin.md has the whole story.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import quote, urlsplit

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from productimport.models.resource import (
    ANNOTATION_FILENAME,
    ANNOTATION_UPLOADED_BY,
    GROUP,
    KIND,
    LABEL_API,
    LABEL_CATALOG,
    PLURAL,
    VERSION,
)

if TYPE_CHECKING:
    import httpx
    from kubernetes.client import ApiClient
    from minio import Minio

PROG = "kubectl productimport"
API_LABEL_VALUE = "kubectl"  # LABEL_API of the imports this plugin creates itself
DEFAULT_UPLOAD_BUCKET = "uploads"
TERMINAL = ("Succeeded", "Failed", "Cancelled")
# The loader's stages in order (status.progress.stage): the bar's steps.
STAGES = ("reading", "validating", "merging", "committing", "done")
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3
HEAD_BYTES = 64 * 1024
REPORT_CHUNK = 64 * 1024

app = typer.Typer(
    name=PROG,
    add_completion=False,
    rich_markup_mode="markdown",
    no_args_is_help=True,
    help="Bulk product-catalog imports (ProductImport resources) from kubectl: upload a "
    "file, watch it, read its rejected rows, list and roll back catalog versions.",
)
# soft_wrap: a message is one line, whatever the width (greppable, copyable).
err = Console(stderr=True, soft_wrap=True)


# -- options every command shares, as kubectl spells them ------------------------------------

KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        help="Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
        show_default=False,
    ),
]
ContextOpt = Annotated[
    str | None, typer.Option("--context", help="The kubeconfig context to use.", show_default=False)
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        "-n",
        help="Namespace (tenant); default: the context's, else 'default'.",
        show_default=False,
    ),
]
ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="PRODUCTIMPORT_API_URL",
        help="Base URL of the upload API; without it: the cluster and MinIO directly.",
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="PRODUCTIMPORT_API_TOKEN",
        help="Bearer token for --api (default: the kubeconfig user's token).",
        show_default=False,
    ),
]
MinioOpt = Annotated[
    str | None,
    typer.Option(
        "--minio-endpoint",
        envvar="MINIO_ENDPOINT",
        help="MinIO as host:port or http(s)://host:port, when there is no --api "
        "(keys: $MINIO_ACCESS_KEY, $MINIO_SECRET_KEY).",
        show_default=False,
    ),
]
CatalogOpt = Annotated[str, typer.Option("--catalog", "-c", help="The catalog.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON output.")]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"error: {escape(message)}", highlight=False)
    raise typer.Exit(code)


@dataclass
class Target:
    """Where the commands act: the kubeconfig's cluster and namespace, and the API when
    one is given."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace_flag: str | None = None
    api_url: str | None = None
    token_flag: str | None = None
    minio_endpoint: str | None = None

    # -- the kubeconfig --------------------------------------------------------------------

    @property
    def config_file(self) -> str:
        return self.kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"

    def _load(self) -> Any:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        try:
            config.load_kube_config(
                config_file=self.config_file,
                context=self.context,
                client_configuration=cfg,
                persist_config=False,
            )
        except (ConfigException, OSError) as exc:
            fail(f"cannot use the kubeconfig {self.config_file}: {exc}")
        return cfg

    def kube(self) -> ApiClient:
        from kubernetes import client

        if not hasattr(self, "_kube"):
            self._kube = client.ApiClient(self._load())
        return self._kube

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.kube())

    @cached_property
    def namespace(self) -> str:
        if self.namespace_flag:
            return self.namespace_flag
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            contexts, active = config.list_kube_config_contexts(self.config_file)
        except (ConfigException, OSError):
            return "default"  # no kubeconfig: the API alone may still serve
        chosen = active
        if self.context:
            chosen = next((c for c in contexts if c.get("name") == self.context), None)
            if chosen is None:
                fail(f"context {self.context!r} is not in {self.config_file}")
        return ((chosen or {}).get("context") or {}).get("namespace") or "default"

    def kube_user(self) -> str | None:
        from kubernetes import config
        from kubernetes.config.config_exception import ConfigException

        try:
            contexts, active = config.list_kube_config_contexts(self.config_file)
        except (ConfigException, OSError):
            return None
        chosen = active
        if self.context:
            chosen = next((c for c in contexts if c.get("name") == self.context), active)
        return ((chosen or {}).get("context") or {}).get("user")

    # -- the REST API ---------------------------------------------------------------------

    def token(self) -> str:
        if self.token_flag:
            return self.token_flag
        auth = (self._load().api_key or {}).get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth.split(" ", 1)[1]
        fail(
            "--api needs a bearer token: pass --token or set PRODUCTIMPORT_API_TOKEN (the "
            "kubeconfig's user has no token; in Kubernetes auth mode use `kubectl create "
            "token SA --audience productimport`)",
            EXIT_USAGE,
        )

    def catalog_url(self, catalog: str, rest: str = "") -> str:
        assert self.api_url
        base = self.api_url.rstrip("/")
        ns, cat = quote(self.namespace, safe=""), quote(catalog, safe="")
        return f"{base}/api/v1/namespaces/{ns}/catalogs/{cat}{rest}"

    def http(self) -> httpx.Client:
        import httpx

        return httpx.Client(
            headers={"Authorization": f"Bearer {self.token()}", "User-Agent": PROG},
            timeout=httpx.Timeout(60.0, connect=10.0),
        )

    # -- MinIO ------------------------------------------------------------------------------

    def minio(self) -> Minio:
        from productimport.engine.s3store import MinioSettings, minio_client

        settings = MinioSettings()
        endpoint = self.minio_endpoint or settings.endpoint
        if "://" in endpoint:
            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                fail(f"--minio-endpoint {endpoint!r}: host:port or http(s)://host:port", 2)
            settings.secure = parts.scheme == "https"
            endpoint = parts.netloc
        settings.endpoint = endpoint
        if not settings.access_key or not settings.secret_key:
            fail(
                "without --api the file goes straight to MinIO: set MINIO_ACCESS_KEY and "
                "MINIO_SECRET_KEY (or pass --api to upload through the REST API)",
                EXIT_USAGE,
            )
        return minio_client(settings)


def api_error(response: httpx.Response) -> str:
    """The API's own words for a refusal ({"error": {"code", "message"}})."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:500]}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = f" ({error['code']})" if error.get("code") else ""
        return f"HTTP {response.status_code}{code}: {error.get('message', '')}"
    return f"HTTP {response.status_code}: {json.dumps(body)[:500]}"


def call(send: Callable[[], httpx.Response], what: str) -> httpx.Response:
    import httpx

    try:
        response = send()
    except httpx.HTTPError as exc:
        fail(f"{what}: the API cannot be reached: {exc}")
    if response.status_code >= 400:
        fail(f"{what}: {api_error(response)}")
    return response


def kube_call(send: Callable[[], Any], what: str) -> Any:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return send()
    except ApiException as exc:
        message = exc.reason
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(exc.body or "{}").get("message") or message
        fail(f"{what}: {exc.status} {message}")
    except HTTPError as exc:
        fail(f"{what}: the cluster cannot be reached: {exc}")


def target(
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    api: str | None = None,
    token: str | None = None,
    minio_endpoint: str | None = None,
) -> Target:
    return Target(kubeconfig, context, namespace, api or None, token or None, minio_endpoint)


# -- what an import looks like, from the API or the resource -----------------------------------


@dataclass
class Snapshot:
    name: str
    namespace: str
    catalog: str
    phase: str
    reason: str | None
    message: str | None
    counts: dict[str, int]
    progress: dict[str, Any] | None
    catalog_version: int | None
    dry_run: bool
    created: str | None
    errors_ref: str | None = None
    queue_position: int | None = None

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL


def from_resource(obj: dict[str, Any]) -> Snapshot:
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    return Snapshot(
        name=meta["name"],
        namespace=meta["namespace"],
        catalog=spec.get("catalog") or (meta.get("labels") or {}).get(LABEL_CATALOG, ""),
        phase=status.get("phase") or "Queued",
        reason=status.get("reason"),
        message=status.get("message"),
        counts=status.get("counts") or {},
        progress=status.get("progress"),
        catalog_version=status.get("catalogVersion"),
        dry_run=bool(spec.get("dryRun")),
        created=meta.get("creationTimestamp"),
        errors_ref=status.get("errorsRef"),
        queue_position=status.get("queuePosition"),
    )


def from_api(body: dict[str, Any]) -> Snapshot:
    return Snapshot(
        name=body["name"],
        namespace=body["namespace"],
        catalog=body["catalog"],
        phase=body.get("phase") or "Queued",
        reason=body.get("reason"),
        message=body.get("message"),
        counts=body.get("counts") or {},
        progress=body.get("progress"),
        catalog_version=body.get("catalogVersion"),
        dry_run=bool(body.get("dryRun")),
        created=body.get("createdAt"),
    )


def read_resource(t: Target, name: str) -> dict[str, Any]:
    return kube_call(
        lambda: t.custom().get_namespaced_custom_object(GROUP, VERSION, t.namespace, PLURAL, name),
        f"productimport {t.namespace}/{name}",
    )


def catalog_of(t: Target, name: str, catalog: str | None) -> str:
    """The import's catalog (the REST paths name it): given, else read from the resource."""
    return catalog or from_resource(read_resource(t, name)).catalog


def snapshot_reader(t: Target, name: str, catalog: str | None) -> Callable[[], Snapshot]:
    if t.api_url:
        url = t.catalog_url(catalog_of(t, name, catalog), f"/imports/{quote(name, safe='')}")
        client = t.http()
        return lambda: from_api(call(lambda: client.get(url), f"import {name}").json())
    return lambda: from_resource(read_resource(t, name))


def counts_text(counts: dict[str, int]) -> str:
    keys = ("rows", "created", "updated", "unchanged", "deleted", "rejected")
    return ", ".join(f"{k} {counts.get(k, 0):,}" for k in keys)


def summary(s: Snapshot) -> str:
    line = f"{s.namespace}/{s.name} {s.phase}"
    if s.reason and s.phase != "Succeeded":
        line += f" ({s.reason})"
    line += f": {counts_text(s.counts)}"
    if s.catalog_version is not None and s.phase == "Succeeded":
        line += f"; catalog {s.catalog} version {s.catalog_version}"
    if s.dry_run:
        line += " (dry run: nothing committed)"
    if s.message and s.phase != "Succeeded":
        line += f"\n  {s.message}"
    return line


# -- upload -----------------------------------------------------------------------------------


def detect_format(path: Path, declared: str | None) -> tuple[str, bool]:
    """The file's format as the API decides it: the declared one checked against the
    first bytes, else what the bytes say (csv, json, jsonl; gzip or not)."""
    from productimport.engine.formats import sniff

    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    found = sniff(head)
    if found.kind is None:
        fail(f"{path}: unsupported file content: {found.reason}; send csv, json or jsonl")
    if declared and declared != found.kind and {declared, found.kind} != {"json", "jsonl"}:
        fail(f"{path} was declared as {declared} but its content looks like {found.kind}")
    return found.kind, found.gzip


def object_key(namespace: str, catalog: str, now: datetime) -> str:
    """The API's layout (api/uploads.py object_key): generated, never the file's name,
    under `<namespace>/`, the only place an object source of this namespace may be."""
    return f"{namespace}/{catalog}/{now:%Y/%m/%d}/{uuid.uuid4()}.upload"


def manifest(
    t: Target,
    *,
    catalog: str,
    bucket: str,
    key: str,
    fmt: str,
    preset: str | None,
    mode: str | None,
    dry_run: bool,
    notify: dict[str, str],
    filename: str,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "catalog": catalog,
        "source": {"object": {"bucket": bucket, "key": key}},
        "format": fmt,
        "dryRun": dry_run,
    }
    if preset:
        spec["preset"] = preset
    if mode:
        spec["mode"] = mode
    if notify:
        spec["notify"] = notify
    annotations = {ANNOTATION_FILENAME: "".join(c if c.isprintable() else "?" for c in filename)}
    user = t.kube_user()
    if user:
        annotations[ANNOTATION_UPLOADED_BY] = f"kubeconfig user {user}"[:253]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "generateName": f"{catalog[:40]}-",
            "namespace": t.namespace,
            "labels": {LABEL_CATALOG: catalog, LABEL_API: API_LABEL_VALUE},
            "annotations": annotations,
        },
        "spec": spec,
    }


def upload_via_api(
    t: Target,
    path: Path,
    catalog: str,
    form: dict[str, str],
    content_type: str,
) -> str:
    with t.http() as client, path.open("rb") as f:
        response = call(
            lambda: client.post(
                t.catalog_url(catalog, "/imports"),
                files={"file": (path.name, f, content_type)},
                data=form,
                timeout=None,  # a big file takes as long as it takes
            ),
            f"upload of {path}",
        )
    return response.json()["name"]


def upload_via_minio(
    t: Target,
    path: Path,
    catalog: str,
    fmt: str,
    *,
    bucket: str,
    preset: str | None,
    mode: str | None,
    dry_run: bool,
    notify: dict[str, str],
) -> str:
    from minio.error import MinioException

    namespace = t.namespace
    key = object_key(namespace, catalog, datetime.now(UTC))
    body = manifest(
        t,
        catalog=catalog,
        bucket=bucket,
        key=key,
        fmt=fmt,
        preset=preset,
        mode=mode,
        dry_run=dry_run,
        notify=notify,
        filename=path.name,
    )
    client = t.minio()
    try:
        client.fput_object(bucket, key, str(path), content_type="application/octet-stream")
    except (MinioException, OSError) as exc:
        fail(f"storing {path} at s3://{bucket}/{key}: {exc}")
    created = False
    try:
        obj = kube_call(
            lambda: t.custom().create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            ),
            f"creating a ProductImport in {namespace}",
        )
        created = True
    finally:
        if not created:  # no orphan object without its import
            try:
                client.remove_object(bucket, key)
            except (MinioException, OSError) as exc:
                err.print(f"warning: s3://{bucket}/{key} could not be removed: {exc}")
    return obj["metadata"]["name"]


CONTENT_TYPES = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}


@app.command()
def upload(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The product file.")
    ],
    catalog: CatalogOpt,
    preset: Annotated[
        str | None,
        typer.Option(help="Column mapping: native, elasticpath, shopify, woocommerce."),
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="upsert (default), create, update or replace.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, json or jsonl (default: from the content)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count; commit nothing.")
    ] = False,
    notify_email: Annotated[
        str | None,
        typer.Option(
            "--notify-email",
            help="Mail the outcome: an address, or (with --api) 'true' for your token's "
            "or the namespace's.",
        ),
    ] = None,
    notify_webhook: Annotated[
        str | None,
        typer.Option("--notify-webhook", help="An https URL the outcome is POSTed to."),
    ] = None,
    watch_it: Annotated[
        bool, typer.Option("--watch", "-w", help="Then follow it until it ends (as `watch`).")
    ] = False,
    upload_bucket: Annotated[
        str, typer.Option("--upload-bucket", help="Without --api: the upload bucket.")
    ] = DEFAULT_UPLOAD_BUCKET,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
    minio_endpoint: MinioOpt = None,
) -> None:
    """Upload FILE and start an import of it; prints the import's name.

    Through the REST API with --api (or PRODUCTIMPORT_API_URL); otherwise the file goes
    to MinIO under the namespace's folder of the upload bucket and a ProductImport is
    created with your kubeconfig."""
    t = target(kubeconfig, context, namespace, api, token, minio_endpoint)
    for value, allowed, what in (
        (preset, ("native", "elasticpath", "shopify", "woocommerce"), "--preset"),
        (mode, ("upsert", "create", "update", "replace"), "--mode"),
        (fmt, ("csv", "json", "jsonl"), "--format"),
    ):
        if value is not None and value not in allowed:
            fail(f"{what} {value!r}: one of {', '.join(allowed)}", EXIT_USAGE)
    kind, gz = detect_format(file, fmt)
    if t.api_url:
        form = {"dryRun": str(dry_run).lower()}
        form.update({k: v for k, v in (("preset", preset), ("mode", mode)) if v})
        if fmt:
            form["format"] = fmt
        if notify_email:
            form["notifyEmail"] = notify_email
        if notify_webhook:
            form["notifyWebhook"] = notify_webhook
        ctype = "application/gzip" if gz else CONTENT_TYPES[kind]
        name = upload_via_api(t, file, catalog, form, ctype)
    else:
        notify: dict[str, str] = {}
        if notify_email:
            if "@" not in notify_email:
                fail(
                    "--notify-email without --api must be an address (the API resolves "
                    "'true' to your token's or the namespace's)",
                    EXIT_USAGE,
                )
            notify["email"] = notify_email
        if notify_webhook:
            notify["webhook"] = notify_webhook
        name = upload_via_minio(
            t,
            file,
            catalog,
            kind,
            bucket=upload_bucket,
            preset=preset,
            mode=mode,
            dry_run=dry_run,
            notify=notify,
        )
    print(name, flush=True)
    if watch_it:
        raise typer.Exit(follow(snapshot_reader(t, name, catalog), name, timeout=0))


# -- watch ------------------------------------------------------------------------------------


def follow(
    read: Callable[[], Snapshot], name: str, *, timeout: float, interval: float = 1.0
) -> int:
    """Show the import's progress until it ends; the exit code for its outcome."""
    deadline = time.monotonic() + timeout if timeout else None
    interactive = err.is_terminal
    spinner = SpinnerColumn(finished_text="[green]✓[/]")
    progress = Progress(
        spinner,
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=err,
        disable=not interactive,
    )
    last_line = ""
    with progress:
        task = progress.add_task(name, total=len(STAGES), detail="")
        while True:
            s = read()
            stage = (s.progress or {}).get("stage") or ""
            rows = (s.progress or {}).get("rowsRead")
            if s.terminal:
                step = len(STAGES)
            elif stage in STAGES:
                step = STAGES.index(stage)
            else:
                step = 0
            detail = stage + (f" {rows:,} rows" if isinstance(rows, int) else "")
            if s.terminal:
                # Short enough for the bar's line; the summary below has every count.
                c = s.counts
                detail = f"{c.get('rows', 0):,} rows, {c.get('rejected', 0):,} rejected"
                if s.phase != "Succeeded":
                    spinner.finished_text = Text("✗", style="red")
            progress.update(
                task,
                description=f"{escape(name)} [bold]{s.phase}[/]",
                completed=step,
                detail=escape(detail),
            )
            if not interactive:
                # No live bar on a pipe or a log: one line a change instead.
                line = f"{name} {s.phase}" + (f": {detail}" if detail and not s.terminal else "")
                if line != last_line:
                    err.print(escape(line), highlight=False)
                    last_line = line
            if s.terminal:
                break
            if deadline is not None and time.monotonic() > deadline:
                progress.stop()
                err.print(f"{escape(name)} is still {s.phase} after {timeout:g}s")
                return EXIT_TIMEOUT
            time.sleep(interval)
    print(summary(s), flush=True)
    return 0 if s.phase == "Succeeded" else EXIT_FAILED


@app.command()
def watch(
    name: Annotated[str, typer.Argument(help="The ProductImport's name.")],
    catalog: Annotated[
        str | None,
        typer.Option("--catalog", "-c", help="Its catalog (with --api; default: read it)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Give up after this many seconds (exit 3); 0: never.")
    ] = 0,
    interval: Annotated[float, typer.Option(help="Seconds between looks.")] = 1.0,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Follow an import with a progress bar until it ends.

    Exit 0 when it Succeeded, 1 when it Failed or was Cancelled, 3 on --timeout."""
    t = target(kubeconfig, context, namespace, api, token)
    read = snapshot_reader(t, name, catalog)
    raise typer.Exit(follow(read, name, timeout=timeout, interval=max(0.2, interval)))


# -- errors -----------------------------------------------------------------------------------

EMPTY_REPORT = {"csv": b"line,column,code,message,value\n", "json": b"[]"}


def report_chunks_minio(t: Target, s: Snapshot, kind: str) -> Iterator[bytes]:
    """The report next to status.errorsRef (errors.csv; errors.json beside it)."""
    from minio.error import MinioException, S3Error

    from productimport.engine.objectstore import parse_s3_url

    if not s.errors_ref:
        yield EMPTY_REPORT[kind]  # the import rejected nothing
        return
    if not s.errors_ref.startswith("s3://"):
        fail(f"status.errorsRef {s.errors_ref!r} is not in MinIO; use --api")
    bucket, key = parse_s3_url(s.errors_ref)
    key = f"{key.rsplit('/', 1)[0]}/errors.{kind}"
    client = t.minio()
    try:
        response = client.get_object(bucket, key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            yield EMPTY_REPORT[kind]
            return
        fail(f"reading s3://{bucket}/{key}: {exc}")
    except (MinioException, OSError) as exc:
        fail(f"reading s3://{bucket}/{key}: {exc}")
    try:
        yield from response.stream(REPORT_CHUNK)
    finally:
        response.close()
        response.release_conn()


def report_chunks_api(t: Target, name: str, catalog: str, kind: str) -> Iterator[bytes]:
    import httpx

    accept = "application/json" if kind == "json" else "text/csv"
    url = t.catalog_url(catalog, f"/imports/{quote(name, safe='')}/errors")
    with t.http() as client:
        try:
            with client.stream("GET", url, headers={"Accept": accept}) as response:
                if response.status_code >= 400:
                    response.read()
                    fail(f"error report of {name}: {api_error(response)}")
                yield from response.iter_bytes(REPORT_CHUNK)
        except httpx.HTTPError as exc:
            fail(f"error report of {name}: the API cannot be reached: {exc}")


@app.command()
def errors(
    name: Annotated[str, typer.Argument(help="The ProductImport's name.")],
    as_json: JsonOpt = False,
    catalog: Annotated[
        str | None,
        typer.Option("--catalog", "-c", help="Its catalog (with --api; default: read it)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
    minio_endpoint: MinioOpt = None,
) -> None:
    """Print an import's rejected rows (CSV, or --json).

    Each row's line, column, code, message and value, streamed however many there are.
    The import must have ended."""
    t = target(kubeconfig, context, namespace, api, token, minio_endpoint)
    kind = "json" if as_json else "csv"
    if t.api_url:
        chunks = report_chunks_api(t, name, catalog_of(t, name, catalog), kind)
    else:
        s = from_resource(read_resource(t, name))
        if not s.terminal:
            fail(f"import {name!r} is {s.phase}; the report comes at the end")
        chunks = report_chunks_minio(t, s, kind)
    sink = output.open("wb") if output else sys.stdout.buffer
    try:
        for chunk in chunks:
            sink.write(chunk)
        sink.flush()
    finally:
        if output:
            sink.close()


# -- versions and rollback (REST only) -------------------------------------------------------


def require_api(t: Target, command: str) -> None:
    if not t.api_url:
        fail(
            f"{command} goes through the REST API: pass --api URL or set PRODUCTIMPORT_API_URL",
            EXIT_USAGE,
        )


def version_row(v: dict[str, Any]) -> list[str]:
    counts = v.get("counts") or {}
    made_by = v.get("importName") or (
        f"rollback to {v['rollbackOf']}" if v.get("rollbackOf") else v.get("importUid") or "-"
    )
    return [
        str(v["version"]),
        str(v.get("createdAt", ""))[:19].replace("T", " "),
        str(v.get("products", 0)),
        *(str(counts.get(k, 0)) if counts else "-" for k in ("created", "updated", "deleted")),
        made_by,
    ]


def columns(header: list[str], rows: list[list[str]]) -> str:
    """kubectl's plain table: upper-case headers, columns padded by three spaces."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["   ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


@app.command()
def versions(
    catalog: CatalogOpt,
    as_json: JsonOpt = False,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """List a catalog's versions, newest first (needs --api).

    Each with the import (or rollback) that made it and its counts."""
    t = target(kubeconfig, context, namespace, api, token)
    require_api(t, "versions")
    with t.http() as client:
        body = call(lambda: client.get(t.catalog_url(catalog, "/versions")), "versions").json()
    items = body.get("items", [])
    if as_json:
        print(json.dumps(items, indent=2))
        return
    if not items:
        err.print(f"catalog {catalog!r} in {t.namespace} has no versions yet")
        return
    header = ["VERSION", "CREATED", "PRODUCTS", "ADDED", "UPDATED", "DELETED", "MADE BY"]
    print(columns(header, [version_row(v) for v in items]))


@app.command()
def rollback(
    catalog: CatalogOpt,
    to: Annotated[int, typer.Option("--to", min=1, help="The version to restore.")],
    as_json: JsonOpt = False,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Make version N's products current again (needs --api).

    As a new version: the versions in between stay, and can be rolled back to in turn."""
    t = target(kubeconfig, context, namespace, api, token)
    require_api(t, "rollback")
    with t.http() as client:
        made = call(
            lambda: client.post(t.catalog_url(catalog, "/rollback"), json={"version": to}),
            f"rollback of {catalog} to version {to}",
        ).json()
    if as_json:
        print(json.dumps(made, indent=2))
        return
    print(
        f"catalog {catalog}: version {made['version']} has version {to}'s products "
        f"({made.get('products', 0)} products)"
    )


# -- get --------------------------------------------------------------------------------------


def age(created: str | None, now: datetime) -> str:
    if not created:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@app.command()
def get(
    name: Annotated[str | None, typer.Argument(help="One import; default: all.")] = None,
    catalog: Annotated[
        str | None, typer.Option("--catalog", "-c", help="Only this catalog's imports.")
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Every namespace you may list.")
    ] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="json or name; default: a table.")
    ] = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespace: NamespaceOpt = None,
) -> None:
    """List imports with their phase and counts, oldest first.

    Like `kubectl get productimports`; -A for every namespace, -o json|name|wide."""
    if output not in (None, "json", "name", "wide"):
        fail(f"--output {output!r}: json, name or wide", EXIT_USAGE)
    t = target(kubeconfig, context, namespace)
    custom = t.custom()
    selector = f"{LABEL_CATALOG}={catalog}" if catalog else None
    if name:
        items = [read_resource(t, name)]
    elif all_namespaces:
        items = kube_call(
            lambda: custom.list_cluster_custom_object(
                GROUP, VERSION, PLURAL, label_selector=selector
            ),
            "listing productimports",
        )["items"]
    else:
        items = kube_call(
            lambda: custom.list_namespaced_custom_object(
                GROUP, VERSION, t.namespace, PLURAL, label_selector=selector
            ),
            f"listing productimports in {t.namespace}",
        )["items"]
    items.sort(key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]))
    if output == "json":
        print(json.dumps(items, indent=2))
        return
    if output == "name":
        for o in items:
            print(f"{PLURAL}.{GROUP}/{o['metadata']['name']}")
        return
    if not items:
        where = "any namespace" if all_namespaces else f"{t.namespace} namespace"
        err.print(f"No productimports found in {where}.")
        return
    now = datetime.now(UTC)
    # kubectl get's own columns (the CRD's additionalPrinterColumns), in the same order.
    header = ["NAME", "CATALOG", "PHASE", "ROWS", "CREATED", "UPDATED", "REJECTED", "QUEUE", "AGE"]
    if output == "wide":
        header.append("MESSAGE")
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = []
    for o in items:
        s = from_resource(o)
        c = s.counts
        row = [s.name, s.catalog, s.phase]
        row += [str(c[k]) if k in c else "" for k in ("rows", "created", "updated", "rejected")]
        row.append(str(s.queue_position) if s.queue_position else "")
        row.append(age(s.created, now))
        if output == "wide":
            row.append(s.message or "")
        if all_namespaces:
            row.insert(0, s.namespace)
        rows.append(row)
    print(columns(header, rows))


def main() -> None:
    # kubectl runs a plugin as `kubectl-productimport ARGS`; its help speaks as kubectl.
    app(prog_name=PROG)


if __name__ == "__main__":
    main()
