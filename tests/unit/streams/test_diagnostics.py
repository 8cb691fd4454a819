import asyncio

from streams.diagnostics import await_chain


async def _inner(gate: asyncio.Event) -> None:
    await gate.wait()


async def _outer(gate: asyncio.Event) -> None:
    await _inner(gate)


async def test_the_chain_names_each_awaited_coroutine_down_to_the_future() -> None:
    gate = asyncio.Event()
    task = asyncio.create_task(_outer(gate))
    await asyncio.sleep(0)
    chain = await_chain(task)
    gate.set()
    await task
    names = [link.split(" ")[0] for link in chain]
    assert names == ["_outer", "_inner", "wait", "FutureIter"]
    assert "test_diagnostics.py:" in chain[0]


async def test_a_finished_task_has_an_empty_chain() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert await_chain(task) == []
