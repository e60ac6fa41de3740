"""Presets: how the columns of real exports map onto the canonical product model.

A preset turns table `raw(rn, c0..cN)` into a SELECT of the canonical fields, still as
text (`*_raw` columns are parsed and checked later, in one place, by validate.py).
Every source column that no field takes goes into `attributes` under its own header, so
nothing in the file is lost. An explicit per-column mapping overrides the preset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from productimport.engine.errors import InvalidOptions
from productimport.engine.options import Preset
from productimport.engine.parse import sql_string
from productimport.engine.relations import RAW  # the file's rows: rn, c0..cN
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
    """The SELECT that produces table `staged`, and what it knows about the file.

    It is kept in two parts, the select list and the relation it reads (what follows
    FROM), so that `sql` and `over()` render the same select list over different relations.
    """

    select: str  # `rn`, the canonical fields and `attributes`, as a SELECT list
    # What the select list reads: `raw` itself for streamable ones; otherwise a join or a
    # subquery of `raw`, with any WHERE / ORDER BY after it.
    relation: str
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

    def __post_init__(self) -> None:
        if self.streamable and self.relation != RAW:
            raise ValueError(f"a streamable projection reads {RAW} itself, not {self.relation}")

    @property
    def sql(self) -> str:
        """The SELECT over `raw`."""
        return f"SELECT {self.select} FROM {self.relation}"

    def over(self, table: str) -> str:
        """The same projection reading `table` instead of `raw` (streamable ones only)."""
        if not self.streamable:
            raise ValueError("only a streamable projection can read another table")
        return f"SELECT {self.select} FROM {table}"


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
        Preset.native: partial(_streamable, NATIVE),
        Preset.elasticpath: partial(_streamable, ELASTICPATH),
        Preset.shopify: _shopify,
        Preset.woocommerce: _woocommerce,
    }[preset]
    return builder(cols, overrides, ignored)


# Presets as data: a Layout says, for each canonical field, which source column fills it
# and how; `_read` interprets it. What a layout cannot say (a key built from several
# columns, a join, Shopify's variant rows) is in each preset's own function below.


class From:
    """Where a preset reads one canonical field: the first of `headers` the file has."""

    def __init__(
        self,
        *headers: str,
        value: Callable[[str], str] = text,
        label: str | None = None,
        take: bool = True,
        mappable: bool = True,
        otherwise: From | None = None,
    ) -> None:
        self.headers = headers  # matched by normalize_header(); none: only a mapping fills it
        self.value = value  # the field's SQL, given the column (`cN`) it reads
        self.label = label  # the column errors name when the file has none of `headers`
        self.take = take  # False: the column is read, and also kept as an attribute
        self.mappable = mappable  # False: a mapping onto this field is ignored
        self.otherwise = otherwise  # read instead when the file has none of `headers`


@dataclass(frozen=True)
class Layout:
    """A preset as data. Fields it leaves out are filled only by a mapping."""

    fields: dict[str, From]
    required: list[str]  # model fields every row must have
    defaults: dict[str, str] = field(default_factory=dict)  # model field -> SQL default
    # Elastic Path: the sku is the first of these fields a row has; given_sku keeps its own.
    key: tuple[str, ...] = ()
    match_by_reference: bool = False


_DRAFT_PHYSICAL = {"status": "'draft'", "commodity_type": "'physical'"}


@dataclass
class _Read:
    """A layout applied to a file's headers."""

    exprs: dict[str, str]  # every one of TEXT_FIELDS -> its SQL, in that order
    columns: dict[str, str]  # field -> the source column (`cN`) it reads
    sources: dict[str, str]  # field -> the header it reads, or the layout's label
    present: set[str]

    def select_list(self) -> str:
        return ", ".join(f"{expr} AS {name}" for name, expr in self.exprs.items())


def _read(layout: Layout, cols: Columns, overrides: dict[str, str]) -> _Read:
    """Each canonical field's SQL: its mapped column, else the first column the layout
    names that the file has (taken from the attributes unless `take=False`), else NULL."""
    read = _Read({}, {}, {}, set())
    for name in TEXT_FIELDS:
        spec = layout.fields.get(name, From())
        reader: From | None = spec
        col = overrides.get(name) if spec.mappable else None
        while col is None and reader is not None:
            col = (cols.take if reader.take else cols.peek)(*reader.headers)
            if col is None:
                reader = reader.otherwise
        if col is not None and reader is not None:
            read.exprs[name] = reader.value(col)
            read.columns[name] = col
            read.sources[name] = cols.header(col)
            read.present.add(name)
        else:
            read.exprs[name] = "NULL"
            if spec.label:
                read.sources[name] = spec.label
    return read


