"""What one message costs: one database statement, and one channel-layer publish
per room whatever the room's size (chat.fanout)."""

import asyncio

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import events, services
from chat.models import Message
from tests.conftest import need_postgres, need_redis
from tests.factories import make_member, make_user
from tests.rounds import record_loop_statements
from tests.spies import record_calls
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
    published = record_calls(monkeypatch, get_channel_layer(), "group_send_many")
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
        # One call, of one message to one group.
        assert [[group for group, _ in call] for call in published] == [
            [events.room_group(room.id)]
        ]


@pytest.mark.asyncio
async def test_posts_of_one_turn_are_stored_in_one_call_and_published_in_one(
    user, other_user, room, monkeypatch
):
    """Under load, a turn of the event loop brings many sockets' posts: they
    share one call that takes their send-rate tokens and stores them
    (chat.posting; one statement on PostgreSQL, tests/chat/test_ratelimit.py),
    and one publish call (chat.events)."""
    need_redis()
    published = record_calls(monkeypatch, get_channel_layer(), "group_send_many")
    stored = record_calls(monkeypatch, services, "amessage_insert_many")
    third = await database_sync_to_async(make_user)("carol")
    async with connect(user) as a, connect(other_user) as b, connect(third) as c:
        for client in (a, b, c):
            await client.join(room.slug)
        await events.apresence_flush(room.id)
        published.clear()
        await asyncio.gather(
            *(client.post(room.slug, f"from {i}") for i, client in enumerate((a, b, c)))
        )
        for client in (a, b, c):
            bodies = [(await client.receive_until("message"))["body"] for _ in range(3)]
            assert sorted(bodies) == ["from 0", "from 1", "from 2"]
    assert [[post["body"] for post in call] for call in stored] == [["from 0", "from 1", "from 2"]]
    assert [[event["seq"] for _, event in call] for call in published] == [[1, 2, 3]]


@pytest.mark.asyncio
async def test_a_turns_posts_are_one_statement_on_the_loops_own_connection(
    user, other_user, room, monkeypatch
):
    """On PostgreSQL the event loop runs the round's statement itself
    (chat.asyncdb): no hop to the database thread, and one statement for the
    posts of a turn, whichever sockets they came from."""
    need_postgres()
    statements = record_loop_statements(monkeypatch)
    async with connect(user) as a, connect(other_user) as b:
        for client in (a, b):
            await client.join(room.slug)
        await events.apresence_flush(room.id)
        in_thread = []
        each = services._message_insert_each
        monkeypatch.setattr(
            services, "_message_insert_each", lambda *args: in_thread.append(args) or each(*args)
        )
        await asyncio.gather(a.post(room.slug, "one"), b.post(room.slug, "two"))
        for client in (a, b):
            bodies = [(await client.receive_until("message"))["body"] for _ in range(2)]
            assert bodies == ["one", "two"]
    assert [params["body"] for params in statements] == [["one", "two"]]
    assert in_thread == []
    rows = Message.objects.filter(room=room).order_by("seq").values_list("seq", "body")
    assert [row async for row in rows] == [(1, "one"), (2, "two")]


@pytest.mark.asyncio
async def test_this_processs_sockets_do_not_wait_for_the_layer(
    channel_backend, user, other_user, room, monkeypatch
):
    """The layer takes a message to the other processes; this one's sockets
    have it at once, however slow the publish."""
    layer = get_channel_layer()
    name = "group_send_many" if hasattr(layer, "group_send_many") else "group_send"
    publish = getattr(layer, name)

    async def slow_publish(*args):
        await asyncio.sleep(2)
        await publish(*args)

    async with connect(user) as sender, connect(other_user) as reader:
        await sender.join(room.slug)
        await reader.join(room.slug)
        await events.apresence_flush(room.id)
        monkeypatch.setattr(layer, name, slow_publish)
        started = asyncio.get_running_loop().time()
        await sender.post(room.slug, "no waiting", "c-1")
        assert (await reader.receive_until("message"))["body"] == "no waiting"
        assert asyncio.get_running_loop().time() - started < 1
