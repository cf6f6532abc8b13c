"""A Redis outage loses no message: sends are stored and acknowledged while
Redis is down, and open sockets get what they missed once it is back.

Runs against a private redis-server of its own, which the test stops and
starts again (empty, as the production Redis keeps nothing on disk).
"""

import asyncio
import json

import pytest
import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import events
from chat.models import Message
from chat.sharedstate import reset_shared_stores
from tests.api import api_client
from tests.conftest import started_private_redis
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def private_redis(settings):
    server = started_private_redis()
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
        seen = {m["id"]: m["body"] for m in missed}
        # The failed broadcasts are also sent again once Redis is back: copies
        # the client drops by id, as the protocol says.
        while (message := await alice.receive_until("message"))["id"] in seen:
            assert seen[message["id"]] == message["body"]
        assert message["body"] == "back to normal"
    assert await database_sync_to_async(Message.objects.count)() == 3


async def test_a_message_the_layer_refused_goes_out_once_redis_takes_it(private_redis, room):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(events.room_group(room.id), channel)
    # Redis refuses the broadcast without restarting (so the subscription
    # stays, and no recovery catch-up will happen): the app's Redis user loses
    # its rights for a moment, as an administrator of this private Redis may.
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser("admin", enabled=True, passwords=["+admin"], commands=["+@all"], keys=["*"])
    admin = redis.Redis.from_url(private_redis.url, username="admin", password="admin")
    admin.acl_setuser("default", enabled=True, nopass=True, commands=["-@all"])
    frame = {"type": "message", "room": room.slug, "id": 42, "seq": 1, "body": "hello"}
    assert await events.aroom_broadcast(room.id, frame) is False

    admin.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"])

    async def next_room_event() -> dict:
        while True:
            event = await layer.receive(channel)
            if event["type"] != "layer.recovered":  # the receive may have been refused too
                return event

    # Not wait_for: it waits for the cancelled receive to end, and a receive
    # whose cancellation was swallowed (chat.redisconnection) would hang the
    # test instead of failing it.
    receiving = asyncio.ensure_future(next_room_event())
    done, _ = await asyncio.wait({receiving}, timeout=10)
    if not done:
        receiving.cancel()
        pytest.fail("the refused broadcast never went out")
    event = receiving.result()
    assert (event["type"], event["id"]) == (events.ROOM_EVENT, 42)
    assert json.loads(event["text"])["body"] == "hello"


async def test_a_redis_that_refuses_subscriptions_is_popped_from_instead(private_redis):
    """An ACL without SUBSCRIBE: subscribing again would fail again, each time
    sending every socket a catch-up. The process pops its channel instead."""
    admin = redis.Redis.from_url(private_redis.url)
    admin.acl_setuser(
        "default", enabled=True, nopass=True, commands=["+@all", "-subscribe"], keys=["*"]
    )
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for n in (1, 2):
        await layer.send(channel, {"type": "hello", "n": n})
        received = await asyncio.wait_for(layer.receive(channel), 10)
        assert received == {"type": "hello", "n": n}
    assert layer._push is False
