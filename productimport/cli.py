"""The `productimport` command: the same engine on a laptop and inside the import Job."""

# The SIGTERM handler is set before the other imports, on purpose (see below).
# ruff: noqa: E402

from __future__ import annotations

import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated


class Terminated(BaseException):
    """SIGTERM (a cancel deletes the Job, a node is drained): stop between two steps.
    Not an ImportFailure, so no result document claims an outcome: the catalog's history
    says whether the import committed (a commit under way in delta-rs completes first,
    the handler runs when it returns), and a Job that retries finds it there."""


_terminating = False


def _terminated(signum: int, frame: object) -> None:
    # Stop between two steps, saying so (exit 143). Without a handler, a loader run as
    # its container's PID 1 would ignore SIGTERM and run on, maybe to a commit, until the
    # grace period ends in SIGKILL.
    global _terminating
    _terminating = True
    raise Terminated()


# At once, before the rest loads: a cancel can delete the Job the moment its Pod starts,
# and a loader run as its container's PID 1 ignores a signal it has no handler for. The
# operator's Pods no longer run it as PID 1 (operator/jobs.py, shareProcessNamespace);
# `docker run` and other runtimes may. A handler set only before the import ran (after
# typer, DuckDB and delta-rs had loaded, a second or more) let such a loader run on to a
# commit (CommittedBeforeCancel).
signal.signal(signal.SIGTERM, _terminated)

import typer
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table

from productimport.engine.choices import InputFormat, Mode, Preset
from productimport.engine.errors import EXIT_BAD_DATA, EXIT_UNEXPECTED, ImportFailure

if TYPE_CHECKING:
    from productimport.engine.catalog import Catalog

# The engine proper (DuckDB, the store clients, the catalog's models) is imported by the
# command that needs it: `--help`, a typo and `products list` do not pay for the import
# pipeline, and an import does not pay for the listing.

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Bulk product-catalog imports with DuckDB."
)
products_app = typer.Typer(no_args_is_help=True, help="Read products from a catalog.")
catalog_app = typer.Typer(no_args_is_help=True, help="Catalog versions and rollback.")
app.add_typer(products_app, name="products")
app.add_typer(catalog_app, name="catalog")

err = Console(stderr=True)
out = Console()
LOG_EVERY_SECONDS = 10.0

CatalogOpt = Annotated[str, typer.Option("--catalog", "-c", help="Target catalog name.")]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="Namespace (tenant).")]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Catalog store: a directory, or s3://BUCKET\\[/prefix] for MinIO "
        "(default: $PRODUCTIMPORT_STORE or ./.productimport-store).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def _catalog(store: str | None, namespace: str, name: str) -> Catalog:
    from productimport.engine.catalog import Catalog
    from productimport.engine.objectstore import open_store

    return Catalog(open_store(store), namespace, name)


def _fail_usage(message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"phase": "Failed", "reason": "InvalidOptions", "message": message}))
    else:
        err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_BAD_DATA)


