"""Passwords, access tokens and machine tokens.

* Passwords: Argon2id through pwdlib, as FastAPI's documentation recommends; a hash
  made with older parameters is upgraded at the next successful login.
* Access tokens: short-lived JWTs (HS256, PyJWT) naming the user (``sub``), issued
  at (``iat``) and expiring (``exp``). They carry no grants: grants are read from the
  database on every request, so a revoked grant or a disabled account takes effect
  at once, and a token issued before the account's ``sessions_valid_from`` is refused.
* Machine tokens: ``zt_<id>_<secret>``: 32 random bytes, shown once; only their
  SHA-256 is stored (a random 256-bit secret needs no slow hash).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

_HASHER = PasswordHash((Argon2Hasher(),))
#: Verified against when the account does not exist, so that a login for an unknown
#: user costs the same time as one for a known user (no account enumeration).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))

ALGORITHM = "HS256"
TOKEN_PREFIX = "zt_"  # noqa: S105 - a marker, not a secret
MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether ``password`` matches, and a new hash to store when the old one is outdated."""
    if stored is None:
        _HASHER.verify(password, _DUMMY_HASH)
        return False, None
    return _HASHER.verify_and_update(password, stored)


def password_problem(password: str, username: str) -> str | None:
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"must have at least {MIN_PASSWORD_LENGTH} characters"
    if password.casefold() == username.casefold():
        return "must not be the user name"
    return None


def generate_password() -> str:
    return secrets.token_urlsafe(12)


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    issued_at: datetime
    expires_at: datetime


class InvalidToken(Exception):
    """A bearer token that is malformed, tampered with, expired or unknown."""


def issue_access_token(
    secret: str, user_id: int, minutes: int, now: datetime | None = None
) -> tuple[str, datetime]:
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(minutes=minutes)
    token = jwt.encode(
        {"sub": str(user_id), "iat": int(issued.timestamp()), "exp": expires, "typ": "access"},
        secret,
        algorithm=ALGORITHM,
    )
    return token, expires


def decode_access_token(secret: str, token: str) -> AccessClaims:
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "iat", "exp"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("the access token has expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("the access token is not valid") from exc
    if claims.get("typ") != "access" or not str(claims["sub"]).isdigit():
        raise InvalidToken("the access token is not valid")
    return AccessClaims(
        int(claims["sub"]),
        datetime.fromtimestamp(int(claims["iat"]), UTC),
        datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def new_machine_token() -> tuple[str, str, bytes]:
    """(the token to show once, its display prefix, the digest to store)."""
    secret = secrets.token_urlsafe(32)
    token = f"{TOKEN_PREFIX}{secret}"
    return token, token[:10], machine_token_digest(token)


def machine_token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def is_machine_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)
