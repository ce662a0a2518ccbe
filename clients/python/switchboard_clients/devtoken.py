"""HS256 JWTs with the standard library, for local DCDock testing.

Real boards get their token from the DCDock REST API (``POST /api/auth/login``). For a local
server started with ``--dcdock-jwt-secret``, :func:`make_token` signs one directly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Optional, Union


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def encode_hs256(claims: dict[str, Any], secret: Union[str, bytes]) -> str:
    """``header.payload.signature`` for ``claims``, signed with HMAC-SHA256."""
    key = secret.encode() if isinstance(secret, str) else secret
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    sig = _b64url(hmac.new(key, signing_input, hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


def make_token(
    secret: Union[str, bytes],
    *,
    user_id: Any = None,
    sub: Optional[str] = None,
    email: Optional[str] = None,
    ttl: float = 3600,
    exp: Optional[int] = None,
    **claims: Any,
) -> str:
    """A DCDock access token: ``user_id`` (or ``sub``), ``email``, ``exp`` = now + ``ttl``."""
    body: dict[str, Any] = dict(claims)
    if user_id is not None:
        body["user_id"] = user_id
    if sub is not None:
        body["sub"] = sub
    if email is not None:
        body["email"] = email
    body["exp"] = exp if exp is not None else int(time.time() + ttl)
    return encode_hs256(body, secret)