@app.command("import")
def import_command(
    source: Annotated[str, typer.Argument(help="A file path, s3://bucket/key or https:// URL.")],
    catalog: CatalogOpt,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    format: Annotated[InputFormat | None, typer.Option(help="Default: from the name.")] = None,
    preset: Annotated[Preset, typer.Option(help="Column mapping preset.")] = Preset.native,
    mapping: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=FIELD override (repeatable); FIELD 'ignore' drops a column."),
    ] = None,
    mode: Annotated[Mode, typer.Option(help="upsert, create, update or replace.")] = Mode.upsert,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and diff only.")] = False,
    import_id: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    sequence: Annotated[
        int | None,
        typer.Option(
            help="Fencing sequence (the operator's): refuse to commit over a catalog version "
            "an import with a higher sequence committed.",
        ),
    ] = None,
    max_errors: Annotated[
        int | None, typer.Option(help="Fail above this many rejected rows.")
    ] = 1000,
    max_error_ratio: Annotated[
        float | None, typer.Option(help="Fail above this share of rejected rows.")
    ] = 0.05,
    delimiter: Annotated[str | None, typer.Option(help="CSV delimiter (default: sniffed).")] = None,
    quote: Annotated[str, typer.Option(help="CSV quote character.")] = '"',
    escape: Annotated[str | None, typer.Option(help="CSV escape (default: the quote).")] = None,
    encoding: Annotated[str, typer.Option(help="utf-8 (BOM ok) or latin-1.")] = "utf-8",
    header: Annotated[bool, typer.Option("--header/--no-header")] = True,
    gzip: Annotated[
        bool | None, typer.Option("--gzip/--no-gzip", help="Default: from the content.")
    ] = None,
    memory_limit: Annotated[str | None, typer.Option(help="DuckDB memory limit, e.g. 1GB.")] = None,
    threads: Annotated[int | None, typer.Option(help="DuckDB threads.")] = None,
    stage: Annotated[
        str,
        typer.Option(
            help="all, or one step of a partitioned import (the operator's Jobs; "
            "docs/scaling.md): prepare, merge or commit.",
        ),
    ] = "all",
    workers: Annotated[int, typer.Option(help="Merge Pods of a partitioned import.")] = 1,
    worker: Annotated[
        int,
        typer.Option(
            envvar="JOB_COMPLETION_INDEX",
            help="This merge Pod's number (an Indexed Job sets JOB_COMPLETION_INDEX).",
        ),
    ] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Import a product file into a catalog."""
    from pydantic import ValidationError

    from productimport.engine.options import CsvOptions, ErrorPolicy, ImportOptions

    pairs = {}
    for item in mapping or []:
        column, sep, field = item.rpartition("=")
        if not sep or not column:
            _fail_usage(f"--mapping takes COLUMN=FIELD, got {item!r}", as_json)
        pairs[column] = field
    try:
        options = ImportOptions(
            source=source,
            catalog=catalog,
            namespace=namespace,
            store=store,
            format=format,
            gzip=gzip,
            preset=preset,
            mapping=pairs,
            mode=mode,
            dry_run=dry_run,
            csv=CsvOptions(
                delimiter=delimiter, quote=quote, escape=escape, encoding=encoding, header=header
            ),
            error_policy=ErrorPolicy(maxErrors=max_errors, maxErrorRatio=max_error_ratio),
            memory_limit=memory_limit,
            threads=threads,
            sequence=sequence,
            stage=stage,  # type: ignore[arg-type]  # checked by ImportOptions
            workers=workers,
            worker=worker,
            **({"import_id": import_id} if import_id else {}),
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        _fail_usage(problems, as_json)
        return

    # On a terminal a spinner; anywhere else (a Job's log: `kubectl logs`) a line per
    # stage and, while a stage lasts, one every LOG_EVERY_SECONDS.
    logged = {"stage": "", "at": 0.0}
    with err.status("starting", spinner="dots") as status:

        def show(stage: str, rows: int | None, note: str | None) -> None:
            label = f"{stage}" + (f" ({rows:,} rows)" if rows is not None else "")
            status.update(label)
            if note:
                err.print(note)
            now = time.monotonic()
            if not err.is_terminal and (
                stage != logged["stage"] or now - logged["at"] >= LOG_EVERY_SECONDS
            ):
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                err.print(f"{stamp} progress: {label}", markup=False, highlight=False)
                logged.update(stage=stage, at=now)

        from productimport.engine.progress import ProgressReporter
        from productimport.engine.runner import run_import

        progress = ProgressReporter(on_change=show)
        reason = message = None  # set when the import failed before it had a result
        try:
            result, code = run_import(options, progress=progress)
        except ImportFailure as failure:  # failures before a result could be written
            result, code = None, failure.exit_code
            message, reason = failure.message, failure.reason
        except Exception as exc:
            if _terminating:
                # DuckDB turns a signal handler's exception raised during a query into its
                # own "Query interrupted": still the SIGTERM.
                raise Terminated() from exc
            result, code = None, EXIT_UNEXPECTED
            message, reason = f"unexpected error: {exc!r}", "InternalError"
    if result is None and reason is not None:
        if as_json:
            print(json.dumps({"phase": "Failed", "reason": reason, "message": message}))
        else:
            err.print(f"[red]Failed[/red] ({reason}): {message}")
        raise typer.Exit(code)
    if result is None:  # a partitioned import's step, done; the commit step reports
        step = {"phase": "Running", "stage": stage, "message": f"the {stage} step is done"}
        print(json.dumps(step) if as_json else step["message"])
        raise typer.Exit(code)
    if as_json:
        print(result.model_dump_json())
    else:
        colour = "green" if result.phase == "Succeeded" else "red"
        out.print(f"[{colour}]{result.phase}[/{colour}] ({result.reason}): {result.message}")
        c = result.counts
        table = Table(
            "rows", "created", "updated", "unchanged", "deleted", "rejected", "catalog version"
        )
        table.add_row(
            *(
                str(v)
                for v in (
                    c.rows,
                    c.created,
                    c.updated,
                    c.unchanged,
                    c.deleted,
                    c.rejected,
                    result.catalogVersion,
                )
            )
        )
        out.print(table)
        for e in result.errors:
            out.print(escape_markup(f"  line {e.line} [{e.code}] {e.column or ''}: {e.message}"))
        if result.counts.rejected:
            out.print(f"full error report: {result.errorsRef}")
    raise typer.Exit(code)


@products_app.command("list")
def products_list(
    catalog: CatalogOpt,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    version: Annotated[int | None, typer.Option(help="Default: the current version.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List products (ordered by SKU)."""
    from productimport.engine.products import list_products

    products, total = list_products(
        _catalog(store, namespace, catalog), offset=offset, limit=limit, version=version
    )
    if as_json:
        print(json.dumps(products, default=str))
        return
    table = Table("sku", "name", "status", "price", "parent", title=f"{total} products")
    for p in products:
        table.add_row(
            p["sku"],
            p["name"] or "",
            p["status"] or "",
            "" if p["price"] is None else f"{p['price']:g} {p['currency'] or ''}",
            p["parent_sku"] or "",
        )
    out.print(table)


