"""API keys: their format, and the `api_keys` table (migration 011) that holds them hashed.

A key reads `sck_<key_id>_<secret>`: `key_id` is 12 hex digits, its public name (`stagecast
keys list` shows it, logs may print it); the secret is 32 random bytes in base64url. The
table keeps the SHA-256 digest of the whole key, never the key (migration 011 says why a fast
digest is right for a random secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

SCOPES = ("submit", "read", "admin")
KEY_PREFIX = "sck_"
_KEY = re.compile(r"sck_([0-9a-f]{12})_([A-Za-z0-9_-]{43})", re.ASCII)
_COLUMNS = "key_id, tenant, scopes, rate_per_minute, created_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What a key may do, without its secret."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    rate_per_minute: int
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """Why a request's key was not accepted: an error code and a message for the 401."""

    code: str
    message: str


def new_key() -> tuple[str, str]:
    """A fresh (key_id, key)."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, None for anything else."""
    found = _KEY.fullmatch(key)
    return found.group(1) if found else None


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer_token(authorization: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (the scheme in any case)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_scopes(text: str) -> tuple[str, ...]:
    """`submit,read` as scopes in their canonical order; ValueError naming what is unknown."""
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(given) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not given:
        raise ValueError(f"name at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in given)


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        tenant=row["tenant"],
        scopes=tuple(row["scopes"]),
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create_key(
    conn: asyncpg.Connection, tenant: str, scopes: tuple[str, ...], rate_per_minute: int
) -> tuple[ApiKey, str]:
    """Store a new key for `tenant`; the key itself is returned once and stored nowhere."""
    key_id, key = new_key()
    row = await conn.fetchrow(
        "INSERT INTO api_keys (key_id, key_sha256, tenant, scopes, rate_per_minute) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}",
        key_id,
        key_digest(key),
        tenant,
        list(scopes),
        rate_per_minute,
    )
    assert row is not None
    return _api_key(row), key


async def list_keys(conn: asyncpg.Connection) -> list[ApiKey]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id")
    return [_api_key(row) for row in rows]


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> ApiKey | None:
    """Revoke a key (a second revoke keeps the first time); None when there is no such key."""
    row = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE key_id = $1 "
        f"RETURNING {_COLUMNS}",
        key_id,
    )
    return None if row is None else _api_key(row)


async def authenticate(pool: asyncpg.Pool, authorization: str | None) -> ApiKey | KeyRefusal:
    """The key an Authorization header carries, or why it is refused."""
    if authorization is None:
        return KeyRefusal("API_KEY_MISSING", "send an API key: Authorization: Bearer <key>")
    token = bearer_token(authorization)
    if token is None:
        return KeyRefusal("API_KEY_MISSING", "the Authorization header is not 'Bearer <key>'")
    key_id = key_id_of(token)
    unknown = KeyRefusal("API_KEY_INVALID", "this API key is not known")
    if key_id is None:
        return unknown
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, key_sha256 FROM api_keys WHERE key_id = $1", key_id
    )
    if row is None or not hmac.compare_digest(row["key_sha256"], key_digest(token)):
        return unknown
    if row["revoked_at"] is not None:
        return KeyRefusal("API_KEY_REVOKED", f"API key {key_id} has been revoked")
    return _api_key(row)
