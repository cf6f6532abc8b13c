"""What one message costs: one database statement, and one channel-layer publish
per room whatever the room's size (chat.fanout)."""

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import events, services
from tests.conftest import need_redis
from tests.factories import make_member, make_user
from tests.ws import connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_storing_a_message_is_one_statement(user, room):
    make_member(user, room)
    with CaptureQueriesContext(connection) as queries:
        services.message_post(user=user, room=room, body="hello", broadcast=False)
    # Checked, numbered and inserted at once, in autocommit: no BEGIN, no COMMIT.
    assert len(queries) == 1, [q["sql"] for q in queries]


@pytest.mark.asyncio
async def test_a_message_to_a_room_of_five_is_one_publish_to_one_channel(
    user, room, settings, monkeypatch
):
    need_redis()
    layer = get_channel_layer()
    published = []
    group_send = layer.group_send

    async def counting_group_send(group, message):
        published.append(group)
        await group_send(group, message)

    monkeypatch.setattr(layer, "group_send", counting_group_send)
    others = [await database_sync_to_async(make_user)(f"member{i}") for i in range(4)]
    async with (
        connect(user) as sender,
        connect(others[0]) as a,
        connect(others[1]) as b,
        connect(others[2]) as c,
        connect(others[3]) as d,
    ):
        for client in (sender, a, b, c, d):
            await client.join(room.slug)
        # Every socket of this process is behind one subscription.
        prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
        async with aioredis.Redis.from_url(settings.REDIS_URL) as client:
            members = await client.zcard(f"{prefix}:group:{events.room_group(room.id)}")
        assert members == 1

        await events.apresence_flush(room.id)  # the joins' (else sent with the message)
        published.clear()
        await sender.post(room.slug, "to everyone", "c-1")
        assert (await sender.receive_until("message"))["client_id"] == "c-1"
        for member in (a, b, c, d):
            assert (await member.receive_until("message"))["body"] == "to everyone"
        assert published == [events.room_group(room.id)]
