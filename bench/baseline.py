"""The baseline a user might write: the csv module plus one pydantic validation per row.

It does what the engine's first half does, the obvious way: read the CSV record by
record, reject records with the wrong column count, validate each remaining one with a
pydantic model (required fields, enums, price >= 0, currency code, slug pattern), reject
duplicate SKUs (first wins), and write the valid rows to a CSV file (attributes as JSON)
and the rejected ones, with their line, to an error CSV. It does not merge into a
catalog or write Parquet, so it does less than the engine: that flatters the baseline,
never the engine.

Usage: python -m bench.baseline SOURCE.csv TARGET.csv
Prints one JSON object: rows read, valid, rejected and the seconds the loop took.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from productimport.models.product import MAX_NAME_LENGTH, MAX_SKU_LENGTH, MAX_TAGS

NAMED = {
    "sku", "name", "slug", "description", "status", "commodity_type", "price", "currency",
    "upc_ean", "mpn", "external_ref", "tags", "main_image", "parent_sku",
}  # fmt: skip
# ISO 4217 codes in circulation (a user would paste a list like this one).
_ISO_4217 = """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
    FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD
    JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT
    MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG
    QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS
    TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XOF XPF YER ZAR
    ZMW ZWL"""
CURRENCIES = frozenset(_ISO_4217.split())


class ProductRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    sku: Annotated[str, Field(min_length=1, max_length=MAX_SKU_LENGTH)]
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    slug: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] | None = None
    description: str | None = None
    status: Literal["draft", "live"] = "draft"
    commodity_type: Literal["physical", "digital"] = "physical"
    price: Annotated[Decimal, Field(ge=0)] | None = None
    currency: str | None = None
    upc_ean: str | None = None
    mpn: str | None = None
    external_ref: str | None = None
    tags: Annotated[list[str], Field(max_length=MAX_TAGS)] = Field(default_factory=list)
    main_image: str | None = None
    parent_sku: str | None = None
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_missing(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [tag.strip() for tag in value.split(",") if tag.strip()]
        return value

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, value: str | None) -> str | None:
        if value is not None and value not in CURRENCIES:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return value


OUT_COLUMNS = [*ProductRow.model_fields]


def run(source: str, target: str) -> dict:
    started = time.perf_counter()
    rows = valid = rejected = 0
    seen: set[str] = set()
    with (
        open(source, encoding="utf-8", newline="") as src,
        open(target, "w", encoding="utf-8", newline="") as dst,
        open(target + ".errors.csv", "w", encoding="utf-8", newline="") as err,
    ):
        reader = csv.reader(src)
        writer = csv.writer(dst)
        errors = csv.writer(err)
        writer.writerow(OUT_COLUMNS)
        errors.writerow(["line", "column", "code", "message"])
        header = [name.strip().lower() for name in next(reader)]
        line = reader.line_num + 1  # where the next record starts
        for record in reader:
            rows += 1
            start_line, line = line, reader.line_num + 1
            if len(record) != len(header):
                rejected += 1
                errors.writerow([start_line, "", "malformed_row", f"{len(record)} columns"])
                continue
            data: dict[str, Any] = {}
            attributes: dict[str, str] = {}
            for key, value in zip(header, record, strict=True):
                if key in NAMED:
                    data[key] = value
                elif value != "":
                    attributes[key] = value
            data["attributes"] = attributes
            try:
                product = ProductRow.model_validate(data)
            except ValidationError as exc:
                rejected += 1
                for problem in exc.errors():
                    column = ".".join(str(part) for part in problem["loc"])
                    errors.writerow([start_line, column, problem["type"], problem["msg"]])
                continue
            if product.sku in seen:
                rejected += 1
                errors.writerow([start_line, "sku", "duplicate_sku", product.sku])
                continue
            seen.add(product.sku)
            valid += 1
            dumped = product.model_dump(mode="json")
            dumped["tags"] = ",".join(dumped["tags"])
            dumped["attributes"] = json.dumps(dumped["attributes"])
            writer.writerow(dumped.values())
    return {
        "rows": rows,
        "valid": valid,
        "rejected": rejected,
        "seconds": round(time.perf_counter() - started, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    print(json.dumps(run(args.source, args.target)))


if __name__ == "__main__":
    main()
