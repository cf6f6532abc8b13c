"""Who may open the chat socket."""

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from tests.ws import bearer_headers, connect, handshake_accepted

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_handshake_without_identity_is_refused():
    assert not await handshake_accepted([(b"origin", b"http://localhost")])


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
