"""The canonical product model and the import result document.

These pydantic models describe single documents (a product served by the API, an import
result, an error record). They never validate millions of rows: the engine checks rows
set-wise in DuckDB, with the rules below expressed as SQL.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ProductStatus(StrEnum):
    draft = "draft"
    live = "live"


class CommodityType(StrEnum):
    physical = "physical"
    digital = "digital"


# Attributes are stored as entries, unique keys in the file's column order: DuckDB checks
# a MAP's keys row by row as it builds one, which cost as much as parsing the whole file
# (5.7 G instructions for the 400,000 changed products of the 1M-row benchmark merge).
# Readers turn them into a mapping (attributes_dict); snapshots written before stored a
# MAP, which the engine reads as entries.
ATTRIBUTE_ENTRIES = "STRUCT(key VARCHAR, value VARCHAR)[]"

# The fields the model names, in snapshot column order, with their DuckDB types.
# Every other source column is kept in `attributes` so no data is lost.
PRODUCT_FIELDS: dict[str, str] = {
    "sku": "VARCHAR",
    "name": "VARCHAR",
    "slug": "VARCHAR",
    "description": "VARCHAR",
    "status": "VARCHAR",
    "commodity_type": "VARCHAR",
    "price": "DECIMAL(18,4)",
    "currency": "VARCHAR",
    "upc_ean": "VARCHAR",
    "mpn": "VARCHAR",
    "external_ref": "VARCHAR",
    "tags": "VARCHAR[]",
    "main_image": "VARCHAR",
    "parent_sku": "VARCHAR",
    "attributes": ATTRIBUTE_ENTRIES,
}

# Fields that cannot be empty: a row that leaves one blank keeps the product's value or
# takes the preset's default.
DEFAULTED_FIELDS = frozenset({"status", "commodity_type"})

# The fields whose values a 64-bit digest stands for when an import compares a row with
# the product it updates (the defaulted ones, and the attributes, which merge key by key,
# are compared as they are).
CONTENT_FIELDS = [
    f for f in PRODUCT_FIELDS if f not in ("sku", "attributes") and f not in DEFAULTED_FIELDS
]

# Columns the catalog adds to each product: a stable id and bookkeeping. content_digest
# is the engine's own (never shown to readers, see HIDDEN_COLUMNS): the digest of the
# product's CONTENT_FIELDS, kept so that the next import need not read and hash every
# current product's description again.
SNAPSHOT_COLUMNS: dict[str, str] = {
    "id": "VARCHAR",
    **PRODUCT_FIELDS,
    "created_at": "TIMESTAMP",
    "updated_at": "TIMESTAMP",
    "import_id": "VARCHAR",
    "content_digest": "BIGINT",  # 63 bits of hash(): Delta has no unsigned integers
}
HIDDEN_COLUMNS = frozenset({"content_digest"})


def attributes_dict(stored: Any) -> dict[str, str]:
    """A snapshot's attributes as DuckDB returns them (entries, or a MAP from a snapshot
    written before entries) as a mapping."""
    if not stored:
        return {}
    if isinstance(stored, dict):
        return dict(stored)
    return {entry["key"]: entry["value"] for entry in stored}


# Limits, most of them Elastic Path's published PCM rules, applied to every preset.
MAX_SKU_LENGTH = 255
MAX_NAME_LENGTH = 1024
MAX_EXTERNAL_REF_LENGTH = 2048
MAX_TAGS = 20
MAX_TAG_LENGTH = 255
SLUG_PATTERN = r"^[A-Za-z0-9._-]+$"


class Product(BaseModel):
    """One product as the catalog stores and the API serves it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    sku: str
    name: str | None = None
    slug: str | None = None
    description: str | None = None
    status: ProductStatus | None = None
    commodity_type: CommodityType | None = None
    price: float | None = None
    currency: str | None = None
    upc_ean: str | None = None
    mpn: str | None = None
    external_ref: str | None = None
    tags: list[str] = Field(default_factory=list)
    main_image: str | None = None
    parent_sku: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    import_id: str | None = None


class ErrorRecord(BaseModel):
    """One problem with one source row (a rejected row may have several)."""

    line: int | None = Field(None, description="1-based physical line where the record starts")
    column: str | None = Field(None, description="source column, empty for a whole-row problem")
    code: str
    message: str
    value: str | None = Field(None, description="the offending value, truncated")


class ImportCounts(BaseModel):
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0


Phase = Literal["Succeeded", "Failed"]


class ImportResult(BaseModel):
    """The result document: `result.json` in the store and the CLI's `--json` output."""

    importId: str
    namespace: str
    catalog: str
    phase: Phase
    reason: str
    message: str
    dryRun: bool = False
    mode: str = "upsert"
    counts: ImportCounts = Field(default_factory=ImportCounts)
    catalogVersion: int = 0
    errorsRef: str | None = None
    errors: list[ErrorRecord] = Field(default_factory=list)
    startedAt: datetime | None = None
    completedAt: datetime | None = None
