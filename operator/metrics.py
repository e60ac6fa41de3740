"""Prometheus metrics of the operator (served on PRODUCTIMPORT_OPERATOR_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

imports_finished = Counter(
    "productimport_imports_total",
    "Imports that reached a terminal phase, by phase and reason.",
    ["phase", "reason"],
)
import_duration = Histogram(
    "productimport_import_duration_seconds",
    "From Job creation to the terminal status.",
    buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
apply_to_job = Histogram(
    "productimport_apply_to_job_seconds",
    "From the resource's creation to its Job's creation, for imports that did not queue.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
rows = Counter(
    "productimport_rows_total",
    "Rows of finished imports, by outcome (created, updated, unchanged, deleted, rejected).",
    ["outcome"],
)
