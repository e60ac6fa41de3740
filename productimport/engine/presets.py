"""Presets: how the columns of real exports map onto the canonical product model.

A preset turns table `raw(rn, c0..cN)` into a SELECT of the canonical fields, still as
text (`*_raw` columns are parsed and checked later, in one place, by validate.py).
Every source column that no field takes goes into `attributes` under its own header, so
nothing in the file is lost. An explicit per-column mapping overrides the preset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from productimport.engine.errors import InvalidOptions
from productimport.engine.options import Preset
from productimport.engine.parse import sql_string
from productimport.models.product import ATTRIBUTE_ENTRIES

# The canonical fields a preset fills, as text.
TEXT_FIELDS = [
    "sku",
    "name",
    "slug",
    "description",
    "status_raw",
    "commodity_raw",
    "price_raw",
    "currency_raw",
    "upc_ean",
    "mpn",
    "external_ref",
    "tags_raw",
    "main_image",
    "parent_sku",
    "ep_id",
    "given_sku",
]
# What a mapping target may be called: a model field name.
MAPPABLE = {
    "sku": "sku",
    "name": "name",
    "slug": "slug",
    "description": "description",
    "status": "status_raw",
    "commodity_type": "commodity_raw",
    "price": "price_raw",
    "currency": "currency_raw",
    "upc_ean": "upc_ean",
    "mpn": "mpn",
    "external_ref": "external_ref",
    "tags": "tags_raw",
    "main_image": "main_image",
    "parent_sku": "parent_sku",
    "id": "ep_id",
}
IGNORE = {"-", "ignore"}


def normalize_header(header: str) -> str:
    """Header matching ignores case, a BOM, and runs of whitespace."""
    text = " ".join(header.replace("\ufeff", "").split()).casefold()
    if text.startswith("template:"):
        # Elastic Path's own example writes `template: <uuid>: condition`.
        text = re.sub(r"\s*:\s*", ":", text)
    return text


def attribute_key(header: str) -> str:
    key = " ".join(header.replace("\ufeff", "").split())
    if key.lower().startswith("template:"):
        key = re.sub(r"\s*:\s*", ":", key)
    return key


def text(col: str) -> str:
    """A cell as trimmed text, empty meaning absent.

    trim() decodes the whole string to find its last character, which made it the most
    expensive expression of an import (long descriptions). A cell can only change when
    its first or last character is one trim() removes: ASCII space or a non-ASCII space
    (Unicode Zs; tests/engine/test_expressions.py checks that against trim() itself).
    So only cells that start or end with a space, a control character or any non-ASCII
    character are trimmed, and the tests are the cheapest DuckDB has: comparisons of the
    first bytes (stored inline in the string) and suffix(); reading the last character
    (`[-1]`) costs more, and ascii() on either end cost twice as much again (measured in
    instructions with perf stat: 12.6 G for 14 columns of a million rows, now 5.6 G).
    """
    return (
        f"CASE WHEN {col} < '!' OR {col} >= '\u0080' OR suffix({col}, ' ') "
        f"OR {col}[-1] >= '\u0080' THEN nullif(trim({col}), '') ELSE nullif({col}, '') END"
    )


@dataclass
class Projection:
    """The SELECT that produces table `staged`, and what it knows about the file."""

    sql: str
    sources: dict[str, str]  # canonical field -> the source header it came from
    required: list[str]
    defaults: dict[str, str] = field(default_factory=dict)  # field -> SQL default
    present: set[str] = field(default_factory=set)  # fields the file provides
    # Elastic Path: rows match existing products by id or external_ref, one of them needed.
    match_by_reference: bool = False
    # One output row per input row, reading `raw` once: the file can then be scanned
    # (twice, streaming) instead of being loaded into a table first.
    streamable: bool = False
    # Streamable ones: the source column index each canonical text field reads.
    field_columns: dict[str, int] = field(default_factory=dict)

    def over(self, table: str) -> str:
        """The same projection reading `table` instead of `raw` (streamable ones only)."""
        if not self.streamable or not self.sql.endswith(" FROM raw"):
            raise ValueError("only a streamable projection can read another table")
        return self.sql.removesuffix(" FROM raw") + f" FROM {table}"


class Columns:
    """Finds source columns by normalized header and remembers which were used."""

    def __init__(self, headers: list[str]) -> None:
        self.headers = headers
        self.index: dict[str, int] = {}
        for i, header in enumerate(headers):
            self.index.setdefault(normalize_header(header), i)
        self.used: set[int] = set()

    def find(self, *names: str) -> int | None:
        for name in names:
            i = self.index.get(normalize_header(name))
            if i is not None:
                return i
        return None

    def take(self, *names: str) -> str | None:
        i = self.find(*names)
        if i is None:
            return None
        self.used.add(i)
        return f"c{i}"

    def peek(self, *names: str) -> str | None:
        i = self.find(*names)
        return None if i is None else f"c{i}"

    def header(self, col: str) -> str:
        return self.headers[int(col[1:])]


def _attributes_sql(cols: Columns, ignored: set[int], table: str = "") -> str:
    """The row's attribute entries: every column no field takes, blank cells left out,
    keys unique (a repeated header gets a numbered key)."""
    prefix = f"{table}." if table else ""
    entries: list[str] = []
    values: list[str] = []
    seen: dict[str, int] = {}
    for i, header in enumerate(cols.headers):
        if i in cols.used or i in ignored or not header.strip():
            continue
        key = attribute_key(header)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:  # duplicate headers keep every value, under distinct keys
            key = f"{key} ({seen[key]})"
        entries.append(f"{{'key': {sql_string(key)}, 'value': {prefix}c{i}}}")
        values.append(f"{prefix}c{i}")
    if not entries:
        return f"[]::{ATTRIBUTE_ENTRIES}"
    # Blank means trim() leaves nothing. A value starting with a visible ASCII character
    # is not blank: when every value does (most rows), the list is kept as it is and the
    # lambda, 2.6 G instructions per million rows of three attributes, is skipped.
    visible = " AND ".join(_starts_visible(v) for v in values)
    listed = f"[{', '.join(entries)}]"
    return (
        f"CASE WHEN {visible} THEN {listed} ELSE list_filter({listed}, lambda e: "
        f"e.value IS NOT NULL AND ({_starts_visible('e.value')} OR trim(e.value) <> '')) END"
    )


def _starts_visible(value: str) -> str:
    """Whether a cell starts with a visible ASCII character ('!' to '~'): then it is not
    blank. Byte comparisons on the string's inline prefix, the cheapest test there is."""
    return f"({value} >= '!' AND {value} < '\u007f')"


