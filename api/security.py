"""The bearer-token dependency every route uses."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from productimport.api.auth import Principal, unauthenticated
from productimport.api.services import Services, services

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
