"""Where shared state lives: Redis clients per event loop (chat.sharedstate)."""

import asyncio

import pytest

from chat.sharedstate import client_script, loop_client
from chat.socketlimit import RedisSeats
from tests.conftest import need_redis
from tests.spies import record_calls

pytestmark = pytest.mark.asyncio


async def test_a_burst_of_releases_beyond_the_pool_waits_for_connections(settings):
    """A thousand sockets closing at once each release a seat: with every
    connection busy, a release waits for one instead of failing (the seat
    would then stay taken until it expired)."""
    need_redis()
    settings.REDIS_MAX_CONNECTIONS = 3
    seats = RedisSeats(settings.REDIS_URL, settings.REDIS_PREFIX)
    users = range(1, 41)
    assert all([await seats.take(user, f"socket-{user}") for user in users])

    await asyncio.gather(*(seats.release(user, f"socket-{user}") for user in users))

    client = loop_client(settings.REDIS_URL)
    assert client.connection_pool.max_connections == 3
    assert [await client.exists(seats._key(user)) for user in users] == [0] * len(users)


async def test_a_script_runs_again_after_redis_forgets_it(settings):
    """Redis restarted empty (or another server answers): the script is loaded again."""
    need_redis()
    client = loop_client(settings.REDIS_URL)
    script = client_script(client, "return ARGV[1] + KEYS[1]")
    assert await script(keys=[2], args=[40]) == 42
    await client.script_flush()
    assert await script(keys=[1], args=[41]) == 42
    assert client_script(client, "return ARGV[1] + KEYS[1]") is script


async def test_a_script_runs_in_a_pipeline(settings):
    need_redis()
    client = loop_client(settings.REDIS_URL)
    script = client_script(client, "return ARGV[1] * 2")
    await client.script_flush()
    async with client.pipeline(transaction=False) as pipe:
        await script(args=[1], client=pipe)
        await script(args=[2], client=pipe)
        assert await pipe.execute() == [2, 4]


async def test_seats_taken_at_once_go_in_one_script_call_and_keep_the_limit(settings, monkeypatch):
    """A reconnect storm: one round trip for the handshakes waiting, and the
    per-user limit holds inside it (a third tab at once is refused)."""
    need_redis()
    settings.MAX_SOCKETS_PER_USER = 2
    seats = RedisSeats(settings.REDIS_URL, settings.REDIS_PREFIX)
    calls = record_calls(monkeypatch, seats, "_take_many")
    wanted = [(1, "tab-a"), (1, "tab-b"), (1, "tab-c"), *((u, f"socket-{u}") for u in range(2, 21))]

    seated = await asyncio.gather(*(seats.take(user, channel) for user, channel in wanted))

    assert seated == [True, True, False] + [True] * 19
    assert calls == [wanted]
    # A seat already held is renewed, not refused; a released one is free again.
    assert await seats.take(1, "tab-a")
    await asyncio.gather(seats.release(1, "tab-a"), seats.release(1, "tab-b"))
    assert await seats.take(1, "tab-c")