@catalog_app.command("versions")
def catalog_versions(
    catalog: CatalogOpt,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the catalog's versions, newest first."""
    history = list(_catalog(store, namespace, catalog).history())
    if as_json:
        print(json.dumps([m.model_dump(mode="json") for m in history]))
        return
    table = Table("version", "products", "import", "created", "note")
    for m in history:
        note = f"rollback to {m.rollbackOf}" if m.rollbackOf else ""
        table.add_row(
            str(m.version),
            str(m.products),
            m.importId or "",
            m.createdAt.isoformat(timespec="seconds"),
            note,
        )
    out.print(table)


@catalog_app.command("rollback")
def catalog_rollback(
    catalog: CatalogOpt,
    to: Annotated[int, typer.Option("--to", help="The version to make current again.")],
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make an earlier version current again (recorded as a new version)."""
    try:
        manifest = _catalog(store, namespace, catalog).rollback(to)
    except ImportFailure as failure:
        _fail_usage(failure.message, as_json)
        return
    if as_json:
        print(manifest.model_dump_json())
    else:
        out.print(
            f"catalog {namespace}/{catalog} is now version {manifest.version} "
            f"(the products of version {to})"
        )


@catalog_app.command("location")
def catalog_location(
    catalog: CatalogOpt,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
) -> None:
    """Print where the catalog's Delta table is, for other tools (docs/operations.md)."""
    print(_catalog(store, namespace, catalog).table_ref)


@catalog_app.command("migrate")
def catalog_migrate(
    catalog: CatalogOpt,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take a catalog of the former layout (CURRENT, manifests, snapshots) into its Delta
    table now rather than at its next import; its history is kept. Safe to repeat."""
    from productimport.engine.legacy import legacy_history

    cat = _catalog(store, namespace, catalog)
    former = legacy_history(cat)
    head = cat.head()  # migrates, or finishes a migration that stopped part way
    report = {
        "table": cat.table_ref,
        "version": head.version,
        "products": head.products,
        "formerVersions": len(former),
        "formerObjects": [cat.ref(p) for p in ("CURRENT", "versions/", "snapshots/")]
        if former
        else [],
    }
    if as_json:
        print(json.dumps(report))
        return
    if not former:
        out.print(f"catalog {namespace}/{catalog} has nothing of the former layout")
        return
    out.print(
        f"catalog {namespace}/{catalog}: {len(former)} former versions are versions 1 to "
        f"{len(former)} of {report['table']} (now version {head.version}, {head.products} "
        "products). The former objects (CURRENT, versions/, snapshots/) are left in place "
        "and may be deleted."
    )


@catalog_app.command("vacuum")
def catalog_vacuum(
    catalog: CatalogOpt,
    retention_hours: Annotated[
        int,
        typer.Option(
            "--retention-hours",
            help="Keep every file a version younger than this needs: the rollback window.",
        ),
    ] = 168,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List, delete nothing.")] = False,
    namespace: NamespaceOpt = "default",
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete data files no version within the retention window needs (Delta vacuum).
    The current version's files are never deleted."""
    removed = _catalog(store, namespace, catalog).vacuum(retention_hours, dry_run)
    if as_json:
        print(json.dumps({"files": removed, "dryRun": dry_run}))
        return
    verb = "would delete" if dry_run else "deleted"
    out.print(f"{verb} {len(removed)} files older than {retention_hours} h")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        err.print("terminated (SIGTERM): stopped before the import ended")
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
