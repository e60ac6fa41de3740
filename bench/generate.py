"""Deterministic generator of the benchmark's product CSV files (native preset).

One pass writes, for a given row count N and seed:

- ``base.csv``: N valid products, the catalog the measured import merges into;
- ``update.csv``: N records derived from the base, position by position: about 60% of
  the base products unchanged, 30% changed (price, status, description or an attribute),
  and in the place of the remaining 10% a brand-new product (so the catalog grows by
  ~10% to ~1.1 N products). About 0.5% of the records are then replaced by an invalid
  record of a varied kind (see ``INVALID_KINDS``); those slots count as rejected only.
- ``update-50k.csv`` / ``update-100k.csv``: the first 50,000 / 100,000 records of
  ``update.csv`` (Elastic Path's per-file maximum, and the pydantic baseline's sample).
- ``invalid-records.csv``: ``record,line,kind`` of every invalid record of ``update.csv``
  (0-based record number; the physical line where it starts, header = line 1), to check
  the engine's error report;
- ``manifest.json``: sizes, the per-kind invalid counts and the counts an import must
  report (``expected``), written last: a directory without it is incomplete.

Generation is not what the benchmark measures, but it must stay quick (1M rows take
well under a minute): values come from small pools, quoting is applied only to the
fields that can need it, and output is written in large batches.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from productimport.models.product import ImportCounts

# Bump when the generated content changes, so cached files are not reused silently.
GEN_VERSION = 3
DEFAULT_SEED = 20261122

COLUMNS = [
    "sku",
    "name",
    "slug",
    "description",
    "status",
    "commodity_type",
    "price",
    "currency",
    "upc_ean",
    "mpn",
    "external_ref",
    "tags",
    "main_image",
    "parent_sku",
    # Not named by the product model: the engine keeps these in `attributes`.
    "brand",
    "color",
    "weight_kg",
]
HEADER = ",".join(COLUMNS) + "\n"

INVALID_SHARE = 0.005
# One kind of invalid record each; named after the error code the engine should report.
INVALID_KINDS = [
    "malformed_row:too_many_columns",
    "malformed_row:too_few_columns",
    "malformed_row:broken_quoting",
    "negative_price",
    "invalid_enum:status",
    "invalid_currency",
    "invalid_slug",
    "missing_required:name",
    "duplicate_sku",
    "invalid_number:price",
]
SUBSETS = {"update-50k.csv": 50_000, "update-100k.csv": 100_000}

BRANDS = [
    "Acme",
    "Nordlys",
    "Bergmann & Söhne",
    "Ubiquo",
    "Kestrel",
    "Maison Lumière",
    "Tundra Outdoor",
    "Pixelwerk",
    "Otter Co.",
    "Brightline",
    "Hoffmann",
    "Zephyr",
    "Quercus",
    "Sakura Home",
    "Northwind",
    "Vela",
    "Ironbark",
    "Luma",
    "Fjell",
    "Corvid",
]
ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Ergonomic",
    "Foldable",
    "Heavy-Duty",
    "Lightweight",
    "Modern",
    "Portable",
    "Premium",
    "Rustic",
    "Sleek",
    "Smart",
    "Sturdy",
    "Vintage",
    "Waterproof",
    "Wireless",
    "Insulated",
    "Adjustable",
    "Recycled",
]
MATERIALS = [
    "Oak",
    "Walnut",
    "Steel",
    "Aluminium",
    "Bamboo",
    "Cotton",
    "Linen",
    "Leather",
    "Wool",
    "Glass",
    "Ceramic",
    "Copper",
    "Cork",
    "Hemp",
    "Silicone",
    "Titanium",
]
NOUNS = [
    "Chair",
    "Desk Lamp",
    "Backpack",
    "Water Bottle",
    "Headphones",
    "Kettle",
    "Blanket",
    "Bookshelf",
    "Cutting Board",
    "Jacket",
    "Sneakers",
    "Keyboard",
    "Mug",
    "Planter",
    "Tent",
    "Umbrella",
    "Watch",
    "Wallet",
    "Speaker",
    "Pillow",
    "Frying Pan",
    "Toolbox",
]
COLORS = [
    "black",
    "white",
    "graphite",
    "navy",
    "forest green",
    "sand",
    "terracotta",
    "sky blue",
    "burgundy",
    "mustard",
    "charcoal",
    "ivory",
    "olive",
    "rose",
    "teal",
    "silver",
]
CURRENCIES = ["EUR"] * 8 + ["USD"] * 6 + ["GBP"] * 3 + ["SEK", "CHF", "PLN", "JPY", "DKK"]
TAG_POOL = [
    "new",
    "sale",
    "bestseller",
    "eco",
    "gift",
    "outdoor",
    "kitchen",
    "office",
    "travel",
    "summer",
    "winter",
    "limited",
    "bundle-ready",
    "clearance",
    "handmade",
    "vegan",
]
# Sentences carry the characters that make CSV hard: commas, doubled quotes, non-ASCII.
SENTENCES = [
    "Built to last, it shrugs off daily wear, spills and the occasional drop.",
    'Our customers call it "the last one you will ever need", and we agree.',
    "Designed in Copenhagen, made in Portugal, shipped from Rotterdam.",
    "Dimensions: 42 x 30 x 12 cm; weight without packaging as listed.",
    'The so-called "quiet mode" keeps noise below 30 dB, even at night.',
    "Clean with a damp cloth; do not use abrasive cleaners, bleach or solvents.",
    "Each piece is inspected by hand before it leaves the workshop.",
    "Certified to EN 71-3, REACH compliant, free of BPA and phthalates.",
    "Fits standard 10\u201d and 12\u201d mounts, no adapter required.",
    'Rated 4.8/5 by 2,300 reviewers: "solid, simple, beautiful".',
    "Includes a 2-year warranty, free returns within 30 days, and spare parts for 10 years.",
    "Crème finish, brushed edges, and a soft-touch grip that stays cool.",
    "Pairs with the matching accessories sold separately (see related products).",
    "Packaging is 100% recycled cardboard, printed with plant-based inks.",
    "Available while stocks last; colours may vary slightly from the photos.",
    'Tip: pre-heat for 2 minutes, then use the "eco" setting to save energy.',
    "Assembly takes about 15 minutes with the included hex key.",
    "Ships in 1-3 business days from our EU warehouse.",
    "Made from responsibly sourced materials, FSC\u00ae certified where applicable.",
    "Größe und Gewicht können je nach Ausführung leicht abweichen.",
]


@dataclass
class FileStats:
    path: Path
    # The counts an import of the file must report (--mode upsert).
    expected: ImportCounts = field(default_factory=ImportCounts)
    invalid_kinds: dict[str, int] = field(default_factory=dict)


def _q(value: str) -> str:
    """Quote one CSV field (RFC 4180: double the quote character)."""
    return '"' + value.replace('"', '""') + '"'


def _q_if_needed(value: str) -> str:
    if "," in value or '"' in value or "\n" in value or "\r" in value:
        return _q(value)
    return value


class _RowFactory:
    """Makes product rows (lists of raw field values) from one seeded random stream."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._slug_cache: dict[str, str] = {}

    def product(self, number: int, parent: str) -> list[str]:
        r = self.rng.random
        brand = BRANDS[int(r() * len(BRANDS))]
        adj = ADJECTIVES[int(r() * len(ADJECTIVES))]
        material = MATERIALS[int(r() * len(MATERIALS))]
        noun = NOUNS[int(r() * len(NOUNS))]
        color = COLORS[int(r() * len(COLORS))]
        name = f"{brand} {adj} {material} {noun}"
        roll = r()
        if roll < 0.02:
            name += ", 2-pack"
        elif roll < 0.03:
            name += ' 15" edition'
        sku = f"SKU-{number:08d}"
        base_slug = self._slug_cache.get(name)
        if base_slug is None:
            base_slug = (
                "".join(c if c.isascii() and c.isalnum() else "-" for c in name.lower())
                .replace("--", "-")
                .strip("-")
            )
            self._slug_cache[name] = base_slug
        slug = f"{base_slug}-{number}"
        sentences = [SENTENCES[int(r() * len(SENTENCES))] for _ in range(2 + int(r() * 5))]
        lead = f"The {adj.lower()} {noun.lower()} in {color}, made of {material.lower()}."
        # About one description in eight has paragraphs (embedded newlines).
        sep = "\n" if r() < 0.125 else " "
        description = lead + " " + sep.join(sentences)
        status = "live" if r() < 0.8 else "draft"
        digital = r() < 0.05
        commodity = "digital" if digital else "physical"
        if r() < 0.02:
            price, currency = "", ""
        else:
            price = f"{5 + r() * 495:.2f}"
            currency = CURRENCIES[int(r() * len(CURRENCIES))]
        upc = f"{int(r() * 10**13):013d}"  # leading zeros must survive the import
        mpn = f"MPN-{int(r() * 900000) + 100000}-{material[:2].upper()}"
        external_ref = f"erp:{number}"
        tags = ",".join(TAG_POOL[int(r() * len(TAG_POOL))] for _ in range(int(r() * 4)))
        image = f"https://cdn.example.com/p/{number % 997}/{sku.lower()}.jpg"
        weight = "" if digital else f"{0.05 + r() * 24:.2f}"
        return [
            sku, name, slug, description, status, commodity, price, currency, upc, mpn,
            external_ref, tags, image, parent, brand, color, weight,
        ]  # fmt: skip

    def change(self, row: list[str]) -> list[str]:
        """A changed version of a product: what a nightly ERP feed typically alters."""
        new = list(row)
        roll = self.rng.random()
        if roll < 0.5 or not new[6]:
            if new[6]:
                price = f"{float(new[6]) * (0.8 + self.rng.random() * 0.4):.2f}"
                # Never "changed" to the same value: that row would count as unchanged.
                new[6] = price if price != new[6] else f"{float(price) + 1:.2f}"
            else:
                new[6], new[7] = "19.99", "EUR"
        elif roll < 0.7:
            new[4] = "draft" if new[4] == "live" else "live"
        elif roll < 0.85:
            new[3] = new[3] + " Now with an improved finish, same price."
        else:
            new[15] = "ochre" if new[15] != "ochre" else "umber"  # an attribute column
        return new