def _apply_mapping(cols: Columns, mapping: dict[str, str]) -> tuple[dict[str, str], set[int]]:
    """The user's column -> field overrides, validated against the headers."""
    chosen: dict[str, str] = {}
    ignored: set[int] = set()
    for source, target in mapping.items():
        i = cols.find(source)
        if i is None:
            raise InvalidOptions(
                f"mapping names column {source!r}, which the file does not have "
                f"(columns: {', '.join(cols.headers)})"
            )
        if target.strip().lower() in IGNORE:
            ignored.add(i)
            continue
        canonical = MAPPABLE.get(target.strip().lower())
        if canonical is None:
            raise InvalidOptions(
                f"mapping target {target!r} is not a product field "
                f"(fields: {', '.join(sorted(MAPPABLE))}, or 'ignore')"
            )
        chosen[canonical] = f"c{i}"
    return chosen, ignored


def project(preset: Preset, headers: list[str], mapping: dict[str, str]) -> Projection:
    cols = Columns(headers)
    overrides, ignored = _apply_mapping(cols, mapping)
    cols.used.update(int(c[1:]) for c in overrides.values())
    builder = {
        Preset.native: _native,
        Preset.elasticpath: _elasticpath,
        Preset.shopify: _shopify,
        Preset.woocommerce: _woocommerce,
    }[preset]
    return builder(cols, overrides, ignored)


