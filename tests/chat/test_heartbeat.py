"""Seats and presence entries expire (a dead process frees them); the living
process's heartbeat renews its sockets' own (chat.heartbeat)."""

import asyncio

import pytest
from channels.db import database_sync_to_async

from chat.heartbeat import get_heartbeat
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
