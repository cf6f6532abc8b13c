"""Seats and presence entries expire (a dead process frees them); the living
process's heartbeat renews its sockets' own (chat.heartbeat)."""

import asyncio
import time

import pytest
from channels.db import database_sync_to_async
from redis.asyncio.client import Pipeline

from chat import heartbeat, presence
from chat.heartbeat import get_heartbeat
from chat.presence import get_presence
from tests.conftest import need_redis
from tests.factories import make_member
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

TTL = 1  # seconds (Redis expires whole keys in seconds)


async def test_an_open_socket_keeps_its_seat_and_stays_online_past_the_ttl(
    channel_backend, settings, user, other_user, room
):
    settings.PRESENCE_TTL = TTL
    settings.MAX_SOCKETS_PER_USER = 1
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as alice:
        await alice.join(room.slug)
        await asyncio.sleep(3 * TTL)
        async with connect(other_user) as bob:
            assert (await bob.join(room.slug))["online"] == ["alice", "bob"]
        async with connect(user) as second_tab:
            refused = await second_tab.receive()
        assert refused["code"] == "too_many_connections"


async def test_a_socket_the_heartbeat_no_longer_renews_leaves_after_the_ttl(
    channel_backend, settings, user, other_user, room
):
    """What a process that died leaves behind: its entries expire."""
    settings.PRESENCE_TTL = TTL
    async with connect(user) as alice:
        await alice.join(room.slug)
        heartbeat = get_heartbeat()
        (socket,) = heartbeat.sockets
        heartbeat.discard(socket)  # as if its process had died
        await asyncio.sleep(2 * TTL)
        async with connect(other_user) as bob:
            assert (await bob.join(room.slug))["online"] == ["bob"]


async def test_a_beat_puts_back_no_entry_of_a_socket_that_left_during_it(
    settings, user, other_user, room, monkeypatch
):
    """A beat of many sockets takes many round trips; sockets that leave
    their room meanwhile must not be shown online again."""
    need_redis()
    monkeypatch.setattr(heartbeat, "BEAT_CHUNK", 1)
    monkeypatch.setattr(presence, "REFRESH_BATCH", 1)
    execute = Pipeline.execute
    left = []

    async def leave_after_the_first_renewal(pipe, *args, **kwargs):
        renewal = any(command[0][0] == "ZADD" for command in pipe.command_stack)
        result = await execute(pipe, *args, **kwargs)
        if renewal and not left:
            left.append(True)  # before the leaves: their own pipelines pass through
            for client in (alice, bob):
                await client.send({"type": "leave", "room": room.slug})
                await client.receive_type("left")
        return result

    async with connect(user) as alice, connect(other_user) as bob:
        for client in (alice, bob):
            await client.join(room.slug)
        monkeypatch.setattr(Pipeline, "execute", leave_after_the_first_renewal)
        await get_heartbeat().beat()
        monkeypatch.setattr(Pipeline, "execute", execute)
        assert left
        assert await get_presence().online(room.id) == []


def _socket_of(username: str):
    (socket,) = [s for s in get_heartbeat().sockets if s.username == username]
    return socket


async def _next_offline(client, timeout: float) -> dict:
    while True:
        frame = await client.receive_until("presence", timeout)
        if frame["offline"]:
            return frame


async def _entry_count(room_id: int) -> int:
    store = get_presence()
    if isinstance(store, presence.LocalPresence):
        return len(store.rooms.get(room_id, {}))
    return await store._client().zcard(store._key(room_id))


async def _frames_within(client, seconds: float) -> list[dict]:
    """Every frame the client gets in the next `seconds` (a receive that
    times out would cancel the consumer)."""
    frames, end = [], time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if not await client.communicator.receive_nothing(timeout=left):
            frames.append(await client.communicator.receive_json_from())
    return frames


async def test_the_room_hears_that_a_user_whose_process_died_went_offline(
    channel_backend, settings, user, other_user, room
):
    """A process that dies, or is stopped (its consumers are cancelled without
    `disconnect`), says nothing: a living process's beat sweeps its entries."""
    settings.PRESENCE_TTL = TTL
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        get_heartbeat().discard(_socket_of("alice"))  # as if its process had died
        frame = await _next_offline(bob, timeout=4 * TTL)
        assert frame["offline"] == ["alice"]
        assert await get_presence().online(room.id) == ["bob"]