def _simple(
    cols: Columns,
    overrides: dict[str, str],
    ignored: set[int],
    candidates: dict[str, tuple[str, ...]],
    required: list[str],
    defaults: dict[str, str],
    combine: dict[str, tuple[str, ...]] | None = None,
) -> Projection:
    """A preset where each field is one column (native, Elastic Path).

    `combine` makes a field the first present of several fields (Elastic Path's key).
    """
    exprs: dict[str, str] = {}
    sources: dict[str, str] = {}
    field_columns: dict[str, int] = {}
    for name in TEXT_FIELDS:
        col = overrides.get(name) or (cols.take(*candidates[name]) if name in candidates else None)
        exprs[name] = text(col) if col else "NULL"
        if col:
            sources[name] = cols.header(col)
            field_columns[name] = int(col[1:])
    present = set(sources)
    if combine:
        exprs["given_sku"] = exprs["sku"]
    for name, parts in (combine or {}).items():
        exprs[name] = f"coalesce({', '.join(exprs[p] for p in parts)})"
        sources.setdefault(name, next((sources[p] for p in parts if p in sources), name))
    select = ", ".join(f"{expr} AS {name}" for name, expr in exprs.items())
    sql = f"SELECT rn, {select}, {_attributes_sql(cols, ignored)} AS attributes FROM raw"
    return Projection(
        sql=sql,
        sources=sources,
        required=required,
        defaults=defaults,
        present=present,
        streamable=True,
        field_columns=field_columns,
    )


