"""What an import is asked to do: the engine's options, shared by the CLI and the Job."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from productimport.engine.choices import InputFormat, Mode, Preset

__all__ = ["CsvOptions", "ErrorPolicy", "ImportOptions", "InputFormat", "Mode", "Preset"]


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The lengths are also in the JSON Schema, so the CRD refuses a bad value at apply time.
    delimiter: str | None = Field(
        None, min_length=1, max_length=1, description="One character; unset: sniffed"
    )
    quote: str = Field('"', min_length=1, max_length=1)
    escape: str | None = Field(
        None, min_length=1, max_length=1, description="Unset: the quote character (RFC 4180)"
    )
    encoding: str = Field("utf-8", description="utf-8 (with or without BOM) or latin-1")
    header: bool = True

    @field_validator("delimiter", "quote", "escape")
    @classmethod
    def _single_character(cls, value: str | None) -> str | None:
        if value is not None and len(value) != 1:
            raise ValueError("must be exactly one character")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        normal = value.lower().replace("_", "-")
        aliases = {
            "utf8": "utf-8",
            "utf-8-sig": "utf-8",
            "latin1": "latin-1",
            "iso-8859-1": "latin-1",
            "iso8859-1": "latin-1",
        }
        normal = aliases.get(normal, normal)
        if normal not in ("utf-8", "latin-1"):
            raise ValueError("supported encodings: utf-8 (with or without BOM), latin-1")
        return normal


class ErrorPolicy(BaseModel):
    """When rejected rows fail the import as a whole (either limit is enough)."""

    model_config = ConfigDict(extra="forbid")

    maxErrors: int | None = Field(1000, ge=0)
    maxErrorRatio: float | None = Field(0.05, ge=0, le=1)


class ImportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    catalog: str
    namespace: str = "default"
    store: str | None = None
    format: InputFormat | None = None
    gzip: bool | None = None
    preset: Preset = Preset.native
    mapping: dict[str, str] = Field(default_factory=dict, description="source column -> field")
    mode: Mode = Mode.upsert
    dry_run: bool = False
    # One path segment of the catalog's key space (imports/<id>/...): no slash, no "..",
    # so an id can never name another catalog's folder.
    import_id: str = Field(
        default_factory=lambda: str(uuid.uuid4()), pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
    )
    csv: CsvOptions = Field(default_factory=CsvOptions)
    error_policy: ErrorPolicy = Field(default_factory=ErrorPolicy)
    # Fencing: the operator numbers a catalog's imports in the order it lets them run
    # (docs/loader-contract.md); an import refuses to commit over a later one's commit.
    # None (the CLI's default): no fencing.
    sequence: int | None = Field(None, ge=1)
    memory_limit: str | None = Field(None, description="DuckDB memory_limit, e.g. 512MB")
    threads: int | None = Field(None, ge=1)
    # A partitioned import (docs/scaling.md) runs in three steps, each a Kubernetes Job:
    # "prepare" validates the file and splits its accepted rows by bucket into the store,
    # "merge" (worker `worker` of `workers`, an Indexed Job's Pods) merges its share of
    # the buckets and uploads their files, "commit" publishes them all in one commit.
    # "all": one process does everything (the CLI's default and a one-Pod import's).
    stage: Literal["all", "prepare", "merge", "commit"] = "all"
    workers: int = Field(1, ge=1, le=64)
    worker: int = Field(0, ge=0)
