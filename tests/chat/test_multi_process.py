"""Two server processes sharing Redis and PostgreSQL act as one chat server.

Each test runs on Daphne and on uvicorn (deploy/uvicorn_serve.py): the same
application, the same protocol, over real sockets."""

import asyncio
import json
import time

import pytest
import websockets
from channels.db import database_sync_to_async
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken

from chat.models import Membership
from tests.conftest import need_postgres, need_redis
from tests.factories import make_user
from tests.servers import SERVERS, serve
from tests.ws import receive_frame

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=sorted(SERVERS))
def two_servers(request, transactional_db):
    need_redis()
    need_postgres()
    with serve(request.param) as first, serve(request.param) as second:
        yield first, second


async def _open(server: str, user):
    headers = {"Authorization": f"Bearer {AccessToken.for_user(user)}"}
    return await websockets.connect(f"ws://{server}/ws/chat/", additional_headers=headers)


@pytest.mark.asyncio
async def test_clients_on_two_processes_share_messages_presence_and_typing(
    two_servers, user, other_user, room
):
    server_a, server_b = two_servers
    alice = await _open(server_a, user)
    bob = await _open(server_b, other_user)
    try:
        await alice.send(json.dumps({"type": "join", "room": room.slug}))
        await receive_frame(alice, "joined")
        await bob.send(json.dumps({"type": "join", "room": room.slug}))
        joined = await receive_frame(bob, "joined")
        assert joined["online"] == ["alice", "bob"]
        assert (await receive_frame(alice, "presence"))["online"] == ["bob"]

        await alice.send(json.dumps({"type": "message", "room": room.slug, "body": "hi from A"}))
        to_bob = await receive_frame(bob, "message")
        to_alice = await receive_frame(alice, "message")
        assert to_bob == to_alice
        assert to_bob["body"] == "hi from A"

        await bob.send(json.dumps({"type": "typing", "room": room.slug, "typing": True}))
        typing = await receive_frame(alice, "typing")
        assert (typing["user"], typing["typing"]) == ("bob", True)

        await bob.close()
        offline = await receive_frame(alice, "presence")
        assert (offline["online"], offline["offline"]) == ([], ["bob"])
    finally:
        await alice.close()
        await bob.close()
    assert await database_sync_to_async(room.messages.count)() == 1


def _admin_client() -> Client:
    client = Client()
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


def _admin_action(client: Client, model_path: str, action: str, ids: list[int]) -> int:
    return client.post(model_path, {"action": action, "_selected_action": ids}).status_code


@pytest.mark.asyncio
async def test_ban_and_deactivation_reach_sockets_on_every_process(two_servers, user, room):
    server_a, server_b = two_servers
    tabs = [await _open(server_a, user), await _open(server_b, user)]
    try:
        for tab in tabs:
            await tab.send(json.dumps({"type": "join", "room": room.slug}))
            await receive_frame(tab, "joined")
        membership = await database_sync_to_async(Membership.objects.get)(user=user, room=room)
        admin = await database_sync_to_async(_admin_client)()
        banned = await database_sync_to_async(_admin_action)(
            admin, "/admin/chat/membership/", "ban", [membership.id]
        )
        assert banned == 302
        for tab in tabs:
            assert (await receive_frame(tab, "removed"))["room"] == room.slug

        deactivated = await database_sync_to_async(_admin_action)(
            admin, "/admin/auth/user/", "deactivate", [user.id]
        )
        assert deactivated == 302
        for tab in tabs:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(tab.recv(), timeout=1)
            assert closed.value.rcvd.code == 4403
    finally:
        for tab in tabs:
            await tab.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", sorted(SERVERS))
async def test_a_server_stops_promptly_with_sockets_in_rooms(kind, user, room):
    """A deploy stops each process: it must end, and close its sockets, rather
    than wait for them (uvicorn waited forever when a closed socket's consumer
    never ended)."""
    need_redis()
    server = SERVERS[kind]()
    await asyncio.to_thread(server.start)
    try:
        sockets = [await _open(server.address, user) for _ in range(3)]
        for ws in sockets:
            await ws.send(json.dumps({"type": "join", "room": room.slug}))
            await receive_frame(ws, "joined")
        await sockets[0].close()  # one client leaves first, as the others stay
        started = time.monotonic()
        server.process.terminate()
        await asyncio.to_thread(server.process.wait, 15)
        assert time.monotonic() - started < 12
        for ws in sockets[1:]:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), timeout=5)
    finally:
        await asyncio.to_thread(server.stop)
        server.log.close()
