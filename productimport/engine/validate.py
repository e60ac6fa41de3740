"""Row rules as SQL over the whole file at once: one query, never a Python call per row.

Two kinds of rules (see Rule): field rules look at one row's own fields; key rules at
its resolved catalog key, which needs every row (duplicates) or the catalog. The first
pass (first_pass_sql) keeps each record's key fields and fingerprint, and evaluates every
field rule at once: only the rows it finds suspect keep their other fields. Input: CHECKED
(those rows, typed) and KEYED (each row's resolved catalog key, its first occurrence and
whether the catalog has it), by the names the runner hands over. Output: table
ROW_ERRORS(rn, column_name, code, message, value, ref_rn); `ref_rn` names another row
the message refers to (the first occurrence of a duplicate), and `{ref_line}` in the
message is replaced by its line once lines are known."""

from __future__ import annotations

from dataclasses import dataclass

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


# The fields the row rules read (view `checked`); the typed ones (those in RAW_OF) are
# computed from their text where a rule reads them.
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

# The text the checked fields are read from: the typed ones are parsed again from it.
TEXT_FIELDS = [f for f in CHECKED_FIELDS if f not in RAW_OF]


def fingerprint(alias: str) -> str:
    """A hash of the text fields, which the second pass computes identically: it tells
    apart the rows that share a key (merge.accepted_by_key)."""
    return f"hash({', '.join(f'{alias}.{f}' for f in TEXT_FIELDS)})"


def key_fields(projection: Projection) -> list[str]:
    """The text fields KEYED reads for every row: the sku, and for Elastic Path the id,
    external_ref and given sku it matches by."""
    if projection.match_by_reference:
        return ["sku", "ep_id", "external_ref", "given_sku"]
    return ["sku"]


def _detail_fields(projection: Projection) -> list[str]:
    """The text fields the first pass keeps only for its suspect rows."""
    keys = key_fields(projection)
    return [field for field in TEXT_FIELDS if field not in keys]


def _unchecked_required(projection: Projection) -> list[str]:
    """Required fields outside CHECKED_FIELDS, which a rule reads only as 'is it empty?'
    (column missing_<field>)."""
    return [
        raw
        for raw in (RAW_OF.get(field, field) for field in projection.required)
        if raw not in CHECKED_FIELDS
    ]


def first_pass_sql(projection: Projection, staged: str) -> str:
    """The first pass over `staged`, one row per record: its key fields, its fingerprint
    and `suspect`, whether any field rule holds for it; the other checked texts only for
    the suspect rows, as a list (NULL for the others: a NULL list costs a row almost
    nothing, a NULL text column 16 bytes). At 10M rows the table is 387 MB, where every
    checked text as a column made 919 MB plus 667 MB spilled.

    Scalar expressions only: the pass keeps the file's order (runner._checked), and a
    join (an IN subquery, or an IN list, which DuckDB turns into one) would not.
    """
    unchecked = _unchecked_required(projection)
    flagged = ", ".join(["*", *(f"({raw} IS NULL) AS missing_{raw}" for raw in unchecked)])
    columns = ", ".join(["rn", *key_fields(projection), *(f"missing_{raw}" for raw in unchecked)])
    return (
        f"SELECT {columns}, {fingerprint('t')} AS fp, {suspect_sql(projection)} AS suspect, "
        f"CASE WHEN suspect THEN [{', '.join(_detail_fields(projection))}] END AS detail "
        f"FROM (SELECT {flagged} FROM ({typed_sql(projection, staged)})) t"
    )


def checked_view_sql(projection: Projection, first_pass: str) -> str:
    """View CHECKED: the suspect rows of the first pass with their checked fields, typed
    where a rule reads them (typing again the few columns each rule reads costs less than
    storing them)."""
    unpacked = [f"detail[{i}] AS {field}" for i, field in enumerate(_detail_fields(projection), 1)]
    flags = [f"missing_{raw}" for raw in _unchecked_required(projection)]
    columns = ", ".join(["rn", *key_fields(projection), *unpacked, *flags])
    return typed_sql(projection, f"(SELECT {columns} FROM {first_pass} WHERE suspect)")


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


