"""A store that ignores conditional writes is refused before anything relies on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from productimport.engine.catalog import Catalog
from productimport.engine.objectstore import LocalObjectStore
from productimport.engine.options import ImportOptions
from productimport.engine.runner import run_import
from productimport.engine.storecheck import StoreUnfit, check_conditional_writes


class IgnoresConditions(LocalObjectStore):
    """A store as some S3 look-alikes behave: the condition headers are dropped."""

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        self.put(key, data)
        return "etag-never-checked"


class IgnoresStaleEtags(LocalObjectStore):
    """Honours create-only, ignores If-Match."""

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        if etag is None:
            return super().put_if(key, data, None)
        self.put(key, data)
        return "etag-never-checked"


def test_a_store_that_honours_conditional_writes_passes_again_and_again(tmp_path: Path):
    store = LocalObjectStore(tmp_path)
    for _ in range(3):  # the same key, at every start
        check_conditional_writes(store, ".productimport/conditional-writes")


class Interleaved(LocalObjectStore):
    """Another import checks the same key between this one's read and its write (the
    loaders of one catalog all check `<catalog>/.conditional-writes` as they start)."""

    def __init__(self, root: Path, races: int) -> None:
        super().__init__(root)
        self.races = races

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        if self.races:
            self.races -= 1
            current = self.get_with_etag(key)
            other = f"the other import's {self.races}".encode()  # its own content
            super().put_if(key, other, current[1] if current else None)
        return super().put_if(key, data, etag)


@pytest.mark.parametrize("races", [1, 2, 3])
def test_imports_checking_the_same_key_at_once_all_pass(tmp_path: Path, races: int):
    """Losing a race to another checker is the store honouring the condition, not a
    failure (it failed concurrent imports into one catalog)."""
    check_conditional_writes(Interleaved(tmp_path, races), "main/.conditional-writes")


@pytest.mark.parametrize("kind", [IgnoresConditions, IgnoresStaleEtags])
def test_a_store_that_ignores_them_is_refused_with_the_reason(tmp_path: Path, kind):
    with pytest.raises(StoreUnfit, match=r"overwrite each other|stale ETag") as refused:
        check_conditional_writes(kind(tmp_path), ".productimport/conditional-writes")
    assert refused.value.reason == "StoreUnfit"


def test_the_loader_refuses_to_commit_to_such_a_store_and_commits_nothing(tmp_path: Path):
    store = IgnoresConditions(tmp_path / "store")
    source = tmp_path / "a.csv"
    source.write_text("sku,name,price\nA,Alpha,1\n")
    options = ImportOptions(source=str(source), catalog="main", store=str(store.root))
    result, code = run_import(options, store=store)
    assert (result.phase, result.reason, code) == ("Failed", "StoreUnfit", 65)
    assert Catalog(store, "default", "main").head().version == 0
