"""Bearer tokens from an OpenID Connect identity provider (Dex, Keycloak, Auth0, ...).

Authentication here, authorization in Kubernetes: a token is verified in this process
against the keys the issuer publishes, its claims name a Kubernetes user and groups
(with prefixes), and every request is then decided by a SubjectAccessReview for them,
exactly as for a TokenReview'd caller. So people log in at the company's identity
provider and are granted imports with the same RoleBindings `kubectl` honours.

Which tokens: a bearer token that parses as a JWT whose (unverified) `iss` is the
configured issuer. Everything else (static tokens, ServiceAccount tokens, tokens of other
issuers) takes the mode's own path.

Verification: the signature with one of the issuer's keys (RS256 or ES256 only: never
`none`, never an HMAC secret), found by the token's `kid` in the JWKS at the `jwks_uri`
of `{issuer}/.well-known/openid-configuration`; then `iss`, `aud` (the configured
audience), `exp` (required) and `nbf`/`iat` (when present) with LEEWAY seconds for clock
skew. Discovery happens on the first OIDC token (the API starts while the issuer is
down) and is kept for the process's lifetime. The key set is fetched again after
JWKS_TTL seconds, and when a token names a `kid` not in it, at most once per
JWKS_REFRESH_INTERVAL (key rotation, without letting made-up `kid`s hammer the issuer).
While the issuer cannot be reached the keys fetched before stay in use; with none
fetched yet the answer is 503 (with Retry-After), not 401 (the token may be fine), and
the issuer is asked again at most every DISCOVERY_RETRY seconds. A token that failed
verification is remembered FAILURE_TTL seconds by its SHA-256 (401 without verifying
it again).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import anyio
import certifi
import httpx
import jwt
from kubernetes import client as k8s
from prometheus_client import Counter

from productimport.api.auth import (
    EMAIL_PATTERN,
    AccessReview,
    Authenticator,
    Principal,
    unauthenticated,
)
from productimport.api.errors import ApiError
from productimport.api.metrics import ApiMetrics
from productimport.api.settings import ApiSettings

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
LEEWAY = 30  # seconds
JWKS_TTL = 900.0
JWKS_REFRESH_INTERVAL = 60.0
# After a failed fetch, the issuer is not asked again for this long.
DISCOVERY_RETRY = 10.0
HTTP_TIMEOUT = 10.0
FAILURE_TTL = 10.0
FAILURE_CACHE = 4096
# Mapped names Kubernetes reserves for itself: never from an identity provider's claims.
RESERVED = "system:"
AUTHENTICATED_GROUP = "system:authenticated"


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, if it is a JWT at all (nothing is verified here)."""
    if token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


class Unavailable(Exception):
    """The issuer (discovery or key set) could not be reached and no keys are known."""


class _Rejected(Exception):
    """The token is well formed, but not acceptable (401)."""


