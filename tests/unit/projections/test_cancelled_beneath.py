import asyncio

import pytest

from projections import service, session
from projections.session import GenerationChanged, cancelled_beneath, resume_sessions


async def _await_then_ask(future: asyncio.Future[None]) -> bool:
    try:
        await future
    except asyncio.CancelledError:
        return cancelled_beneath()
    raise AssertionError("the future was not cancelled")


async def test_a_future_cancelled_by_its_owner_is_cancelled_beneath_the_task() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_await_then_ask(future))
    await asyncio.sleep(0)
    future.cancel()  # as a client library does with its waiters when a connection drops
    assert await task is True


async def test_a_task_asked_to_stop_is_not_cancelled_beneath() -> None:
    seen: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(cancelled_beneath())
            raise

    task = asyncio.create_task(waits())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False]


async def test_a_companion_cancelled_beneath_starts_again_instead_of_vanishing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "_COMPANION_RESTART_S", 0.0)
    stop = asyncio.Event()
    runs = 0

    async def run(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.cancel)
            await future
        stop.set()

    async with asyncio.TaskGroup() as tasks:
        companion = tasks.create_task(service.companion("test", run, stop))
    assert runs == 2
    assert not companion.cancelled()


async def test_a_companion_asked_to_stop_is_cancelled() -> None:
    stop = asyncio.Event()

    async def run(stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(service.companion("test", run, stop))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_session_cancelled_beneath_resumes_instead_of_vanishing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "_RECONNECT_DELAY_S", 0.0)
    stop = asyncio.Event()
    runs = 0

    async def one_session(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(future.cancel)
            await future
        stop.set()

    reader = asyncio.create_task(resume_sessions("test", one_session, stop))
    await reader
    assert runs == 2
    assert not reader.cancelled()


async def test_a_session_that_lost_a_server_or_its_generation_starts_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session, "_RECONNECT_DELAY_S", 0.0)
    stop = asyncio.Event()
    endings: list[Exception] = [
        GenerationChanged("a new log"),
        ConnectionRefusedError("the database is away"),
    ]

    async def one_session(stop: asyncio.Event) -> None:
        if endings:
            raise endings.pop(0)
        stop.set()

    await resume_sessions("test", one_session, stop)
    assert endings == []


async def test_a_session_that_fails_on_a_bug_ends_the_reader() -> None:
    async def one_session(stop: asyncio.Event) -> None:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        await resume_sessions("test", one_session, asyncio.Event())


async def test_a_reader_asked_to_stop_is_cancelled() -> None:
    async def one_session(stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    task = asyncio.create_task(resume_sessions("test", one_session, asyncio.Event()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