def encode(row: list[str]) -> str:
    """One CSV record. Only name, description and tags can contain special characters."""
    (sku, name, slug, desc, status, commodity, price, currency, upc, mpn, ext, tags, image,
     parent, brand, color, weight) = row  # fmt: skip
    return (
        f"{sku},{_q_if_needed(name)},{slug},{_q(desc)},{status},{commodity},"
        f"{_q_if_needed(price)},{currency},{upc},{mpn},{ext},{_q_if_needed(tags)},{image},"
        f"{parent},{_q_if_needed(brand)},{color},{weight}\n"
    )


def corrupt(kind: str, row: list[str], last_valid_sku: str) -> str:
    """An invalid record of the given kind, built from an otherwise valid product."""
    bad = list(row)
    if kind == "malformed_row:too_many_columns":
        return encode(bad)[:-1] + ",surplus\n"
    if kind == "malformed_row:too_few_columns":
        return encode(bad).rsplit(",", 3)[0] + "\n"
    if kind == "malformed_row:broken_quoting":
        # A quoted field whose inner quotes were not doubled: the classic hand-edited CSV.
        # The record is kept on one line: a parser resynchronises at the next newline, and
        # one inside a later quoted field would make this one error into several.
        bad[3] = bad[3].replace("\n", " ")
        line = encode(bad)
        head, _, tail = line.partition(",")
        return f'{head},"{bad[1]} "limited" edition"{tail[len(_q_if_needed(bad[1])) :]}'
    if kind == "negative_price":
        bad[6], bad[7] = "-12.50", bad[7] or "EUR"
    elif kind == "invalid_enum:status":
        bad[4] = "published"
    elif kind == "invalid_currency":
        bad[6] = bad[6] or "10.00"
        bad[7] = "EURO"
    elif kind == "invalid_slug":
        bad[2] = "summer sale!"
    elif kind == "missing_required:name":
        bad[1] = ""
    elif kind == "duplicate_sku":
        bad[0] = last_valid_sku  # the earlier occurrence wins, this one is rejected
    elif kind == "invalid_number:price":
        bad[6] = "12,5x"
        bad[7] = bad[7] or "EUR"
    else:  # pragma: no cover - a typo in INVALID_KINDS
        raise ValueError(kind)
    return encode(bad)


