"""Real WebSocket connections to the ASGI application, for tests."""

import asyncio
import json
from contextlib import asynccontextmanager

from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from chatsite.asgi import application

TIMEOUT = 3


class ChatClient:
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator

    async def send(self, frame: dict) -> None:
        # As a browser's JSON.stringify: text as it is, not \u escapes.
        await self.send_text(json.dumps(frame, ensure_ascii=False))

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = TIMEOUT) -> dict:
        """The next frame, passing over `presence`: a room's joins and leaves of
        the moment come together a little later, and may repeat what `joined`
        said (docs/protocol.md). receive_type("presence") waits for one."""
        while True:
            frame = await self._next(timeout)
            if frame["type"] != "presence":
                return frame

    async def receive_type(self, kind: str) -> dict:
        """The next frame (`presence` included when it is `kind`), which must be of type `kind`."""
        frame = await (self._next() if kind == "presence" else self.receive())
        assert frame["type"] == kind, frame
        return frame

    async def receive_until(self, kind: str, timeout: float = TIMEOUT) -> dict:
        """The next frame of type `kind`, passing over any others."""
        while True:
            frame = await self._next(timeout)
            if frame["type"] == kind:
                return frame

    async def _next(self, timeout: float = TIMEOUT) -> dict:
        return await self.communicator.receive_json_from(timeout=timeout)

    async def join(self, room: str, since: int | None = None) -> dict:
        frame = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        return await self.receive_type("joined")

    async def post(self, room: str, body: str, client_id: str | None = None) -> None:
        await self.send({"type": "message", "room": room, "body": body, "client_id": client_id})

    async def assert_silent(self) -> None:
        assert await self.communicator.receive_nothing(timeout=0.2)


def bearer_headers(user) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {AccessToken.for_user(user)}".encode())]


@asynccontextmanager
async def connect(user=None, *, headers=None, origin: bytes | None = b"http://localhost"):
    """An open, authenticated socket; disconnected when the block ends."""
    headers = list(headers if headers is not None else bearer_headers(user))
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected, "the handshake was refused"
    try:
        yield ChatClient(communicator)
    finally:
        await communicator.disconnect()


async def handshake_accepted(headers: list[tuple[bytes, bytes]], path: str = "/ws/chat/") -> bool:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    await communicator.disconnect()
    return connected


async def receive_frame(ws, kind: str, timeout: float = 5) -> dict:
    """The next frame of a `websockets` client connected to a real server, which
    must be of type `kind`; `presence` frames are passed over unless asked for
    (see ChatClient.receive)."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=timeout))
        if frame["type"] != "presence" or kind == "presence":
            break
    assert frame["type"] == kind, frame
    return frame
