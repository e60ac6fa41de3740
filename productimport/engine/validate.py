"""Row rules as SQL over the whole file at once: one query, never a Python call per row.

Input: CHECKED (the narrow first pass: only the typed fields the rules read, see
CHECKED_FIELDS) and KEYED (each row's resolved catalog key, its first occurrence and
whether the catalog has it), by the names the runner hands over. Output: table
ROW_ERRORS(rn, column_name, code, message, value, ref_rn); `ref_rn` names another row
the message refers to (the first occurrence of a duplicate), and `{ref_line}` in the
message is replaced by its line once lines are known.
"""

from __future__ import annotations

import duckdb

from productimport.engine.options import Mode
from productimport.engine.parse import sql_string
from productimport.engine.presets import Projection
from productimport.engine.relations import ROW_ERRORS
from productimport.models.product import (
    MAX_EXTERNAL_REF_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SKU_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    SLUG_PATTERN,
)

# Active ISO 4217 currency codes.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL
    BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP
    ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR
    IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL
    LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
    NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD
    SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX
    USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()  # noqa: SIM905 - a table, easier to read and check as text
)

# The canonical field each checked field reads its text from.
RAW_OF = {
    "status": "status_raw",
    "commodity_type": "commodity_raw",
    "price": "price_raw",
    "currency": "currency_raw",
    "tags": "tags_raw",
}


# The fields the row rules read (view `checked`): the first pass keeps only their text
# (plus `rn` and a `missing_*` flag per other required field), so descriptions,
# attributes and the like are parsed but never held in memory; the typed ones (those in
# RAW_OF) are computed from their text where a rule reads them.
CHECKED_FIELDS = [
    "sku",
    "name",
    "slug",
    "external_ref",
    "ep_id",
    "given_sku",
    "status_raw",
    "status",
    "commodity_raw",
    "commodity_type",
    "price_raw",
    "price",
    "currency_raw",
    "currency",
    "tags_raw",
    "tags",
]


def checked_sql(projection: Projection, staged: str) -> str:
    """The first pass over `staged`: one narrow row per record, everything the row rules
    need."""
    flags = [
        f"({raw} IS NULL) AS missing_{raw}"
        for raw in (RAW_OF.get(field, field) for field in projection.required)
        if raw not in CHECKED_FIELDS
    ]
    text_fields = [f for f in CHECKED_FIELDS if f not in RAW_OF]
    return f"SELECT {', '.join(['rn', *text_fields, *flags])} FROM {staged}"


def checked_view_sql(projection: Projection, rows: str) -> str:
    """View CHECKED over the first pass's table: its typed fields are computed where a
    rule reads them, not stored (storing them cost more than typing again the few
    columns each rule reads)."""
    return typed_sql(projection, f"({rows})")


def tags_list(cell: str) -> str:
    """A tags cell as a list: split on commas, each tag trimmed, empty ones dropped.

    ASCII cells without spaces or empty tags (the usual ones) split as they are; the
    two lambdas run only on the rest (they cost 1.7 G instructions per million cells,
    perf stat; tests/engine/test_expressions.py checks both paths agree).
    """
    return (
        f"CASE WHEN {cell} IS NULL OR {cell} = '' THEN []::VARCHAR[] "
        f"WHEN NOT contains({cell}, ' ') AND NOT contains({cell}, ',,') "
        f"AND NOT starts_with({cell}, ',') AND NOT suffix({cell}, ',') "
        f"AND strlen({cell}) = length({cell}) THEN string_split({cell}, ',') "
        f"ELSE list_filter(list_transform(string_split({cell}, ','), lambda t: trim(t)), "
        "lambda t: t <> '') END"
    )


def typed_sql(projection: Projection, staged: str) -> str:
    """Parse the text fields once: enums, number, currency, tags list."""
    status_default = projection.defaults.get("status", "NULL")
    commodity_default = projection.defaults.get("commodity_type", "NULL")
    return f"""
        SELECT *,
            CASE WHEN status_raw IS NULL THEN {status_default}
                 ELSE CASE lower(status_raw) WHEN 'draft' THEN 'draft'
                                             WHEN 'live' THEN 'live' END END AS status,
            CASE WHEN commodity_raw IS NULL THEN {commodity_default}
                 ELSE CASE lower(commodity_raw) WHEN 'physical' THEN 'physical'
                                                WHEN 'digital' THEN 'digital' END
            END AS commodity_type,
            TRY_CAST(price_raw AS DECIMAL(18,4)) AS price,
            upper(currency_raw) AS currency,
            {tags_list("tags_raw")} AS tags
        FROM {staged}
    """


def _check(
    table: str,
    column: str,
    code: str,
    message_sql: str,
    value_sql: str,
    where: str,
    ref_rn: str = "NULL::BIGINT",
) -> str:
    """One rule over `table`. Rules on the catalog key (sku) read KEYED: its sku is the
    resolved one; the others read CHECKED."""
    return (
        f"SELECT rn, {sql_string(column)} AS column_name, {sql_string(code)} AS code, "
        f"{message_sql} AS message, CAST({value_sql} AS VARCHAR) AS value, {ref_rn} AS ref_rn "
        f"FROM {table} WHERE {where}"
    )


# The modes whose rules read KEYED's exists_in_catalog (whether the catalog has the key).
EXISTENCE_MODES = frozenset({Mode.create, Mode.update})


