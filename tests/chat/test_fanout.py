"""Sockets reach the channel layer only through their process's fan-out (chat.fanout)."""

import asyncio
import threading

import pytest
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError

from chat import consumers, events, fanout, protocol, selectors
from chat.events import RESEND_FIRST
from chat.fanout import HOLD_SECONDS, get_fanout
from chat.models import Message
from tests.conftest import need_redis
from tests.factories import make_member, make_messages
from tests.ws import connect

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


async def redis_keys(settings, pattern: str) -> set[str]:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    async with aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True) as client:
        return set(await client.keys(f"{prefix}:{pattern}"))


async def group_size(settings, group: str) -> int:
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"]
    async with aioredis.Redis.from_url(settings.REDIS_URL) as client:
        return await client.zcard(f"{prefix}:group:{group}")


async def test_a_rooms_sockets_are_one_subscription_and_hold_no_channel(settings, user, room):
    need_redis()
    await database_sync_to_async(make_member)(user, room)
    layer = get_channel_layer()
    async with connect(user) as tab1, connect(user) as tab2:
        await tab1.join(room.slug)
        await tab2.join(room.slug)
        assert await group_size(settings, events.room_group(room.id)) == 1
        # The process's one channel waits on the layer (Redis pushes to
        # it), not one per socket.
        channel = get_fanout().channel
        assert list(layer._subscriptions) == [layer.prefix + layer.non_local_name(channel)]
        assert set(layer.receive_buffer) <= {get_fanout().channel}
    # The last socket gone, the process leaves the room's group.
    assert await group_size(settings, events.room_group(room.id)) == 0


async def test_a_socket_waiting_for_its_client_is_one_task(channel_backend, user, other_user):
    """No channel, one source: no task per socket besides the application's
    own (Channels' loop keeps a second one waiting for each client)."""
    async with connect(user):  # the process's own tasks (fan-out, heartbeat) start
        before = asyncio.all_tasks()
        async with connect(other_user):
            assert len(asyncio.all_tasks() - before) == 1


async def test_connecting_and_disconnecting_cost_no_subscription(settings, user, other_user):
    """Moderation's group is the process's, joined once: a reconnect storm
    makes no Redis round trip per socket for it."""
    need_redis()
    async with connect(user):
        subscribed = await redis_keys(settings, "group:*")
        assert await group_size(settings, events.USERS_GROUP) == 1
        async with connect(user), connect(other_user):
            assert await redis_keys(settings, "group:*") == subscribed
            assert await group_size(settings, events.USERS_GROUP) == 1
            assert len(get_fanout().users[user.pk]) == 2
            assert len(get_fanout().users[other_user.pk]) == 1
        assert len(get_fanout().users[user.pk]) == 1
    assert await redis_keys(settings, "group:*") == subscribed
    assert get_fanout().users == {}


async def test_a_closed_sockets_application_ends(channel_backend, user, room):
    """With a layer receive per socket, a swallowed cancellation (chat.redisconnection)
    kept the consumer of a closed socket waiting forever (seen under uvicorn,
    whose shutdown then waited for it)."""
    async with connect(user) as client:
        await client.join(room.slug)
        communicator = client.communicator
    # connect() disconnected it: the application has returned, not merely been cancelled.
    assert communicator.future.done()
    assert not communicator.future.cancelled()
    assert communicator.future.exception() is None


async def test_moderation_reaches_a_user_from_another_event_loop(user, room):
    """A ban from the admin (sync code, its own loop) reaches the socket through Redis."""
    need_redis()
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as client:
        await client.join(room.slug)
        sent = await asyncio.to_thread(
            events.user_removed_from_room, user.pk, room_slug=room.slug, reason="banned"
        )
        assert sent
        assert await client.receive() == {"type": "removed", "room": room.slug, "reason": "banned"}


async def receive_ids(client, count: int) -> list[int]:
    return [(await client.receive_type("message"))["id"] for _ in range(count)]


async def test_a_rooms_messages_go_out_in_seq_order_whatever_order_the_layer_brings_them(
    channel_backend, user, room
):
    """Broadcasts race (from one process or several); sockets see the room's order."""
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as client:
        await client.join(room.slug)
        messages = await database_sync_to_async(make_messages)(room, user, 4)
        frames = [protocol.message_frame(message) for message in messages]
        for frame in (frames[0], frames[2], frames[3], frames[1]):
            await events.aroom_broadcast(room.id, frame)
        assert await receive_ids(client, 4) == [message.id for message in messages]


