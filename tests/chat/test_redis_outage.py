"""A Redis outage loses no message: sends are stored and acknowledged while
Redis is down, and open sockets get what they missed once it is back.

Runs against a private redis-server of its own, which the test stops and
starts again (empty, as the production Redis keeps nothing on disk).
"""

import shutil

import pytest
from channels.db import database_sync_to_async

from chat.models import Message
from chat.sharedstate import reset_shared_stores
from tests.api import api_client
from tests.conftest import REQUIRE_SERVICES
from tests.servers import PrivateRedis
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def private_redis(settings):
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is required")
        pytest.skip("needs redis-server")
    server = PrivateRedis()
    server.start()
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.ResilientRedisChannelLayer",
            "CONFIG": {"hosts": [server.url], "prefix": "outage:layer"},
        }
    }
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
        }
    }
    reset_shared_stores()
    yield server
    if server.process.poll() is None:
        server.stop()


async def test_messages_sent_during_an_outage_are_acked_stored_and_delivered_after(
    private_redis, user, other_user, room
):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")

        await database_sync_to_async(private_redis.stop)()
        await bob.post(room.slug, "while redis is down", "b-1")
        ack = await bob.receive_type("message")
        assert ack["body"] == "while redis is down"

        def api_send():
            return api_client(other_user).post(
                f"/api/rooms/{room.slug}/messages/", {"body": "via api, down"}, format="json"
            )

        assert (await database_sync_to_async(api_send)()).status_code == 201

        await database_sync_to_async(private_redis.start)()
        # The layer retries with backoff (up to 2 s between tries): give it time.
        missed = [await alice.receive_until("message", 15), await alice.receive_until("message")]
        assert [m["body"] for m in missed] == ["while redis is down", "via api, down"]

        # Live again: the sockets subscribed anew to the (empty) new Redis.
        await bob.post(room.slug, "back to normal", "b-2")
        assert (await alice.receive_until("message"))["body"] == "back to normal"
    assert await database_sync_to_async(Message.objects.count)() == 3