def generate(rows: int, out_dir: Path, seed: int = DEFAULT_SEED) -> dict:
    """Write the files into out_dir (replacing it) and return the manifest."""
    started = time.monotonic()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    factory = _RowFactory(seed)
    decide = random.Random(seed + 1).random  # categories and corruption: own stream

    base = FileStats(tmp / "base.csv")
    update = FileStats(tmp / "update.csv")
    subsets = {name: FileStats(tmp / name) for name, size in SUBSETS.items() if size < rows}
    subset_sizes = {name: SUBSETS[name] for name in subsets}
    # Subsets are imported into an empty catalog: every valid record there is "created".
    handles = {
        "base": open(base.path, "w", encoding="utf-8", newline=""),  # noqa: SIM115
        "update": open(update.path, "w", encoding="utf-8", newline=""),  # noqa: SIM115
    }
    for name, stats in subsets.items():
        handles[name] = open(stats.path, "w", encoding="utf-8", newline="")  # noqa: SIM115
    for handle in handles.values():
        handle.write(HEADER)
    base_buf: list[str] = []
    upd_buf: list[str] = []
    kind_index = 0
    line = 2  # physical line where the next update.csv record starts
    invalid_records: list[tuple[int, int, str]] = []
    last_valid_sku = ""
    next_new = rows  # new products are numbered after the base ones
    group_parent = ""
    try:
        for i in range(rows):
            # One product in five is a parent; the next two are its variants.
            slot = i % 5
            if slot == 0:
                group_parent = f"SKU-{i:08d}"
            parent = group_parent if slot in (1, 2) else ""
            row = factory.product(i, parent)
            base_line = encode(row)
            base_buf.append(base_line)

            roll = decide()
            if roll < 0.6:
                category, upd_row, upd_line = "unchanged", row, base_line
            elif roll < 0.9:
                category = "updated"
                upd_row = factory.change(row)
                upd_line = encode(upd_row)
            else:
                category = "created"
                upd_row = factory.product(next_new, "")
                next_new += 1
                upd_line = encode(upd_row)

            if decide() < INVALID_SHARE and last_valid_sku:
                kind = INVALID_KINDS[kind_index % len(INVALID_KINDS)]
                kind_index += 1
                upd_line = corrupt(kind, upd_row, last_valid_sku)
                category = "rejected"
                invalid_records.append((update.expected.rows, line, kind))
                position = update.expected.rows
                for stats in [update, *subsets.values()]:
                    if position < subset_sizes.get(stats.path.name, rows):
                        stats.invalid_kinds[kind] = stats.invalid_kinds.get(kind, 0) + 1
            else:
                last_valid_sku = upd_row[0]

            position = update.expected.rows  # records written to update.csv so far
            for name, stats in subsets.items():
                if position < subset_sizes[name]:
                    handles[name].write(upd_line)
                    stats.expected.rows += 1
                    if category == "rejected":
                        stats.expected.rejected += 1
                    else:
                        stats.expected.created += 1
            upd_buf.append(upd_line)
            line += upd_line.count("\n")
            update.expected.rows += 1
            setattr(update.expected, category, getattr(update.expected, category) + 1)
            base.expected.rows += 1
            base.expected.created += 1

            if len(base_buf) >= 20_000:
                handles["base"].writelines(base_buf)
                handles["update"].writelines(upd_buf)
                base_buf.clear()
                upd_buf.clear()
        handles["base"].writelines(base_buf)
        handles["update"].writelines(upd_buf)
    finally:
        for handle in handles.values():
            handle.close()

    files = {}
    for name, stats in [("base.csv", base), ("update.csv", update), *subsets.items()]:
        files[name] = {
            "rows": stats.expected.rows,
            "bytes": stats.path.stat().st_size,
            "expected": stats.expected.model_dump(),
            "invalid_kinds": dict(sorted(stats.invalid_kinds.items())),
        }
    manifest = {
        "gen_version": GEN_VERSION,
        "seed": seed,
        "rows": rows,
        "columns": COLUMNS,
        "files": files,
        "expected_catalog_after_update": rows + update.expected.created,
        "invalid_records": "invalid-records.csv",
        "generation_seconds": round(time.monotonic() - started, 2),
        "notes": (
            "update.csv merges into base.csv's catalog in upsert mode; subsets are "
            "imported into an empty catalog"
        ),
    }
    with open(tmp / "invalid-records.csv", "w", encoding="utf-8", newline="") as handle:
        handle.write("record,line,kind\n")
        handle.writelines(f"{r},{number},{kind}\n" for r, number, kind in invalid_records)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return manifest


