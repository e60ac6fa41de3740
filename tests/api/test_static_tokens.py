"""Static tokens: parsed from a Secret-like document, bound to namespaces."""

from __future__ import annotations

import anyio
import pytest

from productimport.api.auth import StaticTokenAuth, parse_token_document
from productimport.api.errors import ApiError

DOC = """
tokens:
  - {name: dev, token: dev-token, namespaces: ["*"]}
  - {name: shop-a-app, token: a-token, namespaces: [shop-a, shop-a-staging]}
"""


def test_token_bound_to_its_namespaces() -> None:
    auth = StaticTokenAuth(parse_token_document(DOC))

    async def run() -> None:
        a = await auth.authenticate("a-token")
        assert a.name == "shop-a-app"
        assert a.home_namespace == "shop-a"
        await auth.authorize(a, "create", "shop-a-staging")
        with pytest.raises(ApiError) as err:
            await auth.authorize(a, "create", "shop-b")
        assert err.value.status == 403
        dev = await auth.authenticate("dev-token")
        await auth.authorize(dev, "create", "anything")
        assert dev.home_namespace is None
        with pytest.raises(ApiError) as err:
            await auth.authenticate("a-token ")
        assert err.value.status == 401

    anyio.run(run)


def test_entries_without_namespaces_are_refused() -> None:
    with pytest.raises(ValueError, match="no namespaces"):
        parse_token_document('{"tokens": [{"name": "x", "token": "t", "namespaces": []}]}')
    with pytest.raises(ValueError):
        StaticTokenAuth([])
