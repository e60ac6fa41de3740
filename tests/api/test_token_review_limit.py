"""Kubernetes auth mode against the real API server: a spray of made-up bearer tokens is
answered 429 once the TokenReview budget is spent, without asking the API server, while
a client whose token was verified keeps working."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from productimport.models.resource import GROUP, PLURAL

AUDIENCE = "productimport"
BURST = 4


@pytest.fixture
def service_account_token(cluster, fresh_tenant) -> str:
    """A ServiceAccount token for the API's audience, allowed to list imports in its
    namespace (RBAC, as a real tenant would be set up)."""
    ns = fresh_tenant
    cluster.kubectl("-n", ns, "create", "serviceaccount", "importer")
    cluster.kubectl(
        "-n", ns, "create", "role", "import-reader", "--verb=get,list",
        f"--resource={PLURAL}.{GROUP}",
    )  # fmt: skip
    cluster.kubectl(
        "-n", ns, "create", "rolebinding", "import-reader", "--role=import-reader",
        f"--serviceaccount={ns}:importer",
    )  # fmt: skip
    done = cluster.kubectl("-n", ns, "create", "token", "importer", "--audience", AUDIENCE)
    return done.stdout.strip()


def metric(api, name: str, labels: str = "") -> float:
    text = httpx.get(f"{api.url}/metrics").text
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_unknown_tokens_over_the_review_budget_get_429_and_reach_no_api_server(
    make_api, fresh_tenant, service_account_token
):
    # Practically no refill during the test: the burst is the whole budget.
    api = make_api(
        auth_mode="kubernetes",
        token_audiences=AUDIENCE,
        token_review_rate=0.001,
        token_review_burst=BURST,
    )
    url = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports"
    valid = {"Authorization": f"Bearer {service_account_token}"}

    r = httpx.get(url, headers=valid)  # one review, then cached
    assert r.status_code == 200, r.text

    bogus = [secrets.token_urlsafe(32) for _ in range(10)]
    answers = [httpx.get(url, headers={"Authorization": f"Bearer {t}"}) for t in bogus]
    statuses = [a.status_code for a in answers]
    assert statuses == [401] * (BURST - 1) + [429] * (len(bogus) - BURST + 1)
    limited = answers[-1]
    assert limited.json()["error"]["code"] == "too_many_requests"
    assert int(limited.headers["Retry-After"]) >= 1

    # The verified client is not locked out by the spray...
    assert httpx.get(url, headers=valid).status_code == 200
    # ...and a token that just failed is answered from memory: 401, no new review.
    again = httpx.get(url, headers={"Authorization": f"Bearer {bogus[0]}"})
    assert again.status_code == 401

    # The API server saw exactly the budget: one good review, BURST - 1 bad ones.
    reviews = "productimport_api_token_reviews_total"
    assert metric(api, reviews, '{result="authenticated"}') == 1
    assert metric(api, reviews, '{result="rejected"}') == BURST - 1
    assert metric(api, "productimport_api_token_reviews_limited_total") == 7


def test_a_token_for_another_audience_is_401_not_cached_as_valid(
    make_api, fresh_tenant, cluster, service_account_token
):
    api = make_api(auth_mode="kubernetes", token_audiences=AUDIENCE)
    url = f"{api.url}/api/v1/namespaces/{fresh_tenant}/catalogs/main/imports"
    other = cluster.kubectl("-n", fresh_tenant, "create", "token", "importer").stdout.strip()
    for _ in range(2):  # the second answer comes from the failure cache
        r = httpx.get(url, headers={"Authorization": f"Bearer {other}"})
        assert r.status_code == 401
    assert metric(api, "productimport_api_token_reviews_total", '{result="rejected"}') == 1
    r = httpx.get(url, headers={"Authorization": f"Bearer {service_account_token}"})
    assert r.status_code == 200