class OidcAuth:
    """Verifies tokens of one issuer and maps them to a Principal.

    The key set is fetched with httpx on the event loop (never a thread held while the
    issuer is slow), by one request at a time. Not PyJWKClient: its refresh after an
    unknown `kid` is not limited once a fetch has failed, and it blocks a thread per
    waiting request meanwhile."""

    def __init__(self, settings: ApiSettings, metrics: ApiMetrics | None = None) -> None:
        assert settings.oidc_issuer_url and settings.oidc_audience
        self.issuer = settings.oidc_issuer_url
        self.audience = settings.oidc_audience
        self.username_claim = settings.oidc_username_claim
        self.username_prefix = settings.oidc_username_prefix
        self.groups_claim = settings.oidc_groups_claim
        self.groups_prefix = settings.oidc_groups_prefix
        # Only the given CA bundle when there is one, else the public roots (certifi, the
        # same everywhere the image runs).
        self._ssl = ssl.create_default_context(cafile=settings.oidc_ca_file or certifi.where())
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0  # the key set's last successful fetch
        self._attempted_at: float | None = None  # the last attempt, successful or not
        self._fetch_lock = anyio.Lock()
        self._failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
        registry = (metrics or ApiMetrics()).registry
        self._results = Counter(
            "productimport_api_oidc_tokens_total",
            "OpenID Connect tokens verified (not answered from the failure cache), by result.",
            ["result"],
            registry=registry,
        )
        self._fetches = Counter(
            "productimport_api_oidc_key_fetches_total",
            "Fetches of the OpenID Connect issuer's key set (discovery included), by result.",
            ["result"],
            registry=registry,
        )

    def handles(self, token: str) -> bool:
        return unverified_issuer(token) == self.issuer

    async def authenticate(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).hexdigest()
        failed = self._failed.get(key)
        if failed is not None and time.monotonic() - failed[0] < FAILURE_TTL:
            raise unauthenticated(failed[1])
        try:
            claims = await self._verify(token)
            principal = self._principal(claims)
        except jwt.PyJWTError as exc:
            raise self._reject(
                key, f"the bearer token is not valid for issuer {self.issuer}: {exc}"
            ) from None
        except _Rejected as exc:
            raise self._reject(key, str(exc)) from None
        except Unavailable as exc:
            self._results.labels("unavailable").inc()
            raise ApiError(
                503,
                f"the identity provider {self.issuer} cannot be reached to verify the token; "
                "retry later",
                code="identity_provider_unavailable",
                headers={"Retry-After": str(int(DISCOVERY_RETRY))},
            ) from exc
        self._results.labels("authenticated").inc()
        self._failed.pop(key, None)
        return principal

    def _reject(self, key: str, detail: str) -> ApiError:
        self._results.labels("rejected").inc()
        self._failed[key] = (time.monotonic(), detail)
        self._failed.move_to_end(key)
        while len(self._failed) > FAILURE_CACHE:
            self._failed.popitem(last=False)
        return unauthenticated(detail)

    async def _verify(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _Rejected(
                f"the bearer token's algorithm {alg!r} is not accepted "
                f"(only {', '.join(ALGORITHMS)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _Rejected("the bearer token names no signing key (kid)")
        signing_key = await self._signing_key(kid)
        # The key's own algorithm must be the token's (PyJWT checks it for a PyJWK).
        return jwt.decode(
            token,
            signing_key,
            algorithms=list(ALGORITHMS),
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
        )

    async def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._fetch_due(kid):
            async with self._fetch_lock:
                if self._fetch_due(kid):  # not done meanwhile by the request before
                    await self._fetch_keys()
        if self._keys is None:
            raise Unavailable("no key set")
        found = self._keys.get(kid)
        if found is None:
            raise _Rejected(
                f"the bearer token is signed with a key issuer {self.issuer} does not publish"
            )
        return found

    def _fetch_due(self, kid: str) -> bool:
        now = time.monotonic()
        since = None if self._attempted_at is None else now - self._attempted_at
        if self._keys is None or now - self._fetched_at > JWKS_TTL:
            return since is None or since >= DISCOVERY_RETRY
        if kid not in self._keys:
            # Key rotation: the issuer may publish a new key. At most once a minute, so
            # made-up kids cannot turn into requests to the issuer.
            return since is None or since >= JWKS_REFRESH_INTERVAL
        return False

    async def _fetch_keys(self) -> None:
        self._attempted_at = time.monotonic()
        try:
            async with httpx.AsyncClient(verify=self._ssl, timeout=HTTP_TIMEOUT) as client:
                if self._jwks_uri is None:
                    self._jwks_uri = await self._discover(client)
                response = await client.get(self._jwks_uri, headers={"Accept": "application/json"})
                response.raise_for_status()
                key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError, _Unusable) as exc:
            self._fetches.labels("failed").inc()
            # Keys fetched before stay in use until the issuer answers again; the next
            # attempt reads the discovery document again too.
            self._jwks_uri = None
            log.warning("fetching the keys of OIDC issuer %s failed: %s", self.issuer, exc)
            return
        self._keys = {
            k.key_id: k for k in key_set.keys if k.key_id and k.public_key_use in ("sig", None)
        }
        self._fetched_at = time.monotonic()
        self._fetches.labels("fetched").inc()
        log.info("OIDC issuer %s: %d signing keys", self.issuer, len(self._keys))

    async def _discover(self, client: httpx.AsyncClient) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        doc = response.json()
        issuer = doc.get("issuer") if isinstance(doc, dict) else None
        if issuer != self.issuer:
            # OpenID Connect Discovery 1.0, 4.3: the document must name this very issuer.
            raise _Unusable(f"{url} describes issuer {issuer!r}, not {self.issuer!r}")
        jwks_uri = doc.get("jwks_uri")
        scheme = urlsplit(jwks_uri).scheme if isinstance(jwks_uri, str) else None
        if scheme not in ("https", urlsplit(self.issuer).scheme):
            raise _Unusable(f"{url} has no usable jwks_uri ({jwks_uri!r})")
        log.info("OIDC issuer %s: keys at %s", self.issuer, jwks_uri)
        return jwks_uri

    def _principal(self, claims: dict[str, Any]) -> Principal:
        value = claims.get(self.username_claim)
        if not isinstance(value, str) or not value:
            raise _Rejected(f"the bearer token has no {self.username_claim!r} claim")
        if self.username_claim == "email" and claims.get("email_verified") is False:
            raise _Rejected("the bearer token's email is not verified")
        name = self.username_prefix + value
        if name.startswith(RESERVED):
            raise _Rejected(f"the user {name!r} is reserved to Kubernetes")
        groups: list[str] = []
        raw = claims.get(self.groups_claim) if self.groups_claim else None
        if isinstance(raw, str):
            raw = [raw]
        if raw is not None and not (isinstance(raw, list) and all(isinstance(g, str) for g in raw)):
            raise _Rejected(f"the bearer token's {self.groups_claim!r} claim is not a list")
        for group in raw or ():
            mapped = self.groups_prefix + group
            if group and not mapped.startswith(RESERVED) and mapped not in groups:
                groups.append(mapped)
        groups.append(AUTHENTICATED_GROUP)
        email = claims.get("email")
        verified = claims.get("email_verified") is True
        if not (verified and isinstance(email, str) and EMAIL_PATTERN.match(email)):
            email = None
        return Principal(name=name, groups=tuple(groups), email=email, issuer=self.issuer)


class _Unusable(Exception):
    """The issuer answered, but not with a usable discovery document."""


class WithOidc:
    """The mode's own authenticator, plus OIDC tokens: those are verified by OidcAuth and
    authorized by a SubjectAccessReview for the user and groups they map to."""

    def __init__(self, inner: Authenticator, oidc: OidcAuth, access: AccessReview) -> None:
        self._inner = inner
        self._oidc = oidc
        self._access = access

    async def authenticate(self, token: str) -> Principal:
        if self._oidc.handles(token):
            return await self._oidc.authenticate(token)
        return await self._inner.authenticate(token)

    async def authorize(self, principal: Principal, verb: str, namespace: str) -> None:
        if principal.issuer:
            await self._access.authorize(principal, verb, namespace)
        else:
            await self._inner.authorize(principal, verb, namespace)


def with_oidc(
    auth: Authenticator, settings: ApiSettings, kube: k8s.ApiClient, metrics: ApiMetrics
) -> Authenticator:
    """`auth`, taking OIDC tokens too when an issuer is configured."""
    if not settings.oidc_issuer_url:
        return auth
    return WithOidc(auth, OidcAuth(settings, metrics), AccessReview(kube))
