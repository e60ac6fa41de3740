"""Retention: what finished and deleted imports leave behind, and each catalog's old versions.

Nothing an import stores is kept for ever (docs/operations.md, "Retention"):
- an import's own documents in the catalog store (`{namespace}/{catalog}/imports/{uid}/`:
  result, progress, error reports) go when the import finished more than
  `retention_import_seconds` ago, and as soon as its ProductImport is deleted;
- its source goes with them when the upload API stored it (`{namespace}/{catalog}/
  YYYY/MM/DD/{uuid}.upload` in the upload bucket, api/uploads.py object_key) and no other
  import that still needs it names it; an object a user put there themselves is theirs;
- each catalog keeps its last `retention_keep_versions` versions (Catalog.retain), and
  table files no version references go after `retention_orphan_hours`.

A pass is level-based, like the reconciler: it lists what the store holds, then the
ProductImports (ONE list per pass, paginated, never a call per import), and deletes what
no import needs any more, up to `retention_deletes_per_pass` objects and
`retention_catalogs_per_pass` catalogs; the rest waits for the next pass. Nothing is
remembered between passes that a restart could lose, except which sources deleted imports
left (the next pass deletes them at once; after a restart, an unreferenced upload goes
once its day is two days past, as one the API stored but never made an import of) and
when each catalog was last retained (after a restart, each catalog is retained again).

Passes and deletions run in one thread of the sweeper's own (`executor`), never on kopf's
event loop and never in the threads the reconciler's passes run in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import ObjectStore, open_store
from productimport.models.resource import GROUP, PLURAL, VERSION
from productimport.operator.conditions import is_terminal
from productimport.operator.kube import Kube
from productimport.operator.settings import OperatorSettings

log = logging.getLogger(__name__)

# An import's documents in the catalog store (Catalog.import_key).
DOCUMENT = re.compile(r"^(?P<namespace>[^/]+)/(?P<catalog>[^/]+)/imports/(?P<uid>[^/]+)/[^/]+$")
# A source the upload API stored (api/uploads.py object_key): generated, never a user's.
API_UPLOAD = re.compile(
    r"^(?P<namespace>[^/]+)/(?P<catalog>[^/]+)/(?P<day>\d{4}/\d{2}/\d{2})/"
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.upload$"
)
# The API stores an upload before it creates its ProductImport: an upload no import
# names may still be on its way to one, unless its day is at least this far past.
UNCLAIMED_UPLOAD_DAYS = 2
LIST_PAGE = 500

Lister = Callable[[], Iterable[dict[str, Any]]]


def kube_lister(kube: Kube, namespaces: list[str]) -> Lister:
    """The ProductImports the operator watches, in one paginated LIST (one per watched
    namespace when it watches a list of them: its RBAC is namespaced then)."""

    def pages(call: Callable[..., dict[str, Any]], *args: str) -> Iterable[dict[str, Any]]:
        token: str | None = None
        while True:
            page = call(*args, limit=LIST_PAGE, _continue=token)
            yield from page["items"]
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def everything() -> Iterator[dict[str, Any]]:
        # A generator: the pass keeps what it needs of each import (Known) and drops the
        # page, so 10,000 imports never sit in memory as bodies at once.
        if not namespaces:
            yield from pages(kube.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL)
            return
        for namespace in namespaces:
            yield from pages(
                kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
            )

    return everything


@dataclass(frozen=True)
class Known:
    """What a pass needs of one ProductImport."""

    uid: str
    namespace: str
    catalog: str
    source: tuple[str, str] | None  # (bucket, key) of an object source
    finished: datetime | None  # when it reached a terminal state; None: not terminal
    running: bool  # it has a Job and has not ended

    @classmethod
    def of(cls, obj: dict[str, Any]) -> Known:
        meta, status = obj["metadata"], obj.get("status") or {}
        spec = obj.get("spec") or {}
        src = (spec.get("source") or {}).get("object")
        finished = None
        if is_terminal(obj):
            # completionTime is written with every terminal status; the conditions' last
            # transition stands in for one that lacks it.
            moments = [c["lastTransitionTime"] for c in status["conditions"]]
            ended = status.get("completionTime") or max(filter(None, moments), default=None)
            finished = datetime.fromisoformat(ended) if ended else None
        return cls(
            uid=meta["uid"],
            namespace=meta["namespace"],
            catalog=spec.get("catalog", ""),
            source=(src["bucket"], src["key"]) if src else None,
            finished=finished,
            running=finished is None and bool(status.get("jobName")),
        )


@dataclass
class Swept:
    """What one pass did."""

    documents: list[str] = field(default_factory=list)  # catalog-store keys deleted
    sources: list[str] = field(default_factory=list)  # upload-bucket keys deleted
    catalogs: list[tuple[str, str]] = field(default_factory=list)  # retention applied
    files: int = 0  # table files vacuum deleted
    left: bool = False  # the pass hit its bounds: more is due


class Sweeper:
    """One operator's retention: `sweep` is a pass, `forget` a deleted ProductImport."""

    def __init__(
        self,
        list_imports: Lister,
        store: ObjectStore,
        uploads: ObjectStore,
        settings: OperatorSettings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.list_imports = list_imports
        self.store = store  # the catalog store: imports' documents, catalog tables
        self.uploads = uploads  # the upload bucket
        self.settings = settings
        self.namespaces = settings.namespace_list
        self._now = now
        # Sources of deleted imports, deleted by the next pass unless an import names them.
        self._released: set[str] = set()
        # When each catalog's versions were last retained (never: first in line).
        self._retained: dict[tuple[str, str], datetime] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retention")

    @classmethod
    def for_operator(cls, kube: Kube, store: ObjectStore, settings: OperatorSettings) -> Sweeper:
        uploads = open_store(f"s3://{settings.upload_bucket}")
        return cls(kube_lister(kube, settings.namespace_list), store, uploads, settings)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- a deleted ProductImport -----------------------------------------------------

    def submit_forget(self, obj: dict[str, Any]) -> Future[None]:
        """`forget`, in the sweeper's thread (called from the watch's DELETED event). Only
        what it needs waits in the executor's queue, not the body: a namespace of 10,000
        imports deleted at once would otherwise hold 10,000 bodies until their turn."""
        known = Known.of(obj)
        future = self.executor.submit(self.forget, known)
        future.add_done_callback(_log_failure(known))
        return future

    def forget(self, known: Known) -> None:
        """A ProductImport was deleted: its documents go now; its source goes in the next
        pass, which knows whether another import still names it. A loader still running
        (its Job goes with the import, its Pod gets its grace period) may write documents
        after this: the next pass finds them with no import and deletes them, and its
        catalog commit, if it lands, is a version like any other (docs/operations.md)."""
        prefix = Catalog(self.store, known.namespace, known.catalog).import_key(known.uid, "")
        for key in list(self.store.list(prefix)):
            self.store.delete(key)
        if known.source and known.source[0] == self.settings.upload_bucket:
            self._released.add(known.source[1])

    # -- a pass ----------------------------------------------------------------------

    def sweep(self) -> Swept:
        now = self._now()
        # The store is listed before the ProductImports: whatever it holds was written
        # for (or uploaded before) an import that exists by now, so an import the LIST
        # below does not show was deleted, never one about to be created.
        documents = self._listed(self.store, DOCUMENT, "import documents")
        uploads = self._listed(self.uploads, API_UPLOAD, "uploads")
        imports = {k.uid: k for k in map(Known.of, self.list_imports())}
        swept = Swept()
        gone = (k for k, m in documents if self._document_done(imports.get(m["uid"]), now))
        self._delete(self.store, gone, swept.documents, swept)
        naming: dict[str, list[Known]] = {}
        for known in imports.values():
            if known.source and known.source[0] == self.settings.upload_bucket:
                naming.setdefault(known.source[1], []).append(known)
        gone = (k for k, m in uploads if self._source_done(k, m, naming.get(k, []), now))
        self._delete(self.uploads, gone, swept.sources, swept)
        self._released -= set(swept.sources)
        self._released &= {key for key, _ in uploads}  # what is gone needs no memory

        self._retain_catalogs(imports.values(), now, swept)
        if swept.documents or swept.sources or swept.catalogs:
            log.info(
                "retention: deleted %d import documents, %d sources, %d table files of %d "
                "catalogs%s", len(swept.documents), len(swept.sources), swept.files,
                len(swept.catalogs), "; more in the next pass" if swept.left else "",
            )  # fmt: skip
        return swept

    def _listed(
        self, store: ObjectStore, pattern: re.Pattern[str], what: str
    ) -> list[tuple[str, re.Match]]:
        """The keys of the watched namespaces that match; none when the store refuses
        (a store, or a right, missing for one kind must not hold back the others)."""
        prefixes = [f"{n}/" for n in self.namespaces] or [""]
        try:
            return [
                (key, match)
                for prefix in prefixes
                for key in store.list(prefix)
                if (match := pattern.match(key))
            ]
        except Exception as exc:
            log.warning("retention: cannot list the %s: %s", what, exc)
            return []

    def _delete(
        self, store: ObjectStore, keys: Iterable[str], done: list[str], swept: Swept
    ) -> None:
        """Delete `keys` (into `done`) within the pass's bound on deletions."""
        for key in keys:
            if (
                len(swept.documents) + len(swept.sources)
                >= self.settings.retention_deletes_per_pass
            ):
                swept.left = True
                return
            try:
                store.delete(key)
            except Exception as exc:  # the next pass tries again
                log.warning("retention: cannot delete %s: %s", store.ref(key), exc)
                swept.left = True
                return
            done.append(key)

    def _document_done(self, owner: Known | None, now: datetime) -> bool:
        """Whether an import's document may go: its import expired, or was deleted."""
        return owner is None or self._expired(owner, now)

    def _expired(self, known: Known, now: datetime) -> bool:
        ttl = self.settings.retention_import_seconds
        return (
            bool(ttl)
            and known.finished is not None
            and now - known.finished >= timedelta(seconds=ttl)
        )

    def _source_done(self, key: str, match: re.Match, naming: list[Known], now: datetime) -> bool:
        """Whether an upload the API stored may go: every import that names it has
        expired; or none does, and it was left by a deleted import or is too old to be
        on its way to one."""
        if naming:
            return all(self._expired(k, now) for k in naming)
        if key in self._released:
            return True
        day = date(*map(int, match["day"].split("/")))
        return (now.date() - day).days >= UNCLAIMED_UPLOAD_DAYS

    def _retain_catalogs(self, imports: Iterable[Known], now: datetime, swept: Swept) -> None:
        """Catalog.retain for the catalogs whose versions may have moved since they were
        last retained (an import of theirs finished since), least recently retained
        first; never a catalog with an import running (its commit would only conflict
        with retention's and be diffed again)."""
        keep = self.settings.retention_keep_versions
        if not keep:
            return
        busy: set[tuple[str, str]] = set()
        changed: dict[tuple[str, str], datetime] = {}
        for known in imports:
            catalog = (known.namespace, known.catalog)
            if known.running:
                busy.add(catalog)
            elif known.finished is not None:
                changed[catalog] = max(known.finished, changed.get(catalog, known.finished))
        due = sorted(
            (c for c, last in changed.items() if c not in busy and self._due(c, last)),
            key=lambda c: self._retained.get(c, datetime.min.replace(tzinfo=UTC)),
        )
        for namespace, name in due[: self.settings.retention_catalogs_per_pass]:
            self._retained[(namespace, name)] = now
            try:
                retained = Catalog(self.store, namespace, name).retain(
                    keep, orphan_hours=self.settings.retention_orphan_hours
                )
            except Exception as exc:  # one catalog's trouble must not stop the others'
                log.warning("retention of catalog %s/%s: %s", namespace, name, exc)
                continue
            swept.catalogs.append((namespace, name))
            swept.files += len(retained.deleted)
        swept.left = swept.left or len(due) > self.settings.retention_catalogs_per_pass

    def _due(self, catalog: tuple[str, str], last_finished: datetime) -> bool:
        retained = self._retained.get(catalog)
        return retained is None or last_finished >= retained


def _log_failure(known: Known) -> Callable[[Future[None]], None]:
    def done(future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            # The next pass deletes what this left: the import is not in its LIST.
            log.warning("cleaning up after import %s in %s: %s", known.uid, known.namespace,
                        future.exception())  # fmt: skip

    return done