def _streamable(
    layout: Layout, cols: Columns, overrides: dict[str, str], ignored: set[int]
) -> Projection:
    """A preset where each field is one column of the same row (native, Elastic Path)."""
    read = _read(layout, cols, overrides)
    if layout.key:
        read.exprs["given_sku"] = read.exprs["sku"]
        read.exprs["sku"] = f"coalesce({', '.join(read.exprs[f] for f in layout.key)})"
        read.sources.setdefault(
            "sku", next((read.sources[f] for f in layout.key if f in read.sources), "sku")
        )
    return Projection(
        select=f"rn, {read.select_list()}, {_attributes_sql(cols, ignored)} AS attributes",
        relation=RAW,
        sources=read.sources,
        required=list(layout.required),
        defaults=dict(layout.defaults),
        present=read.present,
        match_by_reference=layout.match_by_reference,
        streamable=True,
        field_columns={name: int(col[1:]) for name, col in read.columns.items()},
    )


NATIVE = Layout(
    fields={
        "sku": From("sku"),
        "name": From("name", "title"),
        "slug": From("slug", "handle"),
        "description": From("description"),
        "status_raw": From("status"),
        "commodity_raw": From("commodity_type", "commodity type"),
        "price_raw": From("price"),
        "currency_raw": From("currency"),
        "upc_ean": From("upc_ean", "upc", "ean", "gtin", "barcode"),
        "mpn": From("mpn"),
        "external_ref": From("external_ref"),
        "tags_raw": From("tags"),
        "main_image": From("main_image", "main_image_id", "image"),
        "parent_sku": From("parent_sku", "parent"),
    },
    required=["sku", "name"],
    defaults=_DRAFT_PHYSICAL,
)

ELASTICPATH = Layout(
    fields={
        "ep_id": From("id"),
        "external_ref": From("external_ref"),
        "sku": From("sku"),
        "name": From("name"),
        "slug": From("slug"),
        "description": From("description"),
        "status_raw": From("status"),
        "commodity_raw": From("commodity_type"),
        "upc_ean": From("upc_ean"),
        "mpn": From("mpn"),
        "tags_raw": From("tags"),
        "main_image": From("main_image_id", "main_image"),
        "price_raw": From("price"),
        "currency_raw": From("currency"),
        "parent_sku": From("parent_sku"),
    },
    required=["name", "description", "slug", "status", "commodity_type"],
    # Elastic Path's key: the sku, or the external_ref standing in for a missing one.
    key=("sku", "external_ref"),
    match_by_reference=True,
)


# WooCommerce's value encodings, as SQL over the source column.


def _woo_published(col: str) -> str:
    """Published: 1 live, 0 and -1 (private) draft."""
    return (
        f"CASE trim({col}) WHEN '1' THEN 'live' WHEN '0' THEN 'draft' "
        f"WHEN '-1' THEN 'draft' ELSE lower({text(col)}) END"
    )


def _woo_type(col: str) -> str:
    """Type, e.g. `simple, virtual`: virtual and downloadable products are digital."""
    return (
        f"CASE WHEN lower({col}) LIKE '%virtual%' OR lower({col}) LIKE '%downloadable%' "
        "THEN 'digital' ELSE 'physical' END"
    )


def _first_image(col: str) -> str:
    """Images, a comma-separated list of URLs: the first is the main image."""
    return f"nullif(trim(split_part({col}, ',', 1)), '')"


WOOCOMMERCE = Layout(
    fields={
        "sku": From("sku", label="SKU"),
        "name": From("name", label="Name"),
        "description": From("description", label="Description"),
        "status_raw": From("published", value=_woo_published, label="Published"),
        "commodity_raw": From("type", value=_woo_type, take=False, mappable=False),
        "price_raw": From("regular price", label="Regular price"),
        "upc_ean": From("gtin, upc, ean, or isbn"),
        "tags_raw": From("tags", label="Tags"),
        "main_image": From("images", value=_first_image, take=False, mappable=False),
        "parent_sku": From("parent"),
        "ep_id": From(mappable=False),
    },
    required=["sku", "name"],
    defaults=_DRAFT_PHYSICAL,
)


