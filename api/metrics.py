"""Prometheus metrics of the API (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    """One registry per app, so several apps in one test process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "productimport_api_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "productimport_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.upload_bytes = Counter(
            "productimport_api_upload_bytes_total",
            "Bytes of uploaded files stored in MinIO, by API surface.",
            ["api"],
            registry=self.registry,
        )
        self.uploads_in_progress = Gauge(
            "productimport_api_uploads_in_progress",
            "Uploads currently streaming to MinIO.",
            registry=self.registry,
        )
        self.uploads_rejected = Counter(
            "productimport_api_uploads_rejected_total",
            "Uploads refused, by API surface and HTTP status.",
            ["api", "status"],
            registry=self.registry,
        )
        self.imports_created = Counter(
            "productimport_api_imports_created_total",
            "ProductImport resources created, by API surface.",
            ["api"],
            registry=self.registry,
        )
        self.uploads_replayed = Counter(
            "productimport_api_uploads_replayed_total",
            "Uploads answered with the ProductImport an earlier request with the same "
            "Idempotency-Key created (nothing stored), by API surface.",
            ["api"],
            registry=self.registry,
        )
        self.token_reviews = Counter(
            "productimport_api_token_reviews_total",
            "TokenReviews sent to the Kubernetes API server, by result.",
            ["result"],
            registry=self.registry,
        )
        self.token_reviews_limited = Counter(
            "productimport_api_token_reviews_limited_total",
            "Requests answered 429 instead of reviewing a token the API had not verified "
            "recently (the TokenReview rate limit).",
            registry=self.registry,
        )
