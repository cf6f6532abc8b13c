"""The process's heartbeat: its open sockets' seats and presence entries, kept alive.

Seats (chat.socketlimit) and presence entries (chat.presence) expire after
PRESENCE_TTL, so that those of a process that died without closing its
sockets come free by themselves. A living process renews its own: one task
per process, every third of the TTL, renews every socket's seat and entries
in pipelined round trips, instead of a task per socket waking to make two
round trips of its own (a task and its timer are about a kilobyte per idle
socket; docs/performance.md).

A beat also sweeps the expired presence entries of the rooms its sockets are
in, so that their members hear that users whose process died (or was stopped:
a cancelled consumer never runs `disconnect`) went offline, within
PRESENCE_TTL and two beats. Entries that a stalled process finds swept are
put back, and their users announced online again.
"""

import asyncio
import logging
import weakref
from typing import Protocol

from django.conf import settings

from chat import events
from chat.presence import Entry, get_presence
from chat.sharedstate import per_loop
from chat.socketlimit import get_seats

logger = logging.getLogger(__name__)

# Sockets renewed per round trip (their seats, then their presence entries):
# few enough that a chunk's entries, a socket's rooms (usually one or two),
# fit one pipeline (chat.presence.REFRESH_BATCH).
BEAT_CHUNK = 50


class Room(Protocol):
    id: int
    slug: str


class Socket(Protocol):
    socket_id: str
    user_id: int
    username: str
    rooms: dict[str, Room]  # by slug


class Heartbeat:
    def __init__(self) -> None:
        self.sockets: set[Socket] = set()
        self.task: asyncio.Task | None = None

    def add(self, socket: Socket) -> None:
        self.sockets.add(socket)
        if self.task is None:
            self.task = asyncio.create_task(self._beat_forever())

    def discard(self, socket: Socket) -> None:
        self.sockets.discard(socket)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.PRESENCE_TTL / 3)
            try:
                await self.beat()
            except Exception:
                # A failed beat only risks an early expiry; the next one renews.
                logger.exception("heartbeat failed")

    async def beat(self) -> None:
        """Renew every open socket's seat and presence entries now, BEAT_CHUNK
        sockets at a time, each chunk read just before it is sent. A beat of
        many sockets takes many round trips: read once at its start, a socket
        that closed or left a room meanwhile had its entry put back after its
        own removal, and showed online for another PRESENCE_TTL."""
        pending = list(self.sockets)
        seats, presence = get_seats(), get_presence()
        while pending:
            chunk, pending = pending[:BEAT_CHUNK], pending[BEAT_CHUNK:]
            live = [socket for socket in chunk if socket in self.sockets]
            await seats.renew_many([(socket.user_id, socket.socket_id) for socket in live])
            live = [socket for socket in live if socket in self.sockets]
            missing = await presence.refresh_many(
                [(_room_ids(socket), socket.username, socket.socket_id) for socket in live]
            )
            if missing:
                await self._put_back(missing, {socket.socket_id: socket for socket in live})
        await self.sweep()

    def _in_room(self, socket: Socket, room_id: int) -> Room | None:
        """The room, if the socket is still open here and in it."""
        return _room(socket, room_id) if socket in self.sockets else None

    async def _put_back(self, entries: list[Entry], sockets: dict[str, Socket]) -> None:
        """Add again the entries a renewal found gone, of the sockets still in
        their room (one left meanwhile must not be shown online again), and
        announce the users the room lost with them."""
        presence = get_presence()
        for room_id, username, socket_id in entries:
            socket = sockets[socket_id]
            room = self._in_room(socket, room_id)
            if room is None:
                continue
            joined = await presence.add(room_id, username, socket_id)
            if self._in_room(socket, room_id) is None:
                # It left during the add, whose entry may have landed after
                # the leave's removal.
                await presence.remove(room_id, username, socket_id)
            elif joined.first:
                events.presence_changed(
                    room_id=room_id, room_slug=room.slug, user=username, online=True
                )

    async def sweep(self) -> None:
        """Announce offline the users whose entries all expired, in the rooms
        of this process's sockets (no socket here: nobody here to tell)."""
        slugs = {room.id: room.slug for socket in self.sockets for room in socket.rooms.values()}
        gone = await get_presence().sweep(list(slugs))
        for room_id, users in gone.items():
            for user in users:
                events.presence_changed(
                    room_id=room_id, room_slug=slugs[room_id], user=user, online=False
                )

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _room_ids(socket: Socket) -> list[int]:
    return [room.id for room in socket.rooms.values()]


def _room(socket: Socket, room_id: int) -> Room | None:
    return next((room for room in socket.rooms.values() if room.id == room_id), None)


_heartbeats: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_heartbeat() -> Heartbeat:
    """This event loop's heartbeat (one per process in production; tests run several loops)."""
    return per_loop(_heartbeats, Heartbeat)


def close_heartbeat() -> None:
    """Stop this event loop's heartbeat, if it has one."""
    heartbeat = _heartbeats.pop(asyncio.get_running_loop(), None)
    if heartbeat is not None:
        heartbeat.close()