def build_row_errors(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    mode: Mode,
    has_current: bool,
    checked: str,
    keyed: str,
) -> str:
    """Table ROW_ERRORS: every rule over every row, one statement."""
    src = projection.sources

    def col(field: str) -> str:
        return src.get(RAW_OF.get(field, field), src.get(field, field))

    checks = []
    for field in projection.required:
        raw = RAW_OF.get(field, field)
        checks.append(
            _check(
                keyed if raw == "sku" else checked,
                col(field),
                "missing_required",
                f"'{field} is required but the cell is empty'",
                "NULL",
                f"{raw} IS NULL" if raw in CHECKED_FIELDS else f"missing_{raw}",
            )
        )
    if projection.match_by_reference:
        checks.append(
            _check(
                checked,
                col("external_ref"),
                "missing_required",
                "'Elastic Path rows need an id or an external_ref to match or create a product'",
                "NULL",
                "ep_id IS NULL AND external_ref IS NULL",
            )
        )
    checks += [
        _check(
            checked,
            col("status"),
            "invalid_enum",
            "'status must be draft or live, got ''' || status_raw || ''''",
            "status_raw",
            "status_raw IS NOT NULL AND status IS NULL",
        ),
        _check(
            checked,
            col("commodity_type"),
            "invalid_enum",
            "'commodity_type must be physical or digital, got ''' || commodity_raw || ''''",
            "commodity_raw",
            "commodity_raw IS NOT NULL AND commodity_type IS NULL",
        ),
        _check(
            checked,
            col("price"),
            "invalid_number",
            "'price must be a decimal number, got ''' || price_raw || ''''",
            "price_raw",
            "price_raw IS NOT NULL AND price IS NULL",
        ),
        _check(
            checked,
            col("price"),
            "negative_price",
            "'price must be >= 0, got ' || price_raw",
            "price_raw",
            "price < 0",
        ),
        _check(
            checked,
            col("currency"),
            "invalid_currency",
            "'currency must be an ISO 4217 code such as EUR or USD, got ''' "
            "|| currency_raw || ''''",
            "currency_raw",
            # A subquery, so DuckDB probes a hash table: a literal IN list was pushed
            # into the scan as 180 comparisons per row (0.87 of 1.7 CPU-s for all rules).
            f"currency_raw IS NOT NULL AND currency NOT IN (SELECT unnest(["
            f"{', '.join(sql_string(c) for c in sorted(ISO_4217))}]))",
        ),
        _check(
            checked,
            col("slug"),
            "invalid_slug",
            "'slug may hold only letters, digits, ''.'', ''-'' and ''_'', got ''' || slug || ''''",
            "slug",
            f"slug IS NOT NULL AND NOT regexp_full_match(slug, '{SLUG_PATTERN}')",
        ),
        _check(
            keyed,
            col("sku"),
            "too_long",
            f"'sku is longer than {MAX_SKU_LENGTH} characters'",
            "sku",
            f"length(sku) > {MAX_SKU_LENGTH}",
        ),
        _check(
            checked,
            col("name"),
            "too_long",
            f"'name is longer than {MAX_NAME_LENGTH} characters'",
            "name",
            f"length(name) > {MAX_NAME_LENGTH}",
        ),
        _check(
            checked,
            col("external_ref"),
            "too_long",
            f"'external_ref is longer than {MAX_EXTERNAL_REF_LENGTH} characters'",
            "external_ref",
            f"length(external_ref) > {MAX_EXTERNAL_REF_LENGTH}",
        ),
        _check(
            checked,
            col("tags"),
            "too_many_tags",
            f"'at most {MAX_TAGS} tags are allowed, got ' || len(tags)",
            "tags_raw",
            f"len(tags) > {MAX_TAGS}",
        ),
        _check(
            checked,
            col("tags"),
            "too_long",
            f"'each tag may have at most {MAX_TAG_LENGTH} characters'",
            "tags_raw",
            # No tag is longer than the cell it came from: the lambda runs only on cells
            # long enough to hold a tag that is too long.
            f"strlen(tags_raw) > {MAX_TAG_LENGTH} AND "
            f"list_max(list_transform(tags, lambda t: length(t))) > {MAX_TAG_LENGTH}",
        ),
        # The first occurrence of a key wins; every later one is rejected and names it.
        _check(
            keyed,
            col("sku"),
            "duplicate_sku",
            "'SKU ''' || sku || ''' appears more than once; the first occurrence, "
            "on line {ref_line}, is imported'",
            "sku",
            "sku IS NOT NULL AND rn <> first_rn",
            "first_rn",
        ),
    ]
    if projection.match_by_reference:  # KEYED says how each row matched
        checks += [
            _check(
                keyed,
                col("sku"),
                "sku_mismatch",
                "'row matches product ''' || key_match || ''' by id or external_ref but has "
                "sku ''' || given_sku || '''; change a SKU by importing under its old one'",
                "given_sku",
                "key_match IS NOT NULL AND given_sku IS NOT NULL AND given_sku <> key_match",
            ),
            _check(
                keyed,
                "id",
                "not_found",
                "'no product has id ''' || ep_id || ''''",
                "ep_id",
                "ep_id IS NOT NULL AND key_match IS NULL AND id_matched = false",
            ),
        ]
    if mode is Mode.create and has_current:
        checks.append(
            _check(
                keyed,
                col("sku"),
                "sku_exists",
                "'SKU ''' || sku || ''' already exists and mode is create'",
                "sku",
                "exists_in_catalog",
            )
        )
    if mode is Mode.update:
        checks.append(
            _check(
                keyed,
                col("sku"),
                "sku_not_found",
                "'SKU ''' || sku || ''' is not in the catalog and mode is update'",
                "sku",
                "sku IS NOT NULL AND NOT exists_in_catalog",
            )
        )
    con.execute(f"DROP TABLE IF EXISTS {ROW_ERRORS}")
    con.execute(f"CREATE TEMP TABLE {ROW_ERRORS} AS " + " UNION ALL ".join(checks))
    return ROW_ERRORS
