"""Messages and typing over the socket."""

import asyncio

import channels.consumer
import channels.generic.websocket
import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import consumers
from chat.models import Message
from tests.factories import make_room
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_message_is_stored_and_reaches_everyone_including_sender(
    channel_backend, user, other_user, room
):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        await alice.post(room.slug, "hello bob", "c-1")
        to_alice = await alice.receive_type("message")
        to_bob = await bob.receive_type("message")
    stored = await database_sync_to_async(Message.objects.get)()
    assert to_alice == to_bob
    assert to_bob["id"] == stored.id
    assert to_bob["user"] == "alice"
    assert to_bob["body"] == stored.body == "hello bob"
    assert to_bob["client_id"] == "c-1"
    assert to_bob["room"] == room.slug


async def test_message_without_client_id_is_accepted(channel_backend, user, room):
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.send({"type": "message", "room": room.slug, "body": "no id"})
        echo = await alice.receive_type("message")
    assert echo["client_id"] is None


async def test_repeated_client_id_is_stored_once_and_answered_with_the_stored_message(
    channel_backend, user, other_user, room
):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        await alice.post(room.slug, "once", "c-dup")
        first = await alice.receive_type("message")
        await bob.receive_type("message")
        await alice.post(room.slug, "once (resent)", "c-dup")
        again = await alice.receive_type("message")
        # The room gets the stored copy again (clients drop it by id).
        to_bob = await bob.receive_type("message")
    assert again == first == to_bob
    assert await database_sync_to_async(Message.objects.count)() == 1


async def test_client_in_two_rooms_gets_each_rooms_messages_only(
    channel_backend, user, other_user, room
):
    other_room = await database_sync_to_async(make_room)("elsewhere")
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await alice.join(other_room.slug)
        await bob.join(other_room.slug)
        await alice.receive_type("presence")
        await alice.post(room.slug, "to lobby", "c-1")
        await alice.post(other_room.slug, "to elsewhere", "c-2")
        to_alice = [await alice.receive_type("message"), await alice.receive_type("message")]
        to_bob = await bob.receive_type("message")
        await bob.assert_silent()
    assert [(m["room"], m["body"]) for m in to_alice] == [
        (room.slug, "to lobby"),
        (other_room.slug, "to elsewhere"),
    ]
    assert (to_bob["room"], to_bob["body"]) == (other_room.slug, "to elsewhere")


async def test_typing_reaches_others_but_not_the_sender(channel_backend, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        await alice.send({"type": "typing", "room": room.slug, "typing": True})
        typing = await bob.receive()
        await alice.assert_silent()
    assert typing == {"type": "typing", "room": room.slug, "user": "alice", "typing": True}


async def test_a_flood_of_typing_frames_reaches_the_room_only_in_part(
    channel_backend, user, other_user, room
):
    """Each typing frame goes to every member: a socket's are limited (a
    burst, then one a second), the rest dropped quietly."""
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        for n in range(30):
            await alice.send({"type": "typing", "room": room.slug, "typing": n % 2 == 0})
        await alice.post(room.slug, "after the flood", "c-1")
        frames = []
        while (frame := await bob.receive())["type"] != "message":
            frames.append(frame)
        await alice.receive_type("message")
        await alice.assert_silent()  # no error frames: typing is a hint
    assert {frame["type"] for frame in frames} == {"typing"}
    assert consumers.TYPING_BURST <= len(frames) <= consumers.TYPING_BURST + 2


async def test_messages_arrive_in_id_order(channel_backend, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        for i in range(20):
            await alice.post(room.slug, f"m{i}", f"c-{i}")
        received = [await bob.receive_type("message") for _ in range(20)]
    assert [m["body"] for m in received] == [f"m{i}" for i in range(20)]
    ids = [m["id"] for m in received]
    assert ids == sorted(ids)


async def test_a_sender_whose_copy_comes_back_before_the_publish_returns_gets_it_once(
    channel_backend, monkeypatch, user, room
):
    """Redis can hand the fan-out the message before it answers the publish:
    the sender's copy, its acknowledgement, must not also come after ECHO_WAIT."""
    layer = get_channel_layer()
    publish = layer.group_send

    async def publish_then_answer_late(group, message):
        await publish(group, message)
        await asyncio.sleep(0.05)  # the copy is delivered meanwhile

    monkeypatch.setattr(consumers, "ECHO_WAIT", 0.2)
    async with connect(user) as alice:
        await alice.join(room.slug)
        monkeypatch.setattr(layer, "group_send", publish_then_answer_late)
        await alice.post(room.slug, "once", "c-once")
        echo = await alice.receive_type("message")
        await asyncio.sleep(0.3)  # past ECHO_WAIT
        await alice.assert_silent()
    assert (echo["client_id"], echo["body"]) == ("c-once", "once")


async def test_a_message_the_layer_lost_is_still_acknowledged_to_its_sender(
    channel_backend, monkeypatch, user, room
):
    """The layer took it and never brought it back (Redis restarted empty):
    the sender is acknowledged directly, a moment later."""
    layer = get_channel_layer()

    async def lose(group, message):
        return None

    async with connect(user) as alice:
        await alice.join(room.slug)
        monkeypatch.setattr(layer, "group_send", lose)
        await alice.post(room.slug, "into the void", "c-lost")
        echo = await alice.receive_type("message")
    assert (echo["client_id"], echo["body"]) == ("c-lost", "into the void")
    stored = await database_sync_to_async(Message.objects.get)()
    assert echo["id"] == stored.id


async def test_frames_events_and_disconnects_make_no_extra_thread_hop(
    monkeypatch, user, other_user, room
):
    """Channels hops to the database thread to close connections before every
    handler and after a disconnect; the database calls here close their own,
    and on a busy room those hops were most of the CPU."""
    hops = []

    async def counted():
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    monkeypatch.setattr(channels.generic.websocket, "aclose_old_connections", counted)
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.post(room.slug, "hello bob")
        await bob.receive_type("message")
        await alice.receive_type("message")
    assert hops == []
