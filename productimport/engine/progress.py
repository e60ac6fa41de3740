"""Progress of a running import: stages and row counts.

Written to `progress.json` in the store (the operator copies it into the resource's
status, so `kubectl get` can tell stuck from slow) and shown on the terminal by the CLI.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from productimport.engine.catalog import Catalog

STAGES = ("reading", "validating", "merging", "committing", "done")
MIN_INTERVAL_SECONDS = 2.0


class ProgressReporter:
    def __init__(self, on_change: Callable[[str, int | None, str | None], None] | None = None):
        self.on_change = on_change
        self.catalog: Catalog | None = None
        self.import_id: str | None = None
        self.rows: int | None = None
        self.current = "starting"
        self._last_write = 0.0

    def attach(self, catalog: Catalog, import_id: str) -> None:
        self.catalog, self.import_id = catalog, import_id

    def stage(self, name: str, rows: int | None = None) -> None:
        changed = name != self.current
        self.current = name
        if rows is not None:
            self.rows = rows
        if self.on_change:
            self.on_change(name, self.rows, None)
        if changed or time.monotonic() - self._last_write >= MIN_INTERVAL_SECONDS:
            self._publish()

    def note(self, message: str) -> None:
        if self.on_change:
            self.on_change(self.current, self.rows, message)

    def _publish(self) -> None:
        if self.catalog is None or self.import_id is None:
            return
        document = {
            "importId": self.import_id,
            "stage": self.current,
            "rowsRead": self.rows,
            "updatedAt": datetime.now(UTC).isoformat(),
        }
        # Progress is best effort: a store hiccup here must not fail the import.
        with contextlib.suppress(Exception):
            self.catalog.store.put(
                self.catalog.import_key(self.import_id, "progress.json"),
                json.dumps(document).encode(),
                "application/json",
            )
        self._last_write = time.monotonic()
