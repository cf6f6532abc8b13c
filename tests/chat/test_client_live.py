"""The Python chat client (chat.client) against a real server: what it gets
back after a reconnect, and the send rate."""

import asyncio

import pytest
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from chat import services
from chat.client import ChatClient
from chat.models import Message
from tests.factories import make_member
from tests.servers import daphne

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def address(transactional_db):
    """A Daphne of the test's own."""
    with daphne() as served:
        yield served


@pytest.fixture
def strict_address(transactional_db):
    """A Daphne whose send rate is 2 at once, then 4 a second."""
    with daphne(SEND_BURST="2", SEND_RATE="4") as served:
        yield served


def _token(user) -> str:
    return str(AccessToken.for_user(user))


async def _running(client: ChatClient) -> asyncio.Task:
    runner = asyncio.create_task(client.run())
    await client.wait_joined()
    return runner


async def _stop(client: ChatClient, runner: asyncio.Task) -> None:
    await client.close()
    await asyncio.wait_for(runner, 5)


def _post_unheard(user, room, count: int) -> None:
    """Stored and not broadcast: a client hears of them only from the database."""
    make_member(user, room)
    for n in range(count):
        services.message_post(user=user, room=room, body=f"m{n}", broadcast=False)


async def test_a_client_that_joined_an_empty_room_gets_everything_after_a_reconnect(
    address, user, other_user, room
):
    token = await database_sync_to_async(_token)(user)
    all_there = asyncio.Event()

    def on_message(message: dict) -> None:
        if message["body"] == "m79":
            all_there.set()

    client = ChatClient(
        f"ws://{address}/ws/chat/", token=token, rooms=[room.slug], on_message=on_message
    )
    runner = await _running(client)
    try:
        await database_sync_to_async(_post_unheard)(other_user, room, 80)
        await client.disconnect()
        await asyncio.wait_for(all_there.wait(), 15)
    finally:
        await _stop(client, runner)
    assert [message["body"] for message in client.messages[room.slug]] == [
        f"m{n}" for n in range(80)
    ]


async def test_messages_refused_by_the_send_rate_are_sent_again_until_stored(
    strict_address, user, room
):
    await database_sync_to_async(make_member)(user, room)
    token = await database_sync_to_async(_token)(user)
    client = ChatClient(f"ws://{strict_address}/ws/chat/", token=token, rooms=[room.slug])
    runner = await _running(client)
    try:
        sent = [await client.send(room.slug, f"quick {n}") for n in range(6)]
        await client.wait_acked(sent, timeout=15)
    finally:
        await _stop(client, runner)
    assert "rate_limited" in {error["code"] for error in client.errors}
    stored = await database_sync_to_async(list)(Message.objects.values_list("body", flat=True))
    assert sorted(stored) == [f"quick {n}" for n in range(6)]
