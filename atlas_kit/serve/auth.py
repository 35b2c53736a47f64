"""Admin authentication: a bearer token from the environment or a file, compared in constant time.

The token comes from ``$ATLAS_KIT_ADMIN_TOKEN`` or, when given, a file the operator names on the
command line (never from a folder the server reads data from). With no token configured the admin
endpoints are off (403). A request without ``Authorization: Bearer ...`` gets 401, a wrong token 403.
"""
from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

__all__ = ["TOKEN_ENV", "AdminAuth", "load_admin_token"]

TOKEN_ENV = "ATLAS_KIT_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16


def load_admin_token(token_file: str | os.PathLike | None = None) -> str | None:
    """The admin token from ``token_file`` (first line) or ``$ATLAS_KIT_ADMIN_TOKEN``; None if neither."""
    if token_file is not None:
        path = Path(token_file)
        if not path.is_file():
            raise FileNotFoundError(f"admin token file {path} does not exist")
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"admin token file {path} is empty")
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the admin token must have at least {MIN_TOKEN_CHARS} characters")
    return token


class AdminAuth:
    """FastAPI dependency guarding the admin endpoints."""

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None
        self._bearer = HTTPBearer(auto_error=False, description=f"the admin token (${TOKEN_ENV})")

    @property
    def enabled(self) -> bool:
        return self._token is not None

    async def __call__(self, request: Request) -> None:
        credentials: HTTPAuthorizationCredentials | None = await self._bearer(request)
        if credentials is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "admin endpoint: send Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        if self._token is None:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"admin endpoints are disabled: start the server with ${TOKEN_ENV} set")
        if not hmac.compare_digest(credentials.credentials.encode("utf-8"), self._token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "admin endpoint: wrong token")
