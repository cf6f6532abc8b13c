"""A small Python client for the chat socket, for bots, scripts and tests.

It follows the delivery rules of docs/protocol.md ("Delivery guarantee"):
reconnect with exponential backoff and full jitter, rejoin every room with
`since`, catch up page by page, drop duplicates by id, and resend
unacknowledged messages with their original `client_id`.

    client = ChatClient("ws://127.0.0.1:8000/ws/chat/", token=access, rooms=["general"])
    runner = asyncio.create_task(client.run())
    await client.wait_joined()
    await client.send("general", "hello")
    ...
    await client.close()

Messages are delivered per room in id order: while a room catches up, live
messages wait, and the catch-up pages and the waiting messages are then
handed over sorted; live messages are held for HOLD_BACK seconds so that
copies from different server processes, which may cross on the way, are
handed over sorted too. `client.messages[room]` holds everything delivered,
sorted by id, as a chat window shows it; `client.late` counts messages that
arrived after a higher id had already been handed over (`on_message` sees them
out of order; the list has them in their place).
"""

import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import websockets

from chat.resume import ResumePoint

logger = logging.getLogger(__name__)

CATCH_UP_PAGE_SIZE = 100  # a joined page this full means there may be more
HOLD_BACK = 0.3  # seconds a live message waits for a lower id that may be on its way


@dataclass
class RoomState:
    resume: ResumePoint = field(default_factory=ResumePoint)
    syncing: bool = True  # between a join and its last catch-up page
    seen: set[int] = field(default_factory=set)
    # Live messages not yet handed over, with their arrival time.
    waiting: list[tuple[float, dict]] = field(default_factory=list)
    handed_over: int = 0  # the highest id handed over


class ChatClient:
    def __init__(
        self,
        url: str,
        *,
        token: str,
        rooms: list[str],
        on_message: Callable[[dict], None] | None = None,
        backoff_first: float = 0.1,
        backoff_max: float = 5.0,
    ) -> None:
        self.url = url
        self.token = token
        self.rooms = {room: RoomState() for room in rooms}
        self.on_message = on_message
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.messages: dict[str, list[dict]] = {room: [] for room in rooms}
        self.pending: dict[str, dict] = {}  # client_id -> message frame, until acked
        self.acked: dict[str, dict] = {}  # client_id -> the stored message
        self.errors: list[dict] = []
        self.connections = 0
        self.late = 0
        self._socket = None
        self._closing = False
        self._ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self._joined = asyncio.Event()
        self._acked = asyncio.Condition()

    # --- the public surface -------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until close(); returns then."""
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                attempt = 0
            except (OSError, websockets.WebSocketException, asyncio.TimeoutError) as exc:
                logger.debug("chat connection lost: %r", exc)
            if self._closing:
                break
            self._joined.clear()
            attempt += 1
            # Full jitter: spread a crowd of reconnecting clients over the window.
            ceiling = min(self.backoff_max, self.backoff_first * 2**attempt)
            await asyncio.sleep(random.uniform(0, ceiling))  # noqa: S311 - not cryptographic

    async def wait_joined(self, timeout: float = 10) -> None:
        await asyncio.wait_for(self._joined.wait(), timeout)

    async def send(self, room: str, body: str, client_id: str | None = None) -> str:
        """Queue a message; it is (re)sent until acknowledged. Returns its client_id."""
        client_id = client_id or next(self._ids)
        frame = {"type": "message", "room": room, "body": body, "client_id": client_id}
        self.pending[client_id] = frame
        await self._send(frame)
        return client_id

    async def wait_acked(self, client_ids: list[str], timeout: float = 30) -> None:
        async with self._acked:
            await asyncio.wait_for(
                self._acked.wait_for(lambda: all(c in self.acked for c in client_ids)), timeout
            )

    async def disconnect(self) -> None:
        """Drop the current connection (as a network failure would); run() reconnects."""
        if self._socket is not None:
            await self._socket.close()

    async def close(self) -> None:
        self._closing = True
        await self.disconnect()

    # --- one connection -------------------------------------------------------------------

    async def _session(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with websockets.connect(self.url, additional_headers=headers) as socket:
            self._socket = socket
            self.connections += 1
            for room, state in self.rooms.items():
                state.syncing = True
                await self._join(room, state.resume.since())
            for frame in list(self.pending.values()):
                await self._send(frame)  # same client_id: stored once
            async for text in socket:
                await self._handle(json.loads(text))
        self._socket = None

    async def _send(self, frame: dict) -> None:
        if self._socket is None:
            return  # sent on the next connection
        # If the connection just dropped, a pending message goes out again after
        # the reconnect.
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._socket.send(json.dumps(frame))

    async def _join(self, room: str, since: int) -> None:
        await self._send({"type": "join", "room": room, "since": since or None})

    async def _handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "joined":
            await self._on_joined(frame)
        elif kind == "message":
            await self._on_message(frame)
        elif kind == "error":
            self.errors.append(frame)
            # A send the server refused for good is not resent.
            if frame.get("code") not in {"rate_limited"}:
                self.pending.pop(frame.get("ref"), None)

    async def _on_joined(self, frame: dict) -> None:
        room, page = frame["room"], frame["messages"]
        state = self.rooms[room]
        for message in page:
            self._deliver(state, message)
        if page:
            state.resume.confirm_through(page[-1]["id"])
        if len(page) >= CATCH_UP_PAGE_SIZE:
            await self._join(room, state.resume.since())  # more may be missing
            return
        state.syncing = False
        self._hand_over(state, everything=True)
        if not any(s.syncing for s in self.rooms.values()):
            self._joined.set()

    async def _on_message(self, message: dict) -> None:
        client_id = message.get("client_id")
        own = client_id is not None and (client_id in self.pending or client_id in self.acked)
        if client_id in self.pending:
            del self.pending[client_id]
            async with self._acked:
                self.acked[client_id] = message
                self._acked.notify_all()
        state = self.rooms.get(message["room"])
        if state is None:
            return
        if not own:
            # Our own acks come straight from our socket, ahead of others'
            # messages still on their way: they do not move the resume point.
            state.resume.live(message["id"])
        state.waiting.append((time.monotonic(), message))
        if not state.syncing:
            loop = asyncio.get_running_loop()
            loop.call_later(HOLD_BACK, self._hand_over, state)

    def _hand_over(self, state: RoomState, everything: bool = False) -> None:
        """Deliver, in id order, the waiting messages that have waited HOLD_BACK
        (and any lower ids waiting with them)."""
        if state.syncing or not state.waiting:
            return
        due_before = time.monotonic() - HOLD_BACK + 0.001
        due = [m["id"] for t, m in state.waiting if everything or t <= due_before]
        if not due:
            return
        up_to = max(due)
        ready = sorted((m for _, m in state.waiting if m["id"] <= up_to), key=lambda m: m["id"])
        state.waiting = [(t, m) for t, m in state.waiting if m["id"] > up_to]
        for message in ready:
            self._deliver(state, message)

    def _deliver(self, state: RoomState, message: dict) -> None:
        if message["id"] in state.seen:
            return
        state.seen.add(message["id"])
        shown = self.messages[message["room"]]
        if message["id"] < state.handed_over:
            # Later than HOLD_BACK (its broadcast was retried, or its sender
            # resent it after a server died): shown in its place all the same.
            self.late += 1
            bisect.insort(shown, message, key=lambda m: m["id"])
        else:
            shown.append(message)
        state.handed_over = max(state.handed_over, message["id"])
        if self.on_message is not None:
            self.on_message(message)
