"""The asyncpg pool of a process: its connections carry no session state from one use to the
next, so none is reset when one comes back."""

from __future__ import annotations

import asyncpg


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to undo: the pools' users set no session state (no SET, LISTEN, advisory lock or
    cursor outside a transaction). asyncpg still rolls back a transaction left open; this only
    spares the reset query its default sends on every release, a round trip per use."""


async def open_pool(
    database_url: str,
    *,
    min_size: int,
    max_size: int,
    application_name: str | None = None,
    command_timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool whose released connections go back without a reset round trip."""
    server_settings = {"application_name": application_name} if application_name else None
    return await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        server_settings=server_settings,
        reset=_keep_session,
    )
