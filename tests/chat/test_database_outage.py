"""PostgreSQL's connections lost under a live server (a PostgreSQL restart, a
proxy dropping its connections): a post is refused with an error the client
may retry, on the same socket, and is then stored once."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets
from channels.db import database_sync_to_async
from django.db import connection
from rest_framework_simplejwt.tokens import AccessToken

from chat import asyncdb
from chat.client import ChatClient
from chat.models import Message, Room
from tests.concurrency import another_session
from tests.conftest import need_postgres
from tests.factories import make_member
from tests.servers import DaphneProcess
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server():
    need_postgres()
    server = DaphneProcess()
    server.start()
    yield server
    server.stop()
    server.log.close()


def _end_sessions(application_name: str) -> int:
    """End every PostgreSQL session of the server: its pooled connections die
    without it knowing, as they do when PostgreSQL restarts."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            [application_name],
        )
        return cursor.fetchone()[0]


async def _post(socket, room: str, body: str, client_id: str) -> dict:
    """Send a message; the server's answer to it: its copy, or an error."""
    frame = {"type": "message", "room": room, "body": body, "client_id": client_id}
    await socket.send(json.dumps(frame))
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if frame.get("client_id") == client_id or frame.get("ref") == client_id:
            return frame


async def test_a_post_on_a_lost_database_connection_is_refused_then_stored_once(server, user, room):
    await database_sync_to_async(make_member)(user, room)
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    url, headers = f"ws://{server.address}/ws/chat/", {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        await socket.send(json.dumps({"type": "join", "room": room.slug}))
        assert (await _post(socket, room.slug, "before", "c-0"))["type"] == "message"
        assert await database_sync_to_async(_end_sessions)(server.application_name) >= 1

        # Each dead connection fails one post and is replaced: the client
        # sends again, as it is told, until the message is stored.
        refusals = []
        for _ in range(30):
            answer = await _post(socket, room.slug, "during", "c-1")
            if answer["type"] == "message":
                break
            refusals.append(answer)
        assert answer["type"] == "message"
    assert refusals
    assert {(frame["type"], frame["code"]) for frame in refusals} == {("error", "unavailable")}
    assert all(frame["retry_after"] > 0 for frame in refusals)
    bodies = await database_sync_to_async(list)(Message.objects.values_list("body", flat=True))
    assert sorted(bodies) == ["before", "during"]


async def test_the_python_client_sends_a_refused_post_again_after_the_wait(server, user, room):
    await database_sync_to_async(make_member)(user, room)
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    client = ChatClient(f"ws://{server.address}/ws/chat/", token=token, rooms=[room.slug])
    runner = asyncio.create_task(client.run())
    try:
        await client.wait_joined()
        await client.wait_acked([await client.send(room.slug, "before")], timeout=10)
        assert await database_sync_to_async(_end_sessions)(server.application_name) >= 1
        during = [await client.send(room.slug, f"during {i}") for i in range(3)]
        await client.wait_acked(during, timeout=20)
    finally:
        await client.close()
        await asyncio.wait_for(runner, 5)
    assert {error["code"] for error in client.errors} == {"unavailable"}
    assert client.connections == 1  # on the same socket throughout
    bodies = await database_sync_to_async(list)(Message.objects.values_list("body", flat=True))
    assert sorted(bodies) == ["before", "during 0", "during 1", "during 2"]


def _get(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def test_requests_after_the_sessions_end_get_fresh_connections_from_the_pool(
    server, user, room
):
    """The pool checks a connection as it hands it out (CONN_HEALTH_CHECKS):
    a dead one is replaced, not given to a request that then fails."""
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    url = f"http://{server.address}/api/rooms/"
    assert await asyncio.to_thread(_get, url, token) == 200
    assert await database_sync_to_async(_end_sessions)(server.application_name) >= 1
    statuses = [await asyncio.to_thread(_get, url, token) for _ in range(5)]
    assert statuses == [200] * 5


async def test_a_post_held_up_by_a_lock_elsewhere_is_refused_then_stored_on_resend(
    user, room, monkeypatch
):
    """A long transaction elsewhere holds the room's row: the round's statement
    is cancelled after chat.asyncdb.STATEMENT_TIMEOUT and the post refused as
    `unavailable`, not left waiting; sent again once the lock is gone, it is
    stored."""
    need_postgres()
    monkeypatch.setattr(asyncdb, "STATEMENT_TIMEOUT", 0.3)
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as client:
        await client.join(room.slug)
        elsewhere = await asyncio.to_thread(another_session)
        with elsewhere:  # a transaction, committed when the block ends
            await asyncio.to_thread(
                elsewhere.execute,
                f"SELECT id FROM {Room._meta.db_table} WHERE id = %s FOR UPDATE",  # noqa: S608
                [room.id],
            )
            await client.post(room.slug, "held up", "c-1")
            refused = await client.receive_until("error")
        assert (refused["code"], refused["ref"]) == ("unavailable", "c-1")
        await client.post(room.slug, "held up", "c-1")
        assert (await client.receive_until("message"))["client_id"] == "c-1"
    bodies = await database_sync_to_async(list)(Message.objects.values_list("body", flat=True))
    assert bodies == ["held up"]