async def test_a_rooms_first_live_message_waits_for_an_earlier_one_still_on_its_way(
    channel_backend, user, room
):
    """Another process's message, numbered first, may reach this process after
    this process's own next one: the order starts after the joined page's last."""
    await database_sync_to_async(make_member)(user, room)
    await database_sync_to_async(make_messages)(room, user, 3)  # in the joined page
    async with connect(user) as client:
        await client.join(room.slug)
        fourth, fifth = await database_sync_to_async(make_messages)(room, user, 2)
        await events.aroom_broadcast(room.id, protocol.message_frame(fifth))
        await events.aroom_broadcast(room.id, protocol.message_frame(fourth))
        assert await receive_ids(client, 2) == [fourth.id, fifth.id]


async def test_a_gap_that_does_not_fill_is_read_from_the_database_after_a_short_wait(
    channel_backend, user, room
):
    """The earlier message's copy is late (its process's loop is busy) or was
    lost with the layer: it goes out in its place, from the database, and its
    copy, should it come after all, does not go out again."""
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as client:
        await client.join(room.slug)
        first, late, third = await database_sync_to_async(make_messages)(room, user, 3)
        await events.aroom_broadcast(room.id, protocol.message_frame(first))
        assert await receive_ids(client, 1) == [first.id]
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        await events.aroom_broadcast(room.id, protocol.message_frame(third))
        assert await receive_ids(client, 2) == [late.id, third.id]
        assert loop.time() - sent_at >= HOLD_SECONDS
        await events.aroom_broadcast(room.id, protocol.message_frame(late))
        fourth = (await database_sync_to_async(make_messages)(room, user, 1))[0]
        await events.aroom_broadcast(room.id, protocol.message_frame(fourth))
        assert await receive_ids(client, 1) == [fourth.id]


async def test_a_gap_the_database_does_not_show_is_given_up_after_a_short_wait(
    channel_backend, user, room
):
    """A hidden message is not read into a gap: the later ones go out without
    it. A late copy that was not read from the database still goes out."""
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as client:
        await client.join(room.slug)
        first, hidden, third = await database_sync_to_async(make_messages)(room, user, 3)
        await database_sync_to_async(Message.objects.filter(id=hidden.id).update)(
            hidden_at=timezone.now()
        )
        await events.aroom_broadcast(room.id, protocol.message_frame(first))
        assert await receive_ids(client, 1) == [first.id]
        await events.aroom_broadcast(room.id, protocol.message_frame(third))
        assert await receive_ids(client, 1) == [third.id]
        await events.aroom_broadcast(room.id, protocol.message_frame(hidden))
        assert await receive_ids(client, 1) == [hidden.id]


def before_each_gap_read(monkeypatch, call) -> None:
    """`call(seqs)` in the database thread before the fan-out's real read of a gap."""
    read = selectors.message_numbered

    def read_after_call(**kwargs):
        call(kwargs["seqs"])
        return read(**kwargs)

    monkeypatch.setattr(selectors, "message_numbered", read_after_call)


async def numbered_frames(room, user, count: int) -> tuple[list[int], list[dict]]:
    """`count` stored messages of the room: their ids and their frames, in order."""
    messages = await database_sync_to_async(make_messages)(room, user, count)
    return [m.id for m in messages], [protocol.message_frame(m) for m in messages]


async def test_a_gap_that_opens_while_an_earlier_one_is_read_waits_for_its_own_message(
    channel_backend, user, room, monkeypatch
):
    """The database is being read for one gap when a second opens behind it:
    what waits behind the second still waits for it, and the room's order
    holds (the read's result used to let it out past the second gap)."""
    await database_sync_to_async(make_member)(user, room)
    reading, go = threading.Event(), threading.Event()

    def hold_up_the_read(seqs: list[int]) -> None:
        reading.set()
        go.wait(5)

    before_each_gap_read(monkeypatch, hold_up_the_read)
    async with connect(user) as client:
        await client.join(room.slug)
        ids, frames = await numbered_frames(room, user, 5)
        await events.aroom_broadcast(room.id, frames[0])
        await events.aroom_broadcast(room.id, frames[2])  # the second's copy is late
        assert await asyncio.to_thread(reading.wait, 5)  # its hold ran out
        await events.aroom_broadcast(room.id, frames[4])  # and the fourth's
        go.set()
        assert await receive_ids(client, 3) == ids[:3]
        await events.aroom_broadcast(room.id, frames[3])
        assert await receive_ids(client, 2) == ids[3:]


