"""Who is calling, and may they do this in that namespace?

Two modes behind one interface:
- static: bearer tokens from a file or Secret, each bound to a list of namespaces
  (`*` = every namespace). For development and the local dev environment.
- kubernetes: the API asks the cluster. TokenReview says who the bearer is,
  SubjectAccessReview says whether they may `verb` productimports in the namespace, so
  REST callers and kubectl users share one permission model (RBAC). A token counts only
  when it was issued for the API's audience (`kubectl create token SA --audience
  productimport`): a token taken from some Pod, issued for the API server, does not.

In kubernetes mode every unknown token costs the API server a TokenReview, so: a token's
successful review is kept a few seconds, a failed one too (a client retrying with a
revoked token asks the API server once), and reviews of tokens not verified recently
draw from one process-wide token bucket; when it is empty the caller gets 429 with
Retry-After and the API server is not asked.

Either mode can also take tokens from an OpenID Connect issuer (api/oidc.py): those are
verified locally against the issuer's keys and authorized with a SubjectAccessReview.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import yaml
from kubernetes import client as k8s

from productimport.api.errors import ApiError
from productimport.api.metrics import ApiMetrics
from productimport.models.resource import GROUP, PLURAL

log = logging.getLogger(__name__)

WILDCARD = "*"


@dataclass(frozen=True)
class Principal:
    name: str
    # Static mode: the namespaces the token is bound to. Kubernetes mode: empty (every
    # check goes to SubjectAccessReview).
    namespaces: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)
    # Static mode: the token's address for mail about its imports (notify_email), if
    # configured. Kubernetes mode: none (a TokenReview carries no e-mail claim). OIDC:
    # the token's `email` when the issuer says it is verified.
    email: str | None = None
    # The OpenID Connect issuer that vouched for this caller (api/oidc.py); empty for
    # static and TokenReview'd callers. Such a caller is authorized by a
    # SubjectAccessReview in either mode.
    issuer: str = ""

    @property
    def home_namespace(self) -> str | None:
        """The namespace a route without one in its path acts in (the /pcm/ routes).

        A static token's first concrete namespace; a ServiceAccount's own namespace.
        """
        for ns in self.namespaces:
            if ns != WILDCARD:
                return ns
        prefix = "system:serviceaccount:"
        if self.name.startswith(prefix):
            return self.name[len(prefix) :].split(":", 1)[0]
        return None


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> Principal: ...

    async def authorize(self, principal: Principal, verb: str, namespace: str) -> None: ...


def _forbidden(principal: Principal, verb: str, namespace: str) -> ApiError:
    return ApiError(
        403,
        f"{principal.name!r} may not {verb} productimports in namespace {namespace!r}",
        code="forbidden",
    )


def unauthenticated(detail: str) -> ApiError:
    return ApiError(401, detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class StaticToken:
    name: str
    token: str
    namespaces: tuple[str, ...]
    email: str | None = None


# One plain address (stricter than the CRD's pattern for spec.notify.email, where it ends
# up): nothing a mail header would read as a list or a display name.
EMAIL_PATTERN = re.compile(r"^[^@\s,;<>()\[\]\\\"]+@[^@\s,;<>()\[\]\\\"]+$")


def parse_token_document(text: str) -> list[StaticToken]:
    """`{"tokens": [{"name", "token", "namespaces", "email"?}]}` as YAML or JSON."""
    doc = yaml.safe_load(text) or {}
    entries = doc.get("tokens", []) if isinstance(doc, dict) else doc
    tokens = []
    for i, entry in enumerate(entries):
        try:
            token = str(entry["token"])
            namespaces = tuple(str(n) for n in entry.get("namespaces", []))
            name = str(entry.get("name") or f"token-{i}")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"token entry {i} needs token and namespaces: {exc}") from exc
        if not token or not namespaces:
            raise ValueError(f"token entry {i} ({name}) has an empty token or no namespaces")
        email = entry.get("email")
        if email is not None and (
            not isinstance(email, str) or len(email) > 254 or not EMAIL_PATTERN.match(email)
        ):
            raise ValueError(f"token entry {i} ({name}): email {email!r} is not one address")
        tokens.append(StaticToken(name=name, token=token, namespaces=namespaces, email=email))
    return tokens


class StaticTokenAuth:
    def __init__(self, tokens: list[StaticToken]) -> None:
        if not tokens:
            raise ValueError("static auth mode needs at least one token")
        self._tokens = tokens

    @classmethod
    def from_sources(cls, tokens_file: str | None, inline: str | None) -> StaticTokenAuth:
        tokens: list[StaticToken] = []
        if tokens_file:
            tokens += parse_token_document(Path(tokens_file).read_text())
        if inline:
            tokens += parse_token_document(inline)
        return cls(tokens)

    async def authenticate(self, token: str) -> Principal:
        # Compare against every token in constant time: no timing oracle on the prefix.
        found: StaticToken | None = None
        for candidate in self._tokens:
            if hmac.compare_digest(candidate.token.encode(), token.encode()):
                found = candidate
        if found is None:
            raise unauthenticated("the bearer token is not valid")
        return Principal(name=found.name, namespaces=found.namespaces, email=found.email)

    async def authorize(self, principal: Principal, verb: str, namespace: str) -> None:
        if WILDCARD in principal.namespaces or namespace in principal.namespaces:
            return
        raise _forbidden(principal, verb, namespace)


class TokenBucket:
    """`rate` permits a second, at most `burst` saved up. Used from the event loop only
    (no lock: nothing awaits between reading and updating it)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._permits = float(burst)
        self._at = time.monotonic()

    def take(self) -> float:
        """0 when a permit was taken, else the seconds until one will be there."""
        now = time.monotonic()
        self._permits = min(float(self.burst), self._permits + (now - self._at) * self.rate)
        self._at = now
        if self._permits >= 1:
            self._permits -= 1
            return 0.0
        return (1 - self._permits) / self.rate


