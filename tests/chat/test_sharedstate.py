"""Where shared state lives: Redis clients per event loop (chat.sharedstate)."""

import asyncio

import pytest

from chat.sharedstate import loop_client
from chat.socketlimit import RedisSeats
from tests.conftest import need_redis

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