async def test_a_gap_waits_its_full_hold_whatever_waited_before_it(
    channel_backend, user, room, monkeypatch
):
    """A hold is timed from when its gap opened: an earlier gap's timer, still
    running after that gap filled, does not cut a later one short (the
    database used to be read for a copy a moment away)."""
    hold = 1.0  # long enough that the steps below stay in their windows on a busy machine
    monkeypatch.setattr(fanout, "HOLD_SECONDS", hold)
    await database_sync_to_async(make_member)(user, room)
    reads = []
    before_each_gap_read(monkeypatch, reads.append)
    async with connect(user) as client:
        await client.join(room.slug)
        ids, frames = await numbered_frames(room, user, 5)
        loop = asyncio.get_running_loop()
        await events.aroom_broadcast(room.id, frames[0])
        await events.aroom_broadcast(room.id, frames[2])  # a first gap: its hold starts
        first_gap = loop.time()
        await asyncio.sleep(hold / 2)
        await events.aroom_broadcast(room.id, frames[1])  # it fills
        assert await receive_ids(client, 3) == ids[:3]
        await events.aroom_broadcast(room.id, frames[4])  # a second gap, half a hold later
        await asyncio.sleep(first_gap + hold * 1.25 - loop.time())  # past the first's hold
        await events.aroom_broadcast(room.id, frames[3])  # within the second's
        assert await receive_ids(client, 2) == ids[3:]
        assert reads == []


async def test_a_message_reaches_this_processs_sockets_once_whatever_the_layer_brings_back(
    channel_backend, user, other_user, room
):
    """Delivered here, not through the layer: the Redis layer skips this
    process's channel, and what the in-memory one brings back is dropped."""
    await database_sync_to_async(make_member)(user, room)
    await database_sync_to_async(make_member)(other_user, room)
    async with connect(user) as sender, connect(other_user) as reader:
        await sender.join(room.slug)
        await reader.join(room.slug)
        await sender.post(room.slug, "once", "c-1")
        for client in (sender, reader):
            assert (await client.receive_until("message"))["client_id"] == "c-1"
        await sender.assert_silent()
        await reader.assert_silent()


async def test_this_processs_sockets_hear_its_message_while_the_layer_refuses_it(
    channel_backend, user, other_user, room, monkeypatch
):
    """Redis away: the other processes get the message when it is back (the
    resend), this process's sockets at once, and once (the resend skips them)."""
    await database_sync_to_async(make_member)(user, room)
    await database_sync_to_async(make_member)(other_user, room)
    layer = get_channel_layer()
    refused = []
    # The Redis layer publishes a turn's room events in one call.
    name = "group_send_many" if hasattr(layer, "group_send_many") else "group_send"
    publish = getattr(layer, name)

    async def refuse_the_message_once(*args):
        messages = args[0] if name == "group_send_many" else [args]
        if not refused and any("seq" in message for _, message in messages):
            refused.extend(message["id"] for _, message in messages if "seq" in message)
            raise RedisConnectionError("Redis is away")
        await publish(*args)

    monkeypatch.setattr(layer, name, refuse_the_message_once)
    async with connect(user) as sender, connect(other_user) as reader:
        await sender.join(room.slug)
        await reader.join(room.slug)
        await events.apresence_flush(room.id)
        await sender.post(room.slug, "heard here", "c-1")
        loop = asyncio.get_running_loop()
        posted_at = loop.time()
        for client in (sender, reader):
            assert (await client.receive_until("message"))["client_id"] == "c-1"
        assert loop.time() - posted_at < consumers.ECHO_WAIT  # not the fallback
        await asyncio.sleep(RESEND_FIRST * 2)  # the resend went out meanwhile
        await sender.assert_silent()
        await reader.assert_silent()
    assert len(refused) == 1


async def test_a_dead_processs_channel_leaves_the_rooms_group_and_a_live_one_stays(
    settings, user, room
):
    """A killed process never leaves its groups: broadcasts would be pushed to
    its channel for channels-redis's default of a day."""
    need_redis()
    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    settings.CHANNEL_LAYERS = {
        "default": {**settings.CHANNEL_LAYERS["default"], "CONFIG": {**config, "group_expiry": 2}}
    }
    await database_sync_to_async(make_member)(user, room)
    (message,) = await database_sync_to_async(make_messages)(room, user, 1)
    group = events.room_group(room.id)
    async with connect(user) as client:
        await client.join(room.slug)
        await get_channel_layer().group_add(group, "specific.dead!process")
        assert await group_size(settings, group) == 2
        await asyncio.sleep(3)
        await events.aroom_broadcast(room.id, protocol.message_frame(message))
        assert await receive_ids(client, 1) == [message.id]
        assert await group_size(settings, group) == 1
