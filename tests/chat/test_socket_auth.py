"""Who may open the chat socket."""

import asyncio
from contextlib import AsyncExitStack

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from accounts import middleware
from chat.fanout import get_fanout
from tests.factories import make_user
from tests.spies import record_calls
from tests.ws import bearer_headers, connect, handshake_accepted

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_handshake_without_identity_is_refused():
    assert not await handshake_accepted([(b"origin", b"http://localhost")])


async def test_a_socket_at_any_other_path_is_refused_not_an_error(user):
    headers = [*bearer_headers(user), (b"origin", b"http://localhost")]
    assert not await handshake_accepted(headers, path="/ws/no-such-socket/")
    assert not await handshake_accepted(headers, path="/ws/")


async def test_handshake_with_invalid_token_is_refused():
    headers = [(b"authorization", b"Bearer not-a-jwt"), (b"origin", b"http://localhost")]
    assert not await handshake_accepted(headers)


async def test_handshake_with_other_auth_scheme_is_refused(user):
    headers = [(b"authorization", b"Basic YWxpY2U6eA=="), (b"origin", b"http://localhost")]
    assert not await handshake_accepted(headers)


async def test_bearer_token_authenticates_the_socket(user, room):
    async with connect(user) as client:
        joined = await client.join(room.slug)
    assert joined["online"] == ["alice"]


async def test_session_cookie_authenticates_the_socket(user, room):
    browser = Client()
    await database_sync_to_async(browser.force_login)(user)
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    async with connect(headers=[(b"cookie", cookie)]) as client:
        joined = await client.join(room.slug)
    assert joined["online"] == ["alice"]


async def test_handshake_from_foreign_origin_is_refused(user):
    headers = [*bearer_headers(user), (b"origin", b"https://evil.example")]
    assert not await handshake_accepted(headers)


async def test_handshake_without_origin_is_judged_by_token(user):
    assert await handshake_accepted(bearer_headers(user))


async def test_a_deactivated_users_token_is_refused(user):
    headers = [*bearer_headers(user), (b"origin", b"http://localhost")]
    user.is_active = False
    await database_sync_to_async(user.save)()
    assert not await handshake_accepted(headers)


async def test_a_token_for_a_deleted_user_is_refused(user):
    headers = [*bearer_headers(user), (b"origin", b"http://localhost")]
    await database_sync_to_async(user.delete)()
    assert not await handshake_accepted(headers)


async def test_handshakes_at_once_read_their_users_together(monkeypatch):
    """A reconnect storm: one query for the handshakes waiting, not one each."""
    users = [await database_sync_to_async(make_user)() for _ in range(12)]
    reads = record_calls(monkeypatch, middleware, "_users_by_id")
    async with AsyncExitStack() as stack:
        # The first user twice: two tabs opening at once.
        await asyncio.gather(
            *(stack.enter_async_context(connect(user)) for user in [*users, users[0]])
        )
        # Each socket is its own user's.
        sockets = {user_id: len(sockets) for user_id, sockets in get_fanout().users.items()}
        assert sockets == {user.pk: 2 if user == users[0] else 1 for user in users}
    assert sorted(user_id for read in reads for user_id in read) == sorted(u.pk for u in users)
    assert len(reads) < len(users)
