"""The chat socket: one per client, with rooms multiplexed on it.

Thin by design: authenticate, parse the frame (chat.protocol), call a service
or selector, reply. Business rules live in chat.services.
"""

import asyncio
import logging
import uuid

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from chat import (
    daphne_frames,
    events,
    moderation,
    observe,
    posting,
    protocol,
    selectors,
    services,
)
from chat.batching import database_call
from chat.exceptions import (
    ChatError,
    FrameTooLarge,
    NotJoined,
    TooManyErrors,
    TooManyRooms,
    TooManySockets,
    Unavailable,
)
from chat.fanout import get_fanout
from chat.heartbeat import get_heartbeat
from chat.models import Room
from chat.presence import get_presence
from chat.ratelimit import TokenBucket
from chat.resume import Stream
from chat.socketlimit import get_seats

logger = logging.getLogger(__name__)
# A socket that closed while we were busy: uvicorn raises an OSError subclass
# (as ASGI asks), Daphne autobahn's Disconnected.
CLOSED_SOCKET_ERRORS = (OSError, Disconnected)
# 4000-4999: the application's own close codes.
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TOO_MANY_ERRORS = 4008  # as 1008, policy violation
# How long a sender waits for its message to come back through the fan-out
# before it is acknowledged directly.
ECHO_WAIT = 1.0
# The database lost (PostgreSQL restarting, its connections dropped): what a
# command then raises, and how long the client is told to wait before sending
# it again. The failed connection is replaced for the next command.
DATABASE_LOST = (OperationalError, InterfaceError)
UNAVAILABLE_RETRY_AFTER = 1.0
# Typing frames a socket may have forwarded: a burst, then one a second. The
# chat page sends one every few seconds; each goes to every member of the
# room, so a flood of them would cost the room's fan-out what a flood of
# messages costs, with no send rate to stop it. The excess is dropped
# quietly: typing is a hint, and the others' pages forget it in seconds.
TYPING_RATE, TYPING_BURST = 1.0, 5


def _room_enter(*, user, slug: str) -> Room:
    room = selectors.room_get(slug=slug)
    services.room_join(user=user, room=room)
    return room


