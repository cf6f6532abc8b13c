"""Room fan-out: one channel-layer subscription per room per process.

A straightforward Channels app puts every socket's own channel in the room's
group, so a message to a room of N costs N layer messages (N Redis pushes and
pops with channels-redis) and N consumer dispatches, each a queue, a task
wake-up and a handler lookup. Here each server process subscribes once per
room, on behalf of the sockets it holds, and hands each event (its frame
encoded once, chat.events) to those sockets directly: per socket, only the
WebSocket write is left. A message is one publish per room whatever its size
(the group holds one channel per process). Measured in docs/performance.md.

Each socket keeps its own channel for what is addressed to its user
(chat.events.user_group: bans, deactivation).
"""

import asyncio
import contextlib
import logging
import weakref
from typing import Protocol

from channels.layers import BaseChannelLayer, get_channel_layer

from chat import events

logger = logging.getLogger(__name__)


class RoomSocket(Protocol):
    channel_name: str

    async def room_event(self, event: dict) -> None: ...

    async def catch_up(self) -> None: ...


class RoomFanout:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[int, set[RoomSocket]] = {}  # room id -> this process's sockets
        # Subscribing and unsubscribing one at a time keeps a room's first
        # join and last leave from crossing each other.
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.closing = False

    async def join(self, room_id: int, socket: RoomSocket) -> None:
        """Subscribe `socket` to the room; returns once its events will arrive."""
        async with self.lock:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
                self.task = asyncio.create_task(self._receive_forever())
            members = self.members.setdefault(room_id, set())
            if not members:
                await self._subscribe(room_id)
            members.add(socket)

    async def leave(self, room_id: int, socket: RoomSocket) -> None:
        async with self.lock:
            members = self.members.get(room_id)
            if members is None:
                return
            members.discard(socket)
            if members:
                return
            del self.members[room_id]
            try:
                await self.layer.group_discard(events.room_group(room_id), self.channel)
            except events.LAYER_ERRORS:
                logger.warning("could not unsubscribe from room %s", room_id, exc_info=True)

    async def _subscribe(self, room_id: int) -> None:
        try:
            await self.layer.group_add(events.room_group(room_id), self.channel)
        except events.LAYER_ERRORS:
            # Redis is away: the layer says when it is back (layer.recovered),
            # and then every room is subscribed again.
            logger.warning("could not subscribe to room %s", room_id, exc_info=True)

    async def _receive_forever(self) -> None:
        me = asyncio.current_task()
        # Not `while True`: a cancellation that lands inside channels-redis's
        # blocking pop can be swallowed there; the task must still end.
        while not (self.closing or me.cancelling()):
            event = await self.layer.receive(self.channel)
            try:
                if event["type"] == events.ROOM_EVENT:
                    await self._deliver(event)
                elif event["type"] == "layer.recovered":
                    await self._recover()
            except Exception:
                # One bad event or socket must not end every room's delivery
                # in this process.
                logger.exception("room fan-out failed on a %s event", event.get("type"))

    async def close(self, timeout: float = 5) -> None:
        """Stop receiving, before the event loop ends (tests run a loop each).

        Cancelling is not enough: channels-redis can swallow a cancellation
        inside its blocking pop and keep waiting. A message to our own channel
        ends that wait, and `closing` ends the loop.
        """
        if self.task is None or self.task.done():
            return
        self.closing = True
        self.task.cancel()
        with contextlib.suppress(*events.LAYER_ERRORS):
            await self.layer.send(self.channel, {"type": "fanout.closed"})
        await asyncio.wait({self.task}, timeout=timeout)

    async def _deliver(self, event: dict) -> None:
        exclude = event.get("exclude")
        for socket in list(self.members.get(event["room_id"], ())):
            if socket.channel_name != exclude:
                await socket.room_event(event)

    async def _recover(self) -> None:
        """Redis came back (maybe empty): subscribe again, then let every socket
        fetch from the database what the layer dropped meanwhile."""
        async with self.lock:
            for room_id in self.members:
                await self._subscribe(room_id)
        sockets = {socket for members in self.members.values() for socket in members}
        for socket in sockets:
            await socket.catch_up()


_fanouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_fanout() -> RoomFanout:
    """This event loop's fan-out (one per process in production; tests run several loops)."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    fanout = _fanouts.get(loop)
    if fanout is None or fanout.layer is not layer:
        if fanout is not None:
            # The settings changed layers (tests): the old one stops.
            fanout.closing = True
            if fanout.task is not None:
                fanout.task.cancel()
        fanout = RoomFanout(layer)
        _fanouts[loop] = fanout
    return fanout


async def close_fanout() -> None:
    """Stop this event loop's fan-out, if it has one."""
    fanout = _fanouts.get(asyncio.get_running_loop())
    if fanout is not None:
        await fanout.close()