async def test_a_user_with_a_live_socket_left_is_not_announced_offline(
    channel_backend, settings, user, other_user, room
):
    settings.PRESENCE_TTL = TTL
    async with connect(user) as first_tab, connect(user) as second_tab:
        await first_tab.join(room.slug)
        (dead,) = [socket for socket in get_heartbeat().sockets if socket.rooms]
        await second_tab.join(room.slug)
        get_heartbeat().discard(dead)
        async with connect(other_user) as bob:
            await bob.join(room.slug)
            heard = await _frames_within(bob, 3 * TTL)
            assert not [frame for frame in heard if "alice" in frame.get("offline", [])]
            assert await get_presence().online(room.id) == ["alice", "bob"]
            assert await _entry_count(room.id) == 2  # the dead tab's was swept


async def test_of_two_processes_sweeping_a_room_one_names_each_user(settings):
    need_redis()
    settings.PRESENCE_TTL = TTL
    first, second = (
        presence.RedisPresence(settings.REDIS_URL, settings.REDIS_PREFIX) for _ in "12"
    )
    await first.add(7, "alice", "a1")
    await first.add(7, "alice", "a2")
    await second.add(7, "bob", "b1")
    # bob's process lives on: alice's entries expire, and a sweep takes them
    # a beat (TTL / 3) later; the set itself lives.
    for _ in range(3):
        await asyncio.sleep(0.6 * TTL)
        assert await second.refresh_many([([7], "bob", "b1")]) == []
    sweeps = await asyncio.gather(first.sweep([7, 8]), second.sweep([7, 8]))
    assert sorted(sweeps, key=len) == [{}, {7: ["alice"]}]
    assert await first.online(7) == ["bob"]


async def test_a_user_swept_while_their_process_stalled_is_announced_back(
    channel_backend, settings, user, other_user, room
):
    """Another process swept the entries of a process that stalled past the
    TTL: the room heard the user went offline, so it must hear them come back."""
    settings.PRESENCE_TTL = 60  # no beat but the test's own
    async with connect(other_user) as bob, connect(user) as alice:
        await bob.join(room.slug)
        await alice.join(room.slug)
        assert (await bob.receive_type("presence"))["online"] == ["alice"]
        await get_presence().remove(room.id, "alice", _socket_of("alice").socket_id)
        await get_heartbeat().beat()
        assert (await bob.receive_type("presence"))["online"] == ["alice"]
        assert await get_presence().online(room.id) == ["alice", "bob"]


async def test_a_beat_puts_back_no_swept_entry_of_a_socket_that_left_meanwhile(
    settings, user, other_user, room, monkeypatch
):
    need_redis()
    settings.PRESENCE_TTL = 60
    execute = Pipeline.execute
    left = []

    async def swept_and_left_before_the_renewal(pipe, *args, **kwargs):
        renewal = any(command[0][0] == "ZADD" for command in pipe.command_stack)
        if renewal and not left:
            left.append(True)
            # The beat read the socket's rooms; then another process swept
            # its entry, and the socket left the room, before the renewal
            # reached Redis: it must not put the entry back.
            await get_presence().remove(room.id, "alice", _socket_of("alice").socket_id)
            await alice.send({"type": "leave", "room": room.slug})
            await alice.receive_type("left")
        return await execute(pipe, *args, **kwargs)

    async with connect(other_user) as bob, connect(user) as alice:
        await bob.join(room.slug)
        await alice.join(room.slug)
        heartbeat = get_heartbeat()
        heartbeat.discard(_socket_of("bob"))  # the beat renews alice's socket alone
        monkeypatch.setattr(Pipeline, "execute", swept_and_left_before_the_renewal)
        await heartbeat.beat()
        monkeypatch.setattr(Pipeline, "execute", execute)
        assert left
        assert await get_presence().online(room.id) == ["bob"]
        assert (await _next_offline(bob, timeout=2))["offline"] == ["alice"]