class ChatConsumer(AsyncWebsocketConsumer):
    # No channel of its own: what the layer brings (room frames, moderation's
    # word to the user) reaches the socket through the process's fan-out.
    channel_layer_alias = None

    async def __call__(self, scope: dict, receive, send) -> None:
        # With no channel, the client's messages are the socket's only source:
        # awaited here one after the other. Channels' own loop
        # (await_many_dispatch, for a channel and the client together) starts
        # a task and an asyncio.wait for every frame the client sends.
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict) -> None:
        # Channels >= 4.2 hops to a thread for aclose_old_connections() before
        # every handler, including each room event to each member: on a busy
        # room that hop is most of the CPU. Every database call here goes
        # through database_call (chat.batching), database_sync_to_async
        # underneath, which closes stale connections in its own thread, so the
        # extra hop buys nothing.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict) -> None:
        # Channels' own also hops to the database thread to close connections
        # (as dispatch did), and leaves groups this consumer never joins: when
        # a thousand sockets close at once, a thousand hops for nothing.
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def connect(self) -> None:
        observe.socket_connecting()
        # `accepted`: holds a seat, groups, presence (disconnect frees them);
        # `serving`: its frames are read. A socket being closed by the server
        # is accepted but no longer served.
        self.accepted = self.serving = False
        # Names this socket across processes: its seat, its presence entries,
        # the sender to leave out of its own broadcasts.
        self.socket_id = uuid.uuid4().hex
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (403)
            return
        self.seats = get_seats()
        if not await self.seats.take(user.pk, self.socket_id):
            await self._refuse(
                TooManySockets(f"At most {settings.MAX_SOCKETS_PER_USER} connections per account.")
            )
            return
        self.accepted = self.serving = True
        self.user = user
        self.username = user.username
        self.rooms: dict[str, Room] = {}  # joined on this socket, by slug
        # Per room, what this socket was sent with no gap, so that it is sent
        # the rest from the database after the layer lost messages (chat.resume).
        self.streams: dict[str, Stream] = {}
        # This socket's messages that the layer took, until their copy comes
        # back through the fan-out (their acknowledgement): message id -> timer.
        self.unechoed: dict[int, asyncio.TimerHandle] = {}
        self.acknowledging: set[asyncio.Task] = set()  # held until done
        self.presence = get_presence()
        self.fanout = get_fanout()
        self.error_budget = TokenBucket(settings.SOCKET_ERROR_RATE, settings.SOCKET_ERROR_BURST)
        self.typing_budget = TokenBucket(TYPING_RATE, TYPING_BURST)
        # Moderation reaches all of a user's sockets, in every process, here.
        await self.fanout.add(self)
        await self.accept()
        # Under Daphne, room frames are written as bytes built once for all
        # the room's sockets (chat.daphne_frames); None under other servers.
        self.write_frame = daphne_frames.writer_for(self.base_send)
        self.opened_at = observe.socket_opened(user_id=user.pk)
        # Its seat and presence entries live while the process renews them.
        self.heartbeat = get_heartbeat()
        self.heartbeat.add(self)

    async def _refuse(self, error: ChatError) -> None:
        """Accept only to say why, then close: a refused handshake (403) would
        leave the client guessing, and browsers do not show its reason."""
        await self.accept()
        await self._close_with(error, CLOSE_TOO_MANY_SOCKETS)

    async def _close_with(self, error: ChatError, code: int) -> None:
        """Say why in an `error` frame, then close; frames still queued are dropped."""
        self.serving = False
        observe.error_sent(error.code)
        await self.send_frame(protocol.error_frame(error))
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if not self.accepted:
            return  # refused
        observe.socket_closed(user_id=self.user.pk, code=code, opened_at=self.opened_at)
        self.heartbeat.discard(self)
        for echo_wait in self.unechoed.values():
            echo_wait.cancel()
        await self.seats.release(self.user.pk, self.socket_id)
        self.fanout.discard(self)
        for room in list(self.rooms.values()):
            await self._leave(room)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.serving:
            return  # refused, or being closed
        command = None
        try:
            if text_data is not None and _too_large(text_data):
                raise FrameTooLarge(f"Frames may hold at most {settings.MAX_FRAME_BYTES} bytes.")
            command = protocol.parse_text(text_data)
            await self.commands[type(command)](self, command)
        except ChatError as exc:
            await self._refuse_command(exc, command)
            if not self.error_budget.take():
                await self._close_with(TooManyErrors(), CLOSE_TOO_MANY_ERRORS)
        except DATABASE_LOST:
            # Not the client's doing: no error budget spent, and the socket stays.
            logger.warning("database unavailable for %s", type(command).__name__, exc_info=True)
            await self._refuse_command(Unavailable(retry_after=UNAVAILABLE_RETRY_AFTER), command)

    async def _refuse_command(self, error: ChatError, command: protocol.Command | None) -> None:
        ref = command.ref if command is not None else error.ref
        observe.error_sent(error.code)
        await self.send_frame(protocol.error_frame(error, ref=ref))

    async def send_frame(self, frame: dict) -> None:
        await self.send_text(protocol.encode(frame))

    async def send_text(self, text: str) -> None:
        """Send, unless the client has just gone: then `disconnect` follows."""
        try:
            await self.send(text_data=text)
        except CLOSED_SOCKET_ERRORS:
            # Letting it escape would kill the consumer before its
            # disconnect() runs, leaving the user "online".
            logger.debug("socket closed before a send", exc_info=True)

    # --- commands from the client ---------------------------------------------------

    async def join(self, command: protocol.Join) -> None:
        room = self.rooms.get(command.room)
        if room is not None:
            # Already in: a join again is a request for more catch-up.
            page = await database_call(selectors.message_page, room=room, since=command.since)
            online = await self.presence.online(room.id)
        else:
            if len(self.rooms) >= settings.MAX_ROOMS_PER_SOCKET:
                raise TooManyRooms(f"At most {settings.MAX_ROOMS_PER_SOCKET} rooms per connection.")
            room = await database_call(_room_enter, user=self.user, slug=command.room)
            # Subscribed before reading history, so that nothing posted in
            # between is missed (the client drops what it sees twice, by id).
            await self.fanout.join(events.room_group(room.id), self)
            self.rooms[room.slug] = room
            observe.room_joined()
            page = await database_call(selectors.message_page, room=room, since=command.since)
            self.fanout.order_from(events.room_group(room.id), page.last)
            joined = await self.presence.add(room.id, self.username, self.socket_id)
            online = joined.online
            if joined.first:
                self._presence_changed(room, online=True)
        frame = protocol.joined_frame(
            room=room.slug, online=online, messages=page.messages, seq=page.through
        )
        self._stream(room.slug).page(frame["messages"], page.through)
        await self.send_frame(frame)

    async def leave(self, command: protocol.Leave) -> None:
        await self._leave(self._joined(command.room))
        await self.send_frame(protocol.left_frame(room=command.room))

    async def post_message(self, command: protocol.PostMessage) -> None:
        room = self._joined(command.room)
        message = await posting.post_message(
            user=self.user, room=room, body=command.body, client_id=command.client_id
        )
        frame = protocol.message_frame(message)
        # Out to the room, the sender's socket included (also for a resent
        # client_id: its first broadcast may have died with another process).
        # The sender's copy is its acknowledgement: this process's fan-out
        # hands it over in seq order with the room's other messages, whether
        # or not the layer took it (Redis away). Should it not come (held for
        # a gap, then dropped with the room), the sender is acknowledged
        # directly after ECHO_WAIT.
        self._await_echo(room.slug, frame)
        await events.aroom_broadcast(room.id, frame)

    async def typing(self, command: protocol.Typing) -> None:
        room = self._joined(command.room)
        if not self.typing_budget.take():
            return
        await events.aroom_broadcast(
            room.id,
            protocol.typing_frame(room=room.slug, user=self.username, typing=command.typing),
            exclude=self.socket_id,
        )

    async def delete(self, command: protocol.Delete) -> None:
        room = self._joined(command.room)
        await database_call(
            moderation.message_delete, user=self.user, room=room, message_id=command.id
        )

    commands = {
        protocol.Join: join,
        protocol.Leave: leave,
        protocol.PostMessage: post_message,
        protocol.Typing: typing,
        protocol.Delete: delete,
    }

    # --- room events, from this process's fan-out (chat.fanout) -------------------------

    def room_event_now(self, event: dict) -> bool:
        """room_event, if the socket can write it at once (under Daphne):
        the fan-out then needs no coroutine per socket. False: it cannot."""
        if self.write_frame is None or not self.write_frame(daphne_frames.event_frame(event)):
            return False
        if "seq" in event:
            self._had(event)
        return True

    async def room_event(self, event: dict) -> None:
        """One room event for this socket, from the process's fan-out."""
        if not self.room_event_now(event):
            await self.send_text(event["text"])
            if "seq" in event:
                self._had(event)

    def _had(self, event: dict) -> None:
        """A room message went out to this socket."""
        self._stream(event["room"]).live(event["id"], event["seq"])
        if self.unechoed:  # its own message, maybe: acknowledged (most sockets wait for none)
            self._echoed(event["id"])

    def _await_echo(self, slug: str, frame: dict) -> None:
        self._echoed(frame["id"])  # a resent message: the first wait is over
        self.unechoed[frame["id"]] = asyncio.get_running_loop().call_later(
            ECHO_WAIT, self._echo_missed, slug, frame
        )

    def _echoed(self, message_id: int) -> None:
        echo_wait = self.unechoed.pop(message_id, None)
        if echo_wait is not None:
            echo_wait.cancel()

    def _echo_missed(self, slug: str, frame: dict) -> None:
        """The fan-out never brought this socket's message back."""
        del self.unechoed[frame["id"]]
        task = asyncio.get_running_loop().create_task(self._acknowledge(slug, frame))
        self.acknowledging.add(task)
        task.add_done_callback(self.acknowledging.discard)

    async def _acknowledge(self, slug: str, frame: dict) -> None:
        """Send the sender its own message directly."""
        if slug in self.rooms:
            self._stream(slug).live(frame["id"], frame["seq"])
        await self.send_frame(frame)

    async def catch_up(self) -> None:
        """Send, from the database, what the channel layer dropped (Redis was away)."""
        for slug, room in list(self.rooms.items()):
            stream = self._stream(slug)
            while True:
                page = await database_call(selectors.message_page, room=room, since=stream.since)
                frames = [protocol.message_frame(message) for message in page.messages]
                for frame in frames:
                    await self.send_frame(frame)
                stream.page(frames, page.through)
                if len(page.messages) < selectors.CATCH_UP_PAGE_SIZE:
                    break

    # --- events to the user, from this process's fan-out (through dispatch) -----------------

    async def user_removed(self, event: dict) -> None:
        """Banned or removed from a room: leave it at once, and say why."""
        room = self.rooms.get(event["room"])
        if room is not None:
            await self._leave(room)
            await self.send_frame(protocol.removed_frame(room=room.slug, reason=event["reason"]))

    async def user_disconnect(self, event: dict) -> None:
        """The account was deactivated: frames still queued are dropped."""
        self.serving = False
        await self.close(code=4403)

    # --- helpers ---------------------------------------------------------------------------

    def _stream(self, slug: str) -> Stream:
        stream = self.streams.get(slug)
        if stream is None:
            stream = self.streams[slug] = Stream()
        return stream

    def _joined(self, slug: str) -> Room:
        try:
            return self.rooms[slug]
        except KeyError:
            raise NotJoined(f"You have not joined {slug!r} on this connection.") from None

    async def _leave(self, room: Room) -> None:
        # Once: a removal (fan-out task) may come while disconnect leaves its rooms.
        if self.rooms.pop(room.slug, None) is None:
            return
        observe.room_left()
        self.streams.pop(room.slug, None)
        await self.fanout.leave(events.room_group(room.id), self)
        if await self.presence.remove(room.id, self.username, self.socket_id):
            self._presence_changed(room, online=False)

    def _presence_changed(self, room: Room, *, online: bool) -> None:
        events.presence_changed(
            room_id=room.id, room_slug=room.slug, user=self.username, online=online
        )

    # --- for the process's heartbeat (chat.heartbeat) -------------------------------------

    @property
    def user_id(self) -> int:
        return self.user.pk


def _too_large(text: str) -> bool:
    """Over MAX_FRAME_BYTES in UTF-8, as the client sent it. A character is
    at most 4 bytes, so only a frame of over a quarter of the limit in
    characters is encoded to count (a chat message's frame rarely is)."""
    limit = settings.MAX_FRAME_BYTES
    return len(text) > limit // 4 and len(text.encode(errors="surrogatepass")) > limit