def invalid_lines(directory: Path, records: int | None = None) -> dict[int, str]:
    """Physical line -> kind of the invalid records among the first ``records`` records
    of update.csv (the subsets are its prefixes, so their lines are the same)."""
    with open(directory / "invalid-records.csv", encoding="utf-8", newline="") as handle:
        next(handle)
        found = {}
        for text in handle:
            record, line, kind = text.rstrip("\n").split(",", 2)
            if records is None or int(record) < records:
                found[int(line)] = kind
        return found


def data_dir(rows: int, seed: int = DEFAULT_SEED) -> Path:
    """The cache directory for one size and seed (bench/out/ is git-ignored)."""
    root = Path(os.environ.get("BENCH_OUT", Path(__file__).resolve().parent / "out"))
    return root / "data" / f"rows{rows}-seed{seed}-v{GEN_VERSION}"


def ensure(rows: int, seed: int = DEFAULT_SEED, log=print) -> tuple[Path, dict]:
    """The generated files for (rows, seed): reused from the cache or generated now."""
    directory = data_dir(rows, seed)
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("gen_version") == GEN_VERSION and all(
            (directory / name).exists() for name in manifest["files"]
        ):
            log(f"input: reusing {directory}")
            return directory, manifest
    log(f"input: generating {rows:,} rows (seed {seed}) into {directory} ...")
    manifest = generate(rows, directory, seed)
    log(f"input: generated in {manifest['generation_seconds']} s")
    return directory, manifest


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    _, result = ensure(count)
    print(json.dumps(result["files"], indent=2))
