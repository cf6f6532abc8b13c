"""Dead connections are dropped: Daphne pings every socket and closes one that
stops answering (docs/protocol.md, "Limits"). Run with short intervals here;
production uses Daphne's defaults (a ping every 20 s, 30 s to answer)."""

import asyncio
import base64
import os

import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from tests.servers import DaphneProcess

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def pinging_server():
    server = DaphneProcess("--ping-interval", "1", "--ping-timeout", "2")
    server.start()
    yield server
    server.stop()
    server.log.close()


async def open_silent_socket(address: str, token: str):
    """A WebSocket handshake by hand; after it, this client never answers a ping."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /ws/chat/ HTTP/1.1\r\n"
            f"Host: {address}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    status = await reader.readline()
    assert b" 101 " in status, status
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Reads (and ignores) what the server sends until it closes the connection."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass  # closed without a goodbye: closed all the same
    return True


async def test_a_socket_that_stops_answering_pings_is_closed(pinging_server, user):
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    reader, writer = await open_silent_socket(pinging_server.address, token)
    try:
        assert await closed_within(reader, 10)
    finally:
        writer.close()


async def test_a_live_client_that_answers_pings_stays(pinging_server, user):
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    url = f"ws://{pinging_server.address}/ws/chat/"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        await asyncio.sleep(4)  # two ping timeouts; the library answers pings
        await socket.send('{"type": "typing", "room": "x", "typing": true}')
        answer = await asyncio.wait_for(socket.recv(), 5)
    assert '"not_joined"' in answer
