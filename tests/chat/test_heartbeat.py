"""Seats and presence entries expire (a dead process frees them); the living
process's heartbeat renews its sockets' own (chat.heartbeat)."""

import asyncio

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
