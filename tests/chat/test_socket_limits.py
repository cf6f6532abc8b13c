"""The socket's limits: send rate, frame size, rooms per connection."""

import pytest
from channels.db import database_sync_to_async

from chat.models import Message
from chat.sharedstate import reset_shared_stores
from tests.factories import make_room
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def tight_send_rate(settings):
    # Slow refill (a token every 5 s), so that a slow machine does not earn a
    # token back in the middle of a test.
    settings.SEND_RATE = 0.2
    settings.SEND_BURST = 3.0
    reset_shared_stores()


async def test_sends_beyond_the_burst_are_rate_limited_with_a_retry_hint(
    channel_backend, tight_send_rate, user, room
):
    async with connect(user) as alice:
        await alice.join(room.slug)
        for i in range(3):
            await alice.post(room.slug, f"m{i}", f"c-{i}")
            await alice.receive_type("message")
        await alice.post(room.slug, "one too many", "c-3")
        refused = await alice.receive_type("error")
    assert (refused["code"], refused["ref"]) == ("rate_limited", "c-3")
    assert 0 < refused["retry_after"] <= 5.0
    assert await database_sync_to_async(Message.objects.count)() == 3


async def test_the_budget_is_per_user_across_sockets(
    channel_backend, tight_send_rate, user, other_user, room
):
    async with connect(user) as tab1, connect(user) as tab2, connect(other_user) as bob:
        for client in (tab1, tab2, bob):
            await client.join(room.slug)
        for i, tab in enumerate([tab1, tab2, tab1]):
            await tab.post(room.slug, f"m{i}", f"c-{i}")
            # One at a time: two sockets' sends may otherwise be served in
            # either order, and the refused one would not be "fourth".
            while (await tab.receive_until("message"))["client_id"] != f"c-{i}":
                pass
        await tab2.post(room.slug, "fourth", "c-3")
        assert (await tab2.receive_until("error"))["code"] == "rate_limited"
        # Someone else is not slowed down by alice's flood.
        await bob.post(room.slug, "bob speaks", "b-1")
        ack = await bob.receive_until("message")
        while ack["client_id"] != "b-1":
            ack = await bob.receive_until("message")
    assert ack["body"] == "bob speaks"
    stored = await database_sync_to_async(list)(Message.objects.values_list("body", flat=True))
    assert sorted(stored) == ["bob speaks", "m0", "m1", "m2"]


async def test_oversized_frame_is_refused_and_the_socket_stays(user, room, settings):
    settings.MAX_FRAME_BYTES = 1000
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.post(room.slug, "x" * 2000, "big")
        refused = await alice.receive_type("error")
        await alice.post(room.slug, "small", "small")
        assert (await alice.receive_type("message"))["body"] == "small"
    assert refused["code"] == "frame_too_large"


async def test_rooms_per_connection_are_limited(user, settings):
    settings.MAX_ROOMS_PER_SOCKET = 2
    rooms = [await database_sync_to_async(make_room)() for _ in range(3)]
    async with connect(user) as alice:
        await alice.join(rooms[0].slug)
        await alice.join(rooms[1].slug)
        await alice.send({"type": "join", "room": rooms[2].slug})
        refused = await alice.receive_type("error")
        await alice.send({"type": "leave", "room": rooms[0].slug})
        await alice.receive_type("left")
        joined = await alice.join(rooms[2].slug)
    assert (refused["code"], refused["ref"]) == ("too_many_rooms", rooms[2].slug)
    assert joined["room"] == rooms[2].slug