@dataclass(frozen=True)
class Rule:
    """One row rule: the rows it holds for (`where`) get an error record."""

    column: str  # the file's column named in the record
    code: str
    message: str  # SQL
    value: str  # SQL: the offending cell
    where: str  # SQL
    ref_rn: str = "NULL::BIGINT"  # SQL: another row the message names

    def over(self, table: str) -> str:
        return (
            f"SELECT rn, {sql_string(self.column)} AS column_name, {sql_string(self.code)} "
            f"AS code, {self.message} AS message, CAST({self.value} AS VARCHAR) AS value, "
            f"{self.ref_rn} AS ref_rn FROM {table} WHERE {self.where}"
        )


def _column_of(projection: Projection, field: str) -> str:
    """The file's column a canonical field comes from (named in error records)."""
    src = projection.sources
    return src.get(RAW_OF.get(field, field), src.get(field, field))


def _required_rules(projection: Projection, *, key: bool) -> list[Rule]:
    """missing_required for the preset's required fields: the sku's (a key rule, on the
    resolved key) with `key`, the others' without."""
    return [
        Rule(
            _column_of(projection, field),
            "missing_required",
            f"'{field} is required but the cell is empty'",
            "NULL",
            f"{raw} IS NULL" if raw in CHECKED_FIELDS else f"missing_{raw}",
        )
        for field in projection.required
        if ((raw := RAW_OF.get(field, field)) == "sku") == key
    ]


def field_rules(projection: Projection) -> list[Rule]:
    """The rules on a row's own fields (CHECKED). The first pass evaluates them all at
    once, as `suspect`, so they must be scalar expressions (see first_pass_sql)."""

    def col(field: str) -> str:
        return _column_of(projection, field)

    rules = _required_rules(projection, key=False)
    if projection.match_by_reference:
        rules.append(
            Rule(
                col("external_ref"),
                "missing_required",
                "'Elastic Path rows need an id or an external_ref to match or create a product'",
                "NULL",
                "ep_id IS NULL AND external_ref IS NULL",
            )
        )
    return [
        *rules,
        Rule(
            col("status"),
            "invalid_enum",
            "'status must be draft or live, got ''' || status_raw || ''''",
            "status_raw",
            "status_raw IS NOT NULL AND status IS NULL",
        ),
        Rule(
            col("commodity_type"),
            "invalid_enum",
            "'commodity_type must be physical or digital, got ''' || commodity_raw || ''''",
            "commodity_raw",
            "commodity_raw IS NOT NULL AND commodity_type IS NULL",
        ),
        Rule(
            col("price"),
            "invalid_number",
            "'price must be a decimal number, got ''' || price_raw || ''''",
            "price_raw",
            "price_raw IS NOT NULL AND price IS NULL",
        ),
        Rule(
            col("price"),
            "negative_price",
            "'price must be >= 0, got ' || price_raw",
            "price_raw",
            "price < 0",
        ),
        Rule(
            col("currency"),
            "invalid_currency",
            "'currency must be an ISO 4217 code such as EUR or USD, got ''' "
            "|| currency_raw || ''''",
            "currency_raw",
            # A regular expression (RE2 makes a DFA of the codes: 0.25 s for 10M cells),
            # not IN: DuckDB turns an IN list or subquery, and list_contains on a
            # constant list, into a join, which would not keep the first pass in file
            # order (records numbered wrongly).
            f"currency_raw IS NOT NULL AND NOT regexp_full_match(currency, "
            f"'{'|'.join(sorted(ISO_4217))}')",
        ),
        Rule(
            col("slug"),
            "invalid_slug",
            "'slug may hold only letters, digits, ''.'', ''-'' and ''_'', got ''' || slug || ''''",
            "slug",
            f"slug IS NOT NULL AND NOT regexp_full_match(slug, '{SLUG_PATTERN}')",
        ),
        Rule(
            col("name"),
            "too_long",
            f"'name is longer than {MAX_NAME_LENGTH} characters'",
            "name",
            f"length(name) > {MAX_NAME_LENGTH}",
        ),
        Rule(
            col("external_ref"),
            "too_long",
            f"'external_ref is longer than {MAX_EXTERNAL_REF_LENGTH} characters'",
            "external_ref",
            f"length(external_ref) > {MAX_EXTERNAL_REF_LENGTH}",
        ),
        Rule(
            col("tags"),
            "too_many_tags",
            f"'at most {MAX_TAGS} tags are allowed, got ' || len(tags)",
            "tags_raw",
            f"len(tags) > {MAX_TAGS}",
        ),
        Rule(
            col("tags"),
            "too_long",
            f"'each tag may have at most {MAX_TAG_LENGTH} characters'",
            "tags_raw",
            # No tag is longer than the cell it came from: the lambda runs only on cells
            # long enough to hold a tag that is too long.
            f"strlen(tags_raw) > {MAX_TAG_LENGTH} AND "
            f"list_max(list_transform(tags, lambda t: length(t))) > {MAX_TAG_LENGTH}",
        ),
    ]