def _native(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    candidates = {
        "sku": ("sku",),
        "name": ("name", "title"),
        "slug": ("slug", "handle"),
        "description": ("description",),
        "status_raw": ("status",),
        "commodity_raw": ("commodity_type", "commodity type"),
        "price_raw": ("price",),
        "currency_raw": ("currency",),
        "upc_ean": ("upc_ean", "upc", "ean", "gtin", "barcode"),
        "mpn": ("mpn",),
        "external_ref": ("external_ref",),
        "tags_raw": ("tags",),
        "main_image": ("main_image", "main_image_id", "image"),
        "parent_sku": ("parent_sku", "parent"),
    }
    defaults = {"status": "'draft'", "commodity_type": "'physical'"}
    return _simple(cols, overrides, ignored, candidates, ["sku", "name"], defaults)


def _elasticpath(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    candidates = {
        "ep_id": ("id",),
        "external_ref": ("external_ref",),
        "sku": ("sku",),
        "name": ("name",),
        "slug": ("slug",),
        "description": ("description",),
        "status_raw": ("status",),
        "commodity_raw": ("commodity_type",),
        "upc_ean": ("upc_ean",),
        "mpn": ("mpn",),
        "tags_raw": ("tags",),
        "main_image": ("main_image_id", "main_image"),
        "price_raw": ("price",),
        "currency_raw": ("currency",),
        "parent_sku": ("parent_sku",),
    }
    # Elastic Path's key: the sku, or the external_ref standing in for a missing one.
    projection = _simple(
        cols,
        overrides,
        ignored,
        candidates,
        ["name", "description", "slug", "status", "commodity_type"],
        {},
        combine={"sku": ("sku", "external_ref")},
    )
    projection.match_by_reference = True
    return projection


# Shopify's product CSV: one row per variant, product-level cells only on the first row
# of each Handle group. Variant-level columns are the ones below; all others inherit.
_SHOPIFY_VARIANT_PREFIXES = (
    "variant ",
    "option1 value",
    "option2 value",
    "option3 value",
    "image src",
    "image position",
    "image alt text",
    "cost per item",
    "price / ",
    "compare at price / ",
)


def _shopify(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    handle = cols.take("handle")
    if handle is None:
        raise InvalidOptions("the shopify preset needs a Handle column")
    inherit = {
        f"c{i}"
        for i, header in enumerate(cols.headers)
        if not normalize_header(header).startswith(_SHOPIFY_VARIANT_PREFIXES) and f"c{i}" != handle
    }
    window = (
        f"OVER (PARTITION BY {handle} ORDER BY rn "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
    )
    group_cols = ", ".join(
        f"coalesce(nullif(trim(c{i}), ''), first_value(nullif(trim(c{i}), '') IGNORE NULLS) "
        f"{window}) AS c{i}"
        if f"c{i}" in inherit
        else f"c{i}"
        for i in range(len(cols.headers))
    )
    sku_col = overrides.get("sku") or cols.take("variant sku")
    options = [cols.peek(f"option{n} value") for n in (1, 2, 3)]
    option_cols = [o for o in options if o]
    image_src = cols.peek("image src")
    image_pos = cols.peek("image position")
    title = overrides.get("name") or cols.take("title")
    price = overrides.get("price_raw") or cols.take("variant price")
    status = overrides.get("status_raw") or cols.take("status")
    published = cols.peek("published")
    requires_shipping = cols.peek("variant requires shipping")
    variant_image = cols.take("variant image")
    fields = {
        "sku": text(sku_col) if sku_col else "NULL",
        "name": text(title) if title else "NULL",
        "slug": text(overrides.get("slug") or handle),
        "description": text(overrides.get("description") or cols.take("body (html)") or "NULL"),
        "status_raw": (
            f"CASE lower({text(status)}) WHEN 'active' THEN 'live' WHEN 'archived' THEN 'draft' "
            f"ELSE lower({text(status)}) END"
            if status
            else (
                f"CASE WHEN upper({text(published)}) = 'TRUE' THEN 'live' ELSE 'draft' END"
                if published
                else "NULL"
            )
        ),
        "commodity_raw": (
            f"CASE WHEN upper({text(requires_shipping)}) = 'FALSE' THEN 'digital' "
            "ELSE 'physical' END"
            if requires_shipping
            else "NULL"
        ),
        "price_raw": text(price) if price else "NULL",
        "currency_raw": text(overrides["currency_raw"]) if "currency_raw" in overrides else "NULL",
        "upc_ean": text(overrides.get("upc_ean") or cols.take("variant barcode") or "NULL"),
        "mpn": text(overrides.get("mpn") or cols.peek("google shopping / mpn") or "NULL"),
        "external_ref": text(overrides["external_ref"]) if "external_ref" in overrides else "NULL",
        "tags_raw": text(overrides.get("tags_raw") or cols.take("tags") or "NULL"),
        "main_image": (
            f"coalesce({text(variant_image) if variant_image else 'NULL'}, group_image)"
        ),
        "parent_sku": text(handle),
        "ep_id": "NULL",
        "given_sku": "NULL",
    }
    sources = {
        "sku": cols.header(sku_col) if sku_col else "Variant SKU",
        "name": cols.header(title) if title else "Title",
        "slug": cols.header(handle),
        "price_raw": cols.header(price) if price else "Variant Price",
        "status_raw": cols.header(status)
        if status
        else (cols.header(published) if published else "Status"),
        "description": "Body (HTML)",
        "tags_raw": "Tags",
        "upc_ean": "Variant Barcode",
    }
    # A variant without a SKU is keyed by its Handle and option values: stable, unique
    # within the group, and what Shopify itself uses to tell variants apart.
    option_key = (
        f"concat_ws('/', {', '.join(text(o) for o in option_cols)})" if option_cols else "''"
    )
    key = (
        f"coalesce({fields['sku']}, CASE WHEN {option_key} <> '' "
        f"THEN {text(handle)} || '/' || {option_key} ELSE {text(handle)} END)"
    )
    fields["sku"] = key
    # Rows that only add an image to their group are folded into it, not imported.
    variant_signals = [c for c in (sku_col, price, *option_cols) if c]
    image_only = (
        f"({image_src} IS NOT NULL AND "
        + " AND ".join(f"{text(c)} IS NULL" for c in variant_signals)
        + ")"
        if image_src and variant_signals
        else "false"
    )
    order = f"try_cast({image_pos} AS INTEGER), rn" if image_pos else "rn"
    group_image = (
        f"first_value({text(image_src)} IGNORE NULLS) OVER (PARTITION BY {handle} ORDER BY "
        f"{order} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
        if image_src
        else "NULL"
    )
    group_images = (
        f"string_agg({text(image_src)}, ', ' ORDER BY {order}) OVER (PARTITION BY {handle})"
        if image_src
        else "NULL"
    )
    select = ", ".join(f"{expr} AS {name}" for name, expr in fields.items())
    attributes = _attributes_sql(cols, ignored)
    if image_src:
        attributes = (
            f"CASE WHEN group_images IS NULL THEN {attributes} ELSE list_append("
            f"list_filter({attributes}, lambda e: e.key <> 'Images'), "
            "{'key': 'Images', 'value': group_images}) END"
        )
    sql = (
        f"WITH grouped AS (SELECT rn, {group_cols}, {image_only} AS image_only, "
        f"{group_image} AS group_image, {group_images} AS group_images FROM raw) "
        f"SELECT rn, {select}, {attributes} AS attributes FROM grouped WHERE NOT image_only"
    )
    present = {k for k, v in fields.items() if v != "NULL"}
    return Projection(
        sql=sql,
        sources=sources,
        required=["sku", "name"],
        defaults={"status": "'draft'", "commodity_type": "'physical'"},
        present=present,
    )


def _woocommerce(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    sku = overrides.get("sku") or cols.take("sku")
    name = overrides.get("name") or cols.take("name")
    parent = overrides.get("parent_sku") or cols.take("parent")
    product_id = cols.peek("id")
    kind = cols.peek("type")
    published = overrides.get("status_raw") or cols.take("published")
    images = cols.peek("images")
    attribute_values = [
        f"c{i}"
        for i, header in enumerate(cols.headers)
        if re.fullmatch(r"attribute \d+ value\(s\)", normalize_header(header))
    ]
    values = (
        f"nullif(concat_ws(', ', {', '.join(text(c) for c in attribute_values)}), '')"
        if attribute_values
        else "NULL"
    )
    sku_text = text(sku) if sku else "NULL"
    name_text = text(name) if name else "NULL"
    parent_text = text(parent) if parent else "NULL"
    # WooCommerce allows products without a SKU (variations, external and grouped
    # products); they are keyed by their ID, else their parent and attribute values,
    # else their name, so the real export files import without a rejected row.
    key = (
        f"coalesce({sku_text}, "
        + (f"'id:' || {text(product_id)}, " if product_id else "")
        + f"{parent_text} || '/' || {values}, "
        f"'name:' || lower(regexp_replace({name_text}, '[^A-Za-z0-9]+', '-', 'g')))"
    )
    fields = {
        "sku": key,
        # A variation without a name takes its parent's, with its attribute values.
        "name": f"coalesce({name_text}, parents.parent_name || ' - ' || {values}, "
        f"parents.parent_name)",
        "slug": text(overrides["slug"]) if "slug" in overrides else "NULL",
        "description": text(overrides.get("description") or cols.take("description") or "NULL"),
        "status_raw": (
            f"CASE trim({published}) WHEN '1' THEN 'live' WHEN '0' THEN 'draft' "
            f"WHEN '-1' THEN 'draft' ELSE lower({text(published)}) END"
            if published
            else "NULL"
        ),
        "commodity_raw": (
            f"CASE WHEN lower({kind}) LIKE '%virtual%' OR lower({kind}) LIKE '%downloadable%' "
            "THEN 'digital' ELSE 'physical' END"
            if kind
            else "NULL"
        ),
        "price_raw": text(overrides.get("price_raw") or cols.take("regular price") or "NULL"),
        "currency_raw": text(overrides["currency_raw"]) if "currency_raw" in overrides else "NULL",
        "upc_ean": text(overrides.get("upc_ean") or cols.take("gtin, upc, ean, or isbn") or "NULL"),
        "mpn": text(overrides["mpn"]) if "mpn" in overrides else "NULL",
        "external_ref": text(overrides["external_ref"]) if "external_ref" in overrides else "NULL",
        "tags_raw": text(overrides.get("tags_raw") or cols.take("tags") or "NULL"),
        "main_image": f"nullif(trim(split_part({images}, ',', 1)), '')" if images else "NULL",
        "parent_sku": parent_text,
        "ep_id": "NULL",
        "given_sku": "NULL",
    }
    sources = {
        "sku": cols.header(sku) if sku else "SKU",
        "name": cols.header(name) if name else "Name",
        "status_raw": cols.header(published) if published else "Published",
        "price_raw": "Regular price",
        "description": "Description",
        "tags_raw": "Tags",
    }
    select = ", ".join(f"{expr} AS {name_}" for name_, expr in fields.items())
    parents = (
        f"(SELECT {sku_text} AS parent_key, any_value({name_text}) AS parent_name FROM raw "
        f"WHERE {sku_text} IS NOT NULL GROUP BY 1)"
    )
    sql = (
        f"SELECT raw.rn, {select}, {_attributes_sql(cols, ignored, 'raw')} AS attributes "
        f"FROM raw LEFT JOIN {parents} AS parents ON parents.parent_key = {parent_text} "
        f"ORDER BY raw.rn"
    )
    present = {k for k, v in fields.items() if v != "NULL"}
    return Projection(
        sql=sql,
        sources=sources,
        required=["sku", "name"],
        defaults={"status": "'draft'", "commodity_type": "'physical'"},
        present=present,
    )
