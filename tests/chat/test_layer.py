"""The Redis channel layer as configured (chat.layers, settings.CHANNEL_LAYERS)."""

import asyncio

import pytest
from channels.layers import get_channel_layer

from tests.conftest import need_redis

pytestmark = pytest.mark.asyncio


async def test_a_quiet_receive_is_not_taken_for_a_lost_redis():
    """channels-redis waits 5 s per blocking pop; a read timeout of the Redis
    client as short (redis-py's default) made every quiet wait fail, and each
    failure woke every socket of the process to catch up from the database."""
    need_redis()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(7)  # more than one blocking pop
    await layer.send(channel, {"type": "hello"})
    done, _ = await asyncio.wait({receiving}, timeout=10)
    assert done, "nothing received"
    assert receiving.result() == {"type": "hello"}
