"""Calls that come together are served together (chat.batching)."""

import asyncio
import threading

import pytest

from chat.batching import Batch, database_call

pytestmark = pytest.mark.asyncio


class Doubler:
    """A serve function that records its rounds and can be held mid-round."""

    def __init__(self) -> None:
        self.rounds: list[list[int]] = []
        self.started = asyncio.Event()  # a round has started
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, keys: list[int]) -> dict[int, int]:
        self.rounds.append(sorted(keys))
        self.started.set()
        await self.release.wait()
        return {key: key * 2 for key in keys if key >= 0}


async def test_calls_at_once_are_served_in_one_round():
    serve = Doubler()
    batch = Batch(serve)
    assert await asyncio.gather(*(batch.get(key) for key in range(10))) == [
        key * 2 for key in range(10)
    ]
    assert serve.rounds == [list(range(10))]


async def test_a_lone_call_is_served_at_once():
    serve = Doubler()
    batch = Batch(serve)
    assert await batch.get(21) == 42
    assert await batch.get(4) == 8
    assert serve.rounds == [[21], [4]]


async def test_calls_during_a_round_wait_for_the_next_one():
    """A round starts after its calls came, so it sees what they saw."""
    serve = Doubler()
    serve.release.clear()
    batch = Batch(serve)
    first = asyncio.ensure_future(batch.get(1))
    await serve.started.wait()  # the first round has started, and is held
    assert serve.rounds == [[1]]
    later = [asyncio.ensure_future(batch.get(key)) for key in (2, 3, 2)]
    await asyncio.sleep(0)
    serve.release.set()
    assert await asyncio.gather(first, *later) == [2, 4, 6, 4]
    assert serve.rounds == [[1], [2, 3]]


async def test_a_key_not_served_gets_none():
    batch = Batch(Doubler())
    assert await batch.get(-1) is None


async def test_a_failed_round_fails_each_of_its_calls_and_the_next_round_runs():
    calls = 0

    async def flaky(keys):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("gone")
        return dict.fromkeys(keys, "ok")

    batch = Batch(flaky)
    results = await asyncio.gather(batch.get(1), batch.get(2), return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError, ConnectionError]
    assert await batch.get(3) == "ok"


async def test_a_caller_that_gives_up_does_not_stop_the_others():
    serve = Doubler()
    serve.release.clear()
    batch = Batch(serve)
    gone = asyncio.ensure_future(batch.get(1))
    stays = asyncio.ensure_future(batch.get(2))
    await asyncio.sleep(0)
    gone.cancel()
    serve.release.set()
    assert await stays == 4
    assert gone.cancelled()


async def test_database_call_runs_each_function_with_its_arguments_in_one_hop():
    threads = []

    def add(*, a: int, b: int) -> int:
        threads.append(threading.get_ident())
        return a + b

    def fail(*, reason: str) -> None:
        threads.append(threading.get_ident())
        raise LookupError(reason)

    results = await asyncio.gather(
        database_call(add, a=1, b=2),
        database_call(fail, reason="no such thing"),
        database_call(add, a=10, b=20),
        return_exceptions=True,
    )
    assert results[0] == 3
    assert results[2] == 30
    assert isinstance(results[1], LookupError)
    assert str(results[1]) == "no such thing"
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


async def test_a_submitted_call_is_served_with_the_turns_others_while_its_caller_goes_on():
    serve = Doubler()
    batch = Batch(serve)
    first = batch.submit(5)
    assert serve.rounds == []  # the round starts with the loop's next turn
    second = batch.submit(6)
    assert await first == 10
    assert await second == 12
    assert serve.rounds == [[5, 6]]