class KubernetesAuth:
    """TokenReview + SubjectAccessReview. The API's own ServiceAccount needs
    `create` on tokenreviews and subjectaccessreviews (system:auth-delegator).

    A token's review is kept for REVIEW_TTL seconds (at most REVIEW_CACHE entries), so a
    client's burst of calls costs the API server one review, not one per call. A failed
    review is kept FAILURE_TTL seconds (at most FAILURE_CACHE entries, by SHA-256 of the
    token, never the token). Tokens not in either cache are reviewed at most
    `review_rate` a second (burst `review_burst`); a token that passed before and is due
    for a fresh review skips that limit, so a spray of made-up tokens cannot lock out
    the clients already using the API."""

    REVIEW_TTL = 10.0
    REVIEW_CACHE = 4096
    FAILURE_TTL = 10.0
    FAILURE_CACHE = 4096

    def __init__(
        self,
        api_client: k8s.ApiClient,
        audiences: list[str],
        *,
        review_rate: float = 50.0,
        review_burst: int = 100,
        metrics: ApiMetrics | None = None,
    ) -> None:
        self._authn = k8s.AuthenticationV1Api(api_client)
        self._access = AccessReview(api_client)
        self._audiences = audiences
        self._reviewed: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._failed: OrderedDict[str, float] = OrderedDict()
        self._bucket = TokenBucket(review_rate, review_burst)
        self._metrics = metrics or ApiMetrics()

    async def authenticate(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._reviewed.get(key)
        if cached and now - cached[0] < self.REVIEW_TTL:
            return cached[1]
        failed_at = self._failed.get(key)
        if failed_at is not None and now - failed_at < self.FAILURE_TTL:
            raise self._invalid()
        if cached is None:
            self._limit_unknown()
        status = await self._review(token)
        if not status or not status.authenticated or not status.user:
            self._metrics.token_reviews.labels("rejected").inc()
            self._reviewed.pop(key, None)
            self._remember(self._failed, key, time.monotonic(), self.FAILURE_CACHE)
            raise self._invalid()
        self._metrics.token_reviews.labels("authenticated").inc()
        self._failed.pop(key, None)
        user = status.user
        principal = Principal(
            name=user.username or "",
            groups=tuple(user.groups or ()),
            uid=user.uid or "",
            extra={k: list(v) for k, v in (user.extra or {}).items()},
        )
        self._remember(self._reviewed, key, (time.monotonic(), principal), self.REVIEW_CACHE)
        return principal

    def _limit_unknown(self) -> None:
        wait = self._bucket.take()
        if wait:
            self._metrics.token_reviews_limited.inc()
            retry = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "too many requests with bearer tokens this API has not verified recently; "
                f"retry in {retry} s",
                code="too_many_requests",
                headers={"Retry-After": str(retry)},
            )

    async def _review(self, token: str) -> k8s.V1TokenReviewStatus | None:
        review = k8s.V1TokenReview(
            spec=k8s.V1TokenReviewSpec(token=token, audiences=self._audiences)
        )
        result = await anyio.to_thread.run_sync(self._authn.create_token_review, review)
        return result.status

    def _invalid(self) -> ApiError:
        return unauthenticated(
            "the bearer token is not valid for this API (a ServiceAccount token must "
            f"be issued for audience {', '.join(self._audiences)}: kubectl create "
            f"token SA --audience {self._audiences[0]})"
        )

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > limit:
            cache.popitem(last=False)

    async def authorize(self, principal: Principal, verb: str, namespace: str) -> None:
        await self._access.authorize(principal, verb, namespace)


class AccessReview:
    """May this user (with these groups) `verb` productimports in the namespace? One
    SubjectAccessReview per question, for TokenReview'd and OIDC callers alike."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._authz = k8s.AuthorizationV1Api(api_client)

    async def authorize(self, principal: Principal, verb: str, namespace: str) -> None:
        review = k8s.V1SubjectAccessReview(
            spec=k8s.V1SubjectAccessReviewSpec(
                user=principal.name,
                groups=list(principal.groups),
                uid=principal.uid or None,
                extra=principal.extra or None,
                resource_attributes=k8s.V1ResourceAttributes(
                    group=GROUP, resource=PLURAL, verb=verb, namespace=namespace
                ),
            )
        )
        result = await anyio.to_thread.run_sync(self._authz.create_subject_access_review, review)
        if not (result.status and result.status.allowed):
            log.info(
                "denied %s %s in %s: %s",
                principal.name,
                verb,
                namespace,
                json.dumps(getattr(result.status, "reason", None)),
            )
            raise _forbidden(principal, verb, namespace)
