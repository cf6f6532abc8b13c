"""Redis commands end when their task is cancelled (chat.redisconnection)."""

import asyncio

import pytest
from channels.layers import get_channel_layer
from redis import asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat.redisconnection import Connection
from chat.sharedstate import loop_client
from tests.conftest import need_redis

pytestmark = pytest.mark.asyncio

# Event-loop steps from a command's start to past its write's end: a
# cancellation lands on each in turn, the step after the write included.
STEPS = 12


async def cancellations_ignored(client: aioredis.Redis) -> list[int]:
    """The steps at which a cancelled PING went on as if it had not been."""
    ignored = []
    for steps in range(STEPS):
        task = asyncio.create_task(client.ping())
        for _ in range(steps):
            await asyncio.sleep(0)
        if not task.cancel():
            continue  # done already
        try:
            await task
        except asyncio.CancelledError:
            continue
        ignored.append(steps)
    return ignored


async def test_a_command_cancelled_at_any_step_is_cancelled(settings):
    """redis-py's own writes under asyncio.wait_for, which on Python 3.11
    swallows a cancellation that lands as the write ends: the fan-out's
    receive then never ended, and neither did its event loop."""
    need_redis()
    client = aioredis.Redis.from_url(
        settings.REDIS_URL, connection_class=Connection, socket_timeout=5
    )
    try:
        assert await cancellations_ignored(client) == []
    finally:
        await client.aclose()


async def test_a_write_past_its_timeout_fails_as_redis_timeout():
    """A server that takes nothing in (a Redis stalled behind a partition):
    the write times out as redis-py's does, and the connection is dropped."""

    async def silent(reader, writer):
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # No CLIENT SETINFO, no HELLO: nothing on connect waits for an answer.
    connection = Connection(
        host="127.0.0.1", port=port, socket_timeout=0.2, driver_info=None, protocol=2
    )
    try:
        await connection.connect()
        with pytest.raises(RedisTimeoutError, match="Timeout writing"):
            await connection.send_packed_command(b"x" * (64 << 20))  # past the socket buffers
        assert not connection.is_connected
        assert connection.socket_timeout == 0.2
    finally:
        server.close()


async def test_the_layer_and_shared_state_connect_with_it(settings):
    need_redis()
    layer = get_channel_layer()
    assert layer.connection(0).connection_pool.connection_class is Connection
    assert loop_client(settings.REDIS_URL).connection_pool.connection_class is Connection
