"""The socket's limits: send rate, frame size, rooms per connection, sockets per account."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chat.models import Message
from chat.sharedstate import reset_shared_stores
from chatsite.asgi import application
from tests.factories import make_room
from tests.ws import bearer_headers, connect

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


@pytest.mark.parametrize(
    "body",
    ["x" * 2000, "\u20ac" * 400],  # the second: 400 characters, 1,200 bytes in UTF-8
)
async def test_oversized_frame_is_refused_and_the_socket_stays(user, room, settings, body):
    settings.MAX_FRAME_BYTES = 1000
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.post(room.slug, body, "big")
        refused = await alice.receive_type("error")
        await alice.post(room.slug, "small", "small")
        assert (await alice.receive_type("message"))["body"] == "small"
    assert refused["code"] == "frame_too_large"


async def test_a_frame_of_many_byte_characters_under_the_limit_is_taken(user, room, settings):
    settings.MAX_FRAME_BYTES = 1000
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.post(room.slug, "\u20ac" * 300, "euros")  # 900 bytes, the frame under 1,000
        sent = await alice.receive_type("message")
    assert sent["body"] == "\u20ac" * 300


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


async def test_sockets_per_account_are_limited_and_the_extra_one_is_told_why(
    channel_backend, user, other_user, settings
):
    settings.MAX_SOCKETS_PER_USER = 2
    reset_shared_stores()
    async with connect(user), connect(user) as tab2:
        third = WebsocketCommunicator(application, "/ws/chat/", headers=bearer_headers(user))
        connected, _ = await third.connect(timeout=3)
        assert connected  # accepted only to be told why
        refused = await third.receive_json_from(timeout=3)
        assert (refused["type"], refused["code"]) == ("error", "too_many_connections")
        assert await third.receive_output(timeout=3) == {"type": "websocket.close", "code": 4429}
        await third.send_json_to({"type": "join", "room": "general"})
        assert await third.receive_nothing(timeout=0.2)  # a refused socket serves nothing
        await third.disconnect()
        # Someone else is not counted against alice's seats...
        async with connect(other_user) as bob:
            await bob.send({"type": "typing", "room": "x", "typing": True})
            assert (await bob.receive_type("error"))["code"] == "not_joined"
        # ...and the sockets alice has work on.
        await tab2.send({"type": "typing", "room": "x", "typing": True})
        assert (await tab2.receive_type("error"))["code"] == "not_joined"
    # Closing sockets frees their seats.
    async with connect(user), connect(user):
        pass


async def test_a_socket_that_keeps_sending_refused_frames_is_closed(
    user, other_user, room, settings
):
    settings.SOCKET_ERROR_BURST = 5
    settings.SOCKET_ERROR_RATE = 0.1
    async with connect(other_user) as bob:
        await bob.join(room.slug)
        async with connect(user) as flooder:
            for _ in range(5):
                await flooder.send_text("not json")
                assert (await flooder.receive_type("error"))["code"] == "invalid_json"
            await flooder.send_text("not json")
            assert (await flooder.receive_type("error"))["code"] == "invalid_json"
            closing = await flooder.receive_type("error")
            assert closing["code"] == "too_many_errors"
            closed = await flooder.communicator.receive_output(timeout=3)
            assert closed == {"type": "websocket.close", "code": 4008}
            # Frames already on their way are dropped, not answered.
            await flooder.send({"type": "join", "room": room.slug})
            assert await flooder.communicator.receive_nothing(timeout=0.2)
        # Everyone else carries on.
        await bob.post(room.slug, "still here", "b-1")
        assert (await bob.receive_until("message"))["body"] == "still here"


async def test_a_users_two_sends_in_one_turn_each_take_a_token(
    channel_backend, settings, user, room
):
    """The sends of a turn of the event loop take their tokens in one call
    (chat.ratelimit); one user's two sockets still take two."""
    settings.SEND_RATE = 0.01  # nothing earned back during the test
    settings.SEND_BURST = 1.0
    reset_shared_stores()
    async with connect(user) as tab1, connect(user) as tab2:
        for tab in (tab1, tab2):
            await tab.join(room.slug)
        await asyncio.gather(tab1.post(room.slug, "one", "c-1"), tab2.post(room.slug, "two", "c-2"))
        heard = [await _frames_until_quiet(tab) for tab in (tab1, tab2)]
    assert await database_sync_to_async(Message.objects.count)() == 1
    # Both tabs hear the one stored; one of them is told the other was refused.
    assert [[f["type"] for f in frames].count("message") for frames in heard] == [1, 1]
    errors = [f for frames in heard for f in frames if f["type"] == "error"]
    assert [error["code"] for error in errors] == ["rate_limited"]


async def _frames_until_quiet(client) -> list[dict]:
    frames = []
    while not await client.communicator.receive_nothing(timeout=0.3):
        frames.append(await client.receive())
    return frames
