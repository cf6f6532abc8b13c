"""A small Python client for the chat socket, for bots, scripts and tests.

It follows the delivery rules of docs/protocol.md ("Delivery guarantee"):
reconnect with exponential backoff and full jitter, rejoin every room with
`since`, catch up page by page, drop duplicates by id, resend unacknowledged
messages with their original `client_id`, and hand messages over in each
room's order (`seq`): a message beyond a gap waits for the missing one, and a
gap still open after GAP_WAIT seconds (longer while gaps keep coming) is
filled from the database (a `join` with `since`).

    client = ChatClient("ws://127.0.0.1:8000/ws/chat/", token=access, rooms=["general"])
    runner = asyncio.create_task(client.run())
    await client.wait_joined()
    await client.send("general", "hello")
    ...
    await client.close()

`client.messages[room]` holds everything handed over, in order.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field

import websockets

from chat.resume import Stream

logger = logging.getLogger(__name__)


class _WithoutToken(logging.LoggerAdapter):
    """websockets' logger for a connection, with the token left out: at DEBUG
    it logs every request header, `Authorization` included."""

    def log(self, level: int, msg: object, *args: object, **kwargs: object) -> None:
        if len(args) == 2 and str(args[0]).lower() == "authorization":
            args = (args[0], "[redacted]")
        super().log(level, msg, *args, **kwargs)


_websockets_logger = _WithoutToken(logging.getLogger("websockets.client"))

CATCH_UP_PAGE_SIZE = 100  # a joined page this full means there may be more
# Seconds a gap may stay open before it is filled from the database; doubled
# (up to GAP_WAIT_MAX) while gaps keep coming back, as they do when the server
# is behind: then a join for every gap would only add to its load.
GAP_WAIT, GAP_WAIT_MAX = 0.5, 8.0


@dataclass
class RoomState:
    stream: Stream = field(default_factory=Stream)
    syncing: bool = True  # between a join and its last catch-up page
    seen: set[int] = field(default_factory=set)
    waiting: dict[int, dict] = field(default_factory=dict)  # live, not handed over: seq -> message
    gap_check: asyncio.TimerHandle | None = None
    gap_wait: float = GAP_WAIT


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
        self._socket = None
        self._closing = False
        self._ids = (f"{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())
        self._joined = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._acked = asyncio.Condition()

    # --- the public surface -------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected until close(); returns then."""
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                attempt = 0
            except (TimeoutError, OSError, websockets.WebSocketException) as exc:
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
        async with websockets.connect(
            self.url, additional_headers=headers, logger=_websockets_logger
        ) as socket:
            if self._closing:
                return  # close() came while this connection was being made
            self._socket = socket
            self.connections += 1
            for room, state in self.rooms.items():
                state.syncing = True
                await self._join(room, state.stream.since)
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

    async def _join(self, room: str, since: int | None) -> None:
        await self._send({"type": "join", "room": room, "since": since})

    async def _handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "joined":
            await self._on_joined(frame)
        elif kind == "message":
            await self._on_message(frame)
        elif kind == "error":
            self.errors.append(frame)
            code, ref = frame.get("code"), frame.get("ref")
            retry_after = frame.get("retry_after", 1.0)
            if code in {"unavailable", "rate_limited"} and ref in self.pending:
                # Not stored just now: sent again after the wait the server asks for.
                self._spawn(self._resend_later(ref, retry_after))
            elif code == "unavailable" and ref in self.rooms and self.rooms[ref].syncing:
                # A join (or a catch-up's) not answered just now: asked again.
                self._spawn(self._join_later(ref, retry_after))
            else:
                # A send the server refused for good is not resent.
                self.pending.pop(ref, None)

    async def _resend_later(self, client_id: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        frame = self.pending.get(client_id)
        if frame is not None:
            await self._send(frame)

    async def _join_later(self, room: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if self.rooms[room].syncing:
            await self._join(room, self.rooms[room].stream.since)

    async def _on_joined(self, frame: dict) -> None:
        room, page = frame["room"], frame["messages"]
        state = self.rooms[room]
        for message in page:
            self._deliver(state, message)
        state.stream.page(page, frame["seq"])
        # Live messages that now follow on go out before the next page's.
        self._hand_over(room)
        if len(page) >= CATCH_UP_PAGE_SIZE:
            await self._join(room, state.stream.since)  # more may be missing
            return
        state.syncing = False
        self._watch_gap(room)
        if not any(s.syncing for s in self.rooms.values()):
            self._joined.set()

    async def _on_message(self, message: dict) -> None:
        client_id = message.get("client_id")
        if client_id in self.pending:
            del self.pending[client_id]
            async with self._acked:
                self.acked[client_id] = message
                self._acked.notify_all()
        state = self.rooms.get(message["room"])
        if state is None or message["id"] in state.seen:
            return
        state.stream.live(message["id"], message["seq"])
        state.waiting[message["seq"]] = message
        self._hand_over(message["room"])
        if not state.syncing:
            self._watch_gap(message["room"])

    def _hand_over(self, room: str) -> None:
        """Deliver, in order, the waiting messages up to the first gap.

        Everything numbered up to stream.seq has been delivered (pages
        deliver theirs first), so these follow on in order.
        """
        state = self.rooms[room]
        for seq in sorted(seq for seq in state.waiting if seq <= state.stream.seq):
            self._deliver(state, state.waiting.pop(seq))
        if not state.stream.has_gap and state.gap_check is None:
            state.gap_wait = GAP_WAIT  # caught up by itself

    def _watch_gap(self, room: str) -> None:
        """A gap that does not close by itself soon is filled from the database."""
        state = self.rooms[room]
        if state.stream.has_gap and state.gap_check is None:
            loop = asyncio.get_running_loop()
            state.gap_check = loop.call_later(state.gap_wait, self._check_gap, room)

    def _check_gap(self, room: str) -> None:
        state = self.rooms[room]
        state.gap_check = None
        if state.stream.has_gap and not state.syncing and self._socket is not None:
            state.syncing = True
            state.gap_wait = min(state.gap_wait * 2, GAP_WAIT_MAX)
            self._spawn(self._join(room, state.stream.since))

    def _spawn(self, coroutine: Coroutine) -> None:
        """Run in the background, held until done."""
        self._tasks.add(task := asyncio.ensure_future(coroutine))
        task.add_done_callback(self._tasks.discard)

    def _deliver(self, state: RoomState, message: dict) -> None:
        if message["id"] in state.seen:
            return
        state.seen.add(message["id"])
        self.messages[message["room"]].append(message)
        if self.on_message is not None:
            self.on_message(message)
