"""The choices an import offers (format, preset, mode), without pydantic: the CLI's
`--help` shows them without loading the models that validate a whole import."""

from __future__ import annotations

from enum import StrEnum


class InputFormat(StrEnum):
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


class Preset(StrEnum):
    native = "native"
    elasticpath = "elasticpath"
    shopify = "shopify"
    woocommerce = "woocommerce"


class Mode(StrEnum):
    upsert = "upsert"  # create new SKUs, update existing ones
    create = "create"  # existing SKUs are rejected
    update = "update"  # unknown SKUs are rejected
    replace = "replace"  # upsert, then delete products missing from the file (opt-in)