def _woocommerce(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    """WOOCOMMERCE, plus a key for rows without a SKU and names for nameless variations,
    which read the parent's row: a join, so not streamable."""
    read = _read(WOOCOMMERCE, cols, overrides)
    sku, name, parent = read.exprs["sku"], read.exprs["name"], read.exprs["parent_sku"]
    values = _woo_attribute_values(cols)
    read.exprs["sku"] = _woo_key(cols, sku, name, parent, values)
    # A variation without a name takes its parent's, with its attribute values.
    read.exprs["name"] = (
        f"coalesce({name}, parents.parent_name || ' - ' || {values}, parents.parent_name)"
    )
    read.present |= {"sku", "name"}
    parents = (
        f"(SELECT {sku} AS parent_key, any_value({name}) AS parent_name FROM {RAW} "
        f"WHERE {sku} IS NOT NULL GROUP BY 1)"
    )
    attributes = _attributes_sql(cols, ignored, RAW)
    return Projection(
        select=f"{RAW}.rn, {read.select_list()}, {attributes} AS attributes",
        relation=(
            f"{RAW} LEFT JOIN {parents} AS parents ON parents.parent_key = {parent} "
            f"ORDER BY {RAW}.rn"
        ),
        sources=read.sources,
        required=list(WOOCOMMERCE.required),
        defaults=dict(WOOCOMMERCE.defaults),
        present=read.present,
    )


def _woo_attribute_values(cols: Columns) -> str:
    """A variation's attribute values (`Attribute N value(s)` columns), comma-separated."""
    values = [
        text(f"c{i}")
        for i, header in enumerate(cols.headers)
        if re.fullmatch(r"attribute \d+ value\(s\)", normalize_header(header))
    ]
    return f"nullif(concat_ws(', ', {', '.join(values)}), '')" if values else "NULL"


def _woo_key(cols: Columns, sku: str, name: str, parent: str, values: str) -> str:
    """WooCommerce allows products without a SKU (variations, external and grouped
    products); they are keyed by their ID, else their parent and attribute values, else
    their name, so the real export files import without a rejected row."""
    product_id = cols.peek("id")
    by_id = f"'id:' || {text(product_id)}, " if product_id else ""
    return (
        f"coalesce({sku}, {by_id}{parent} || '/' || {values}, "
        f"'name:' || lower(regexp_replace({name}, '[^A-Za-z0-9]+', '-', 'g')))"
    )


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


def _shopify_status(col: str) -> str:
    """Status: active is live, archived draft."""
    return (
        f"CASE lower({text(col)}) WHEN 'active' THEN 'live' WHEN 'archived' THEN 'draft' "
        f"ELSE lower({text(col)}) END"
    )


def _shopify_published(col: str) -> str:
    """Published, in files without Status: TRUE is live."""
    return f"CASE WHEN upper({text(col)}) = 'TRUE' THEN 'live' ELSE 'draft' END"


def _shopify_shipping(col: str) -> str:
    """Variant Requires Shipping: FALSE is a digital product."""
    return f"CASE WHEN upper({text(col)}) = 'FALSE' THEN 'digital' ELSE 'physical' END"


# Read from the Handle group's columns (see _shopify_grouped), so a variant row has its
# product's title, description, tags... `sku` and `main_image` are completed by _shopify.
SHOPIFY = Layout(
    fields={
        "sku": From("variant sku", label="Variant SKU"),
        "name": From("title", label="Title"),
        "slug": From("handle"),
        "description": From("body (html)", label="Body (HTML)"),
        "status_raw": From(
            "status",
            value=_shopify_status,
            label="Status",
            otherwise=From("published", value=_shopify_published, take=False),
        ),
        "commodity_raw": From(
            "variant requires shipping", value=_shopify_shipping, take=False, mappable=False
        ),
        "price_raw": From("variant price", label="Variant Price"),
        "upc_ean": From("variant barcode", label="Variant Barcode"),
        "mpn": From("google shopping / mpn", take=False),
        "tags_raw": From("tags", label="Tags"),
        "main_image": From("variant image", mappable=False),
        "parent_sku": From("handle", mappable=False),
        "ep_id": From(mappable=False),
    },
    required=["sku", "name"],
    defaults=_DRAFT_PHYSICAL,
)


def _shopify(cols: Columns, overrides: dict[str, str], ignored: set[int]) -> Projection:
    """SHOPIFY over the rows of each Handle group, product-level cells filled in from the
    group's first row; variants keyed, and image-only rows folded into their group."""
    handle = cols.take("handle")
    if handle is None:
        raise InvalidOptions("the shopify preset needs a Handle column")
    grouped = _shopify_grouped(cols, handle)
    read = _read(SHOPIFY, cols, overrides)
    options = [o for o in (cols.peek(f"option{n} value") for n in (1, 2, 3)) if o]
    read.exprs["sku"] = _shopify_variant_key(read.exprs["sku"], handle, options)
    read.exprs["main_image"] = f"coalesce({read.exprs['main_image']}, group_image)"
    read.present |= {"sku", "main_image"}
    # What makes a row a variant rather than one more image of its product.
    signals = [read.columns[f] for f in ("sku", "price_raw") if f in read.columns] + options
    images = _shopify_images(cols, handle, signals)
    attributes = _attributes_sql(cols, ignored)
    if cols.peek("image src"):
        attributes = (
            f"CASE WHEN group_images IS NULL THEN {attributes} ELSE list_append("
            f"list_filter({attributes}, lambda e: e.key <> 'Images'), "
            "{'key': 'Images', 'value': group_images}) END"
        )
    return Projection(
        select=f"rn, {read.select_list()}, {attributes} AS attributes",
        relation=f"(SELECT rn, {grouped}, {images} FROM {RAW}) AS grouped WHERE NOT image_only",
        sources=read.sources,
        required=list(SHOPIFY.required),
        defaults=dict(SHOPIFY.defaults),
        present=read.present,
    )


def _shopify_grouped(cols: Columns, handle: str) -> str:
    """Every source column, product-level ones (not _SHOPIFY_VARIANT_PREFIXES) filled
    from the first row of the Handle group that has them."""
    window = (
        f"OVER (PARTITION BY {handle} ORDER BY rn "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)"
    )
    columns = []
    for i, header in enumerate(cols.headers):
        col = f"c{i}"
        if col == handle or normalize_header(header).startswith(_SHOPIFY_VARIANT_PREFIXES):
            columns.append(col)
        else:
            cell = f"nullif(trim({col}), '')"
            columns.append(f"coalesce({cell}, first_value({cell} IGNORE NULLS) {window}) AS {col}")
    return ", ".join(columns)