def suspect_sql(projection: Projection) -> str:
    """Whether any field rule holds for a row (a rule that is NULL does not)."""
    return " OR ".join(f"coalesce({rule.where}, false)" for rule in field_rules(projection))


# The modes whose rules read KEYED's exists_in_catalog (whether the catalog has the key).
EXISTENCE_MODES = frozenset({Mode.create, Mode.update})


def key_rules(projection: Projection, mode: Mode, has_current: bool) -> list[Rule]:
    """The rules on a row's catalog key (KEYED: its sku is the resolved one); they need
    every row, or the catalog."""
    sku = _column_of(projection, "sku")
    rules = [
        # Not every preset requires a sku: Elastic Path's rows may match by id instead.
        *_required_rules(projection, key=True),
        Rule(sku, "too_long", f"'sku is longer than {MAX_SKU_LENGTH} characters'", "sku",
             f"length(sku) > {MAX_SKU_LENGTH}"),
        # The first occurrence of a key wins; every later one is rejected and names it.
        Rule(
            sku,
            "duplicate_sku",
            "'SKU ''' || sku || ''' appears more than once; the first occurrence, "
            "on line {ref_line}, is imported'",
            "sku",
            "sku IS NOT NULL AND rn <> first_rn",
            "first_rn",
        ),
    ]  # fmt: skip
    if projection.match_by_reference:  # KEYED says how each row matched
        rules += [
            Rule(
                sku,
                "sku_mismatch",
                "'row matches product ''' || key_match || ''' by id or external_ref but has "
                "sku ''' || given_sku || '''; change a SKU by importing under its old one'",
                "given_sku",
                "key_match IS NOT NULL AND given_sku IS NOT NULL AND given_sku <> key_match",
            ),
            Rule(
                "id",
                "not_found",
                "'no product has id ''' || ep_id || ''''",
                "ep_id",
                "ep_id IS NOT NULL AND key_match IS NULL AND id_matched = false",
            ),
        ]
    if mode is Mode.create and has_current:
        rules.append(
            Rule(
                sku,
                "sku_exists",
                "'SKU ''' || sku || ''' already exists and mode is create'",
                "sku",
                "exists_in_catalog",
            )
        )
    if mode is Mode.update:
        rules.append(
            Rule(
                sku,
                "sku_not_found",
                "'SKU ''' || sku || ''' is not in the catalog and mode is update'",
                "sku",
                "sku IS NOT NULL AND NOT exists_in_catalog",
            )
        )
    return rules


def build_row_errors(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    mode: Mode,
    has_current: bool,
    checked: str,
    keyed: str,
) -> str:
    """Table ROW_ERRORS: every rule over every row, one statement. The field rules read
    CHECKED, which holds only the rows the first pass found suspect."""
    checks = [rule.over(checked) for rule in field_rules(projection)]
    checks += [rule.over(keyed) for rule in key_rules(projection, mode, has_current)]
    con.execute(f"DROP TABLE IF EXISTS {ROW_ERRORS}")
    con.execute(f"CREATE TEMP TABLE {ROW_ERRORS} AS " + " UNION ALL ".join(checks))
    return ROW_ERRORS
