"""The dependencies that say who is calling and whether they may act.

`CurrentPrincipal` authenticates. A route that acts in a namespace takes an `Authorized`
from `authorized(verb, namespace_of)` instead, so the permission check is part of the
route's signature, not a call its body has to remember
(tests/api/test_route_authorization.py fails for a route without one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.utils import request_params_to_args
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from productimport.api.auth import Principal, unauthenticated
from productimport.api.services import Services, services
from productimport.api.settings import ApiSettings

# auto_error=False: a missing token must get our 401 envelope, not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="A bearer token (static or Kubernetes).")


async def authenticated(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise unauthenticated("this endpoint needs an Authorization: Bearer <token> header")
    principal = await svc.auth.authenticate(credentials.credentials)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticated)]
Svc = Annotated[Services, Depends(services)]


@dataclass(frozen=True)
class Authorized:
    """The caller, and the namespace this request was allowed to act in."""

    principal: Principal
    namespace: str


# How a route family finds the namespace a request acts in: from the route's validated
# parameters (a path's namespace or workspace), the caller (a token's home) or settings.
NamespaceOf = Callable[[Mapping[str, Any], Principal, ApiSettings], str]


class Authorize:
    """The dependency `authorized()` makes: authenticate (401), validate the route's
    parameters (422), find the namespace, and check the verb there (403)."""

    def __init__(self, verb: str, namespace_of: NamespaceOf) -> None:
        self.verb = verb
        self.namespace_of = namespace_of

    async def __call__(self, request: Request, principal: CurrentPrincipal, svc: Svc) -> Authorized:
        params = validated_route_params(request)
        namespace = self.namespace_of(params, principal, svc.settings)
        await svc.auth.authorize(principal, self.verb, namespace)
        return Authorized(principal=principal, namespace=namespace)

    def __repr__(self) -> str:
        return f"authorized({self.verb!r}, {self.namespace_of.__name__})"


def authorized(verb: str, namespace_of: NamespaceOf) -> Authorize:
    """A dependency allowing the request only if the caller may `verb` productimports
    in the namespace `namespace_of` names. Use it as
    `access: Annotated[Authorized, Depends(authorized("get", path_namespace))]`."""
    return Authorize(verb, namespace_of)


def validated_route_params(request: Request) -> dict[str, Any]:
    """The route's own path, query, header and cookie parameters, validated exactly as
    FastAPI validates them; RequestValidationError (422) when any is invalid.

    Why here: FastAPI runs dependencies before it validates the route's own parameters.
    Authorization used to sit in the route bodies, after validation, so a malformed
    request has always been 422 whoever sent it; checking first keeps it so (instead of
    403 for callers without access) and costs no SubjectAccessReview. The same errors
    FastAPI would collect (the routes have no body parameters), so the same 422 body.
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        # Fail closed: without the route's parameters there is nothing safe to check.
        raise RuntimeError(f"authorization needs a FastAPI route, not {route!r}")
    dependant = route.dependant
    values: dict[str, Any] = {}
    errors: list[Any] = []
    for fields, received in (
        (dependant.path_params, request.path_params),
        (dependant.query_params, request.query_params),
        (dependant.header_params, request.headers),
        (dependant.cookie_params, request.cookies),
    ):
        found, invalid = request_params_to_args(fields, received)
        values.update(found)
        errors += invalid
    if errors:
        raise RequestValidationError(errors)
    return values
