"""A small sku,name,price file, as the catalog tests write them."""

from __future__ import annotations

HEADER = "sku,name,price\n"


def rows(*items: tuple[str, str, str]) -> str:
    return HEADER + "".join(",".join(item) + "\n" for item in items)
