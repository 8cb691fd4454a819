"""A pooled connection comes back clean without the reset query: nothing a use left open
reaches the next one."""

from __future__ import annotations

import asyncio

import pytest

from streams.pool import open_pool
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration


def test_a_transaction_left_open_is_rolled_back_on_release(stack: RunningStack) -> None:
    async def scenario() -> tuple[bool, int | None]:
        pool = await open_pool(stack.settings.require_database(), min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                await conn.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
                # A use that dies mid-transaction (a cancelled request) leaves BEGIN behind.
                await conn.execute("BEGIN")
                await conn.execute("INSERT INTO pool_probe VALUES (1)")
            async with pool.acquire() as conn:
                in_transaction = conn.is_in_transaction()
                kept = await conn.fetchval("SELECT count(*) FROM pool_probe")
                await conn.execute("DROP TABLE pool_probe")
            return in_transaction, kept
        finally:
            await pool.close()

    in_transaction, kept = asyncio.run(scenario())
    assert not in_transaction
    assert kept == 0


def test_a_bad_statement_leaves_the_connection_usable(stack: RunningStack) -> None:
    async def scenario() -> int:
        pool = await open_pool(stack.settings.require_database(), min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn, conn.transaction():
                with pytest.raises(Exception, match="no_such_table"):
                    await conn.execute("SELECT * FROM no_such_table")
            return int(await pool.fetchval("SELECT 41 + 1"))
        finally:
            await pool.close()

    assert asyncio.run(scenario()) == 42