def _shopify_variant_key(sku: str, handle: str, options: list[str]) -> str:
    """A variant without a SKU is keyed by its Handle and option values: stable, unique
    within the group, and what Shopify itself uses to tell variants apart."""
    option_key = f"concat_ws('/', {', '.join(text(o) for o in options)})" if options else "''"
    return (
        f"coalesce({sku}, CASE WHEN {option_key} <> '' "
        f"THEN {text(handle)} || '/' || {option_key} ELSE {text(handle)} END)"
    )


def _shopify_images(cols: Columns, handle: str, signals: list[str]) -> str:
    """Columns image_only, group_image and group_images: a row with an Image Src and no
    variant cell (`signals`) only adds an image to its group, and is not imported; the
    group's images, in Image Position order, are its main image and its `Images`."""
    src, position = cols.peek("image src"), cols.peek("image position")
    if src is None:
        return "false AS image_only, NULL AS group_image, NULL AS group_images"
    blank = " AND ".join(f"{text(c)} IS NULL" for c in signals)
    image_only = f"({src} IS NOT NULL AND {blank})" if signals else "false"
    order = f"try_cast({position} AS INTEGER), rn" if position else "rn"
    return (
        f"{image_only} AS image_only, "
        f"first_value({text(src)} IGNORE NULLS) OVER (PARTITION BY {handle} ORDER BY "
        f"{order} ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS group_image, "
        f"string_agg({text(src)}, ', ' ORDER BY {order}) OVER (PARTITION BY {handle}) "
        "AS group_images"
    )
