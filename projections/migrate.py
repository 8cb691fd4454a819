"""Applies the SQL files in projections/migrations/ once each, in name order."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg

MIGRATIONS_DIRECTORY = Path(__file__).resolve().parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates this database.
_LOCK_KEY = 0x5354_4147_4543_4153

log = logging.getLogger(__name__)


async def migrate(
    database_url: str, directory: Path = MIGRATIONS_DIRECTORY, schema: str | None = None
) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied now.

    With `schema`, into that schema (created if missing): a replay's separate projections.
    """
    conn = await asyncpg.connect(
        database_url, server_settings={"search_path": schema} if schema else None
    )
    try:
        # Processes starting together wait here, so each migration runs exactly once.
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            if schema:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(schema)}")
            return await _apply_pending(conn, directory)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply_pending(conn: asyncpg.Connection, directory: Path) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row["name"] for row in await conn.fetch("SELECT name FROM schema_migrations")}
    applied: list[str] = []
    for name, sql in await asyncio.to_thread(_read_migrations, directory):
        if name in done:
            continue
        async with conn.transaction():
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


def _read_migrations(directory: Path) -> list[tuple[str, str]]:
    """(name, SQL) of every migration file, in the order they apply."""
    return [(path.stem, path.read_text()) for path in sorted(directory.glob("*.sql"))]


def quoted(identifier: str) -> str:
    """An SQL identifier, double-quoted."""
    return '"' + identifier.replace('"', '""') + '"'
