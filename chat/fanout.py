"""The process's fan-out: one channel-layer subscription per group per process.

A straightforward Channels app gives every socket a channel of its own and
puts it in its room's group, so a message to a room of N costs N layer
messages (N Redis pushes and pops with channels-redis) and N consumer
dispatches, each a queue, a task wake-up and a handler lookup. Here each
server process holds one channel, subscribes it once to each group its
sockets need, and hands each event to those sockets directly:

- `room.<id>`: the room's frames, each encoded once (chat.events); per
  socket, only the WebSocket write is left. A message is one publish per room
  whatever its size (the group holds one channel per process).
- `users`: what moderation tells every socket of a user (a ban, a
  deactivated account). Every process subscribes once and hands each event to
  its own sockets of that user: a group per user would cost every connect and
  disconnect a Redis round trip, serialised behind the subscription lock (a
  reconnect storm after a deploy), for events that are rare.

A room event from this process reaches its own sockets from here at once
(`deliver_here`), not back through Redis: the layer pushes it to the other
processes only (chat.layers.ORIGIN). That is a Redis round trip and a pop
less per message, and this process's sockets hear its messages even while
Redis is away.

A room's messages go out in their numbers' (seq) order. Posts commit in that
order, but their broadcasts race to Redis (from one process or several), so
the fan-out puts them back in order (Sequencer), the sender's own copy with
the rest. A message whose copy is late (another process's event loop is
busy) or lost with the layer is read from the database once the ones after
it have waited HOLD_SECONDS, and goes out in its place.

A process that dies without leaving its groups stays in them until the
layer's group_expiry: live processes renew their groups well before that.

So sockets have no channel of their own (ChatConsumer.channel_layer_alias):
no receive task per socket waiting on the layer, one per process instead.
Measured in docs/performance.md.
"""

import asyncio
import contextlib
import logging
import weakref
from typing import Protocol

from channels.layers import BaseChannelLayer, get_channel_layer

from chat import events, observe, selectors
from chat.batching import database_call
from chat.layers import ORIGIN

logger = logging.getLogger(__name__)


# How long a room's message waits for an earlier one that has not come. They
# are usually a millisecond apart; after this the earlier one is read from the
# database (Fanout._release).
HOLD_SECONDS = 0.05
# Numbers of a gap read from the database at once, and numbers remembered as
# sent from it (their late copies through the layer are then dropped).
MAX_FILL, MAX_FILLED = 100, 1000
# Groups are renewed this many times per layer.group_expiry: a process whose
# loop stalls (a long pause, a slow Redis) for most of it keeps them.
RENEWALS_PER_EXPIRY = 4


class Sequencer:
    """One room's message events, put back in seq order before they go out.

    A message numbered past the next expected one waits until the gap fills
    or for HOLD_SECONDS (timed by the fan-out from when the gap became the
    first); then the gap is read from the database (overdue, settle), and
    what it did not hold is given up. One numbered below the next (late, or
    sent again) goes out at once, readers dropping what they already have by
    id, unless it went out from the database already.
    """

    __slots__ = ("filled", "held", "next", "timer")

    def __init__(self, next_seq: int | None = None) -> None:
        self.next = next_seq  # the number expected next; None: the first to come
        self.held: dict[int, dict] = {}  # seq -> event, past a gap
        self.timer: asyncio.TimerHandle | None = None  # the first gap's hold
        self.filled: set[int] = set()  # sent from the database; their late copies are not

    def push(self, event: dict) -> list[dict]:
        """The events to send now that `event` came, in order."""
        seq = event["seq"]
        if self.next is not None and seq < self.next:
            if seq in self.filled:
                self.filled.discard(seq)
                return []
            return [event]
        if self.next is not None and seq > self.next:
            self.held[seq] = event
            return []
        self.next = seq
        return self._ready([event])

    def overdue(self) -> tuple[list[int], int]:
        """The hold ran out: the numbers missing below the last one held (at
        most MAX_FILL), to read from the database, and the last number the
        reading settles (settle). Held numbers past it wait on: a gap that
        opens while the database is read gets its own hold."""
        if not self.held or self.next is None:
            return [], -1
        last = max(self.held)
        missing = [seq for seq in range(self.next, last) if seq not in self.held]
        if len(missing) > MAX_FILL:
            return missing[:MAX_FILL], missing[MAX_FILL - 1]
        return missing, last

    def settle(self, room_events: list[dict], through: int) -> list[dict]:
        """The gaps up to `through` read from the database (`room_events`):
        what can go out now, in order; the numbers up to `through` that the
        database did not show are given up."""
        for event in room_events:
            seq = event["seq"]
            if self.next <= seq <= through and seq not in self.held:
                self.held[seq] = event
                self.filled.add(seq)
        while len(self.filled) > MAX_FILLED:  # copies that never came
            self.filled.discard(min(self.filled))
        ready = [self.held.pop(seq) for seq in sorted(self.held) if seq <= through]
        self.next = max(self.next, through + 1)
        return self._ready(ready)

    def _ready(self, ready: list[dict]) -> list[dict]:
        """`ready`, then what was held behind it, up to the next gap."""
        if ready:
            self.next = max(self.next, ready[-1]["seq"] + 1)
        while self.next in self.held:
            ready.append(self.held.pop(self.next))
            self.next += 1
        return ready

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Socket(Protocol):
    socket_id: str
    username: str
    user_id: int

    def room_event_now(self, event: dict) -> bool: ...  # written at once, or False

    async def room_event(self, event: dict) -> None: ...

    async def dispatch(self, event: dict) -> None: ...  # to its handler, by type

    async def catch_up(self) -> None: ...


class Fanout:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.channel: str | None = None
        self.members: dict[str, set[Socket]] = {}  # room group -> this process's sockets in it
        self.users: dict[int, set[Socket]] = {}  # user id -> this process's sockets of the user
        self.sequencers: dict[str, Sequencer] = {}  # room group -> its messages' order
        # Held messages released by a timer must not overtake, or be
        # overtaken by, the receive loop's deliveries.
        self.sending = asyncio.Lock()
        # Subscribing and unsubscribing one at a time keeps a group's first
        # join and last leave from crossing each other.
        self.lock = asyncio.Lock()
        self.task: asyncio.Task | None = None
        self.renewing: asyncio.Task | None = None
        self.releasing: set[asyncio.Task] = set()  # held until done (not collected)
        self.closing = False

    async def add(self, socket: Socket) -> None:
        """Deliver moderation's events for `socket`'s user to it, from now on."""
        await self._start()
        self.users.setdefault(socket.user_id, set()).add(socket)

    def discard(self, socket: Socket) -> None:
        sockets = self.users.get(socket.user_id)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.users[socket.user_id]

    async def _start(self) -> None:
        """The process's channel, subscribed to moderation's group, and its receive loop."""
        if self.channel is not None:
            return
        async with self.lock:
            if self.channel is not None:
                return
            channel = await self.layer.new_channel()
            await self._subscribe(events.USERS_GROUP, channel)
            self.channel = channel  # last: a socket seeing it may rely on the subscription
            self.task = asyncio.create_task(self._receive_forever())
            self.renewing = asyncio.create_task(self._renew_forever())

    async def join(self, group: str, socket: Socket) -> None:
        """Subscribe `socket` to the room group `group`; returns once its events will arrive."""
        await self._start()
        async with self.lock:
            members = self.members.setdefault(group, set())
            if not members:
                await self._subscribe(group)
            members.add(socket)

    def order_from(self, group: str, last: int) -> None:
        """A socket of this process joined `group` when the room's last message
        was numbered `last`: its messages go out in order from the next one.

        Called once the joined page is read. Without it, the first message
        to reach the room's sockets here set where the order starts: a post of
        this process, numbered just after one from another process whose
        copy was still on its way through Redis, went out first, and the
        earlier one after it. Once the room has a Sequencer (the process's
        other sockets in it have had messages), it keeps its place.
        """
        if group in self.members and group not in self.sequencers:
            self.sequencers[group] = Sequencer(next_seq=last + 1)

    async def leave(self, group: str, socket: Socket) -> None:
        async with self.lock:
            members = self.members.get(group)
            if members is None:
                return
            members.discard(socket)
            if members:
                return
            del self.members[group]
            sequencer = self.sequencers.pop(group, None)
            if sequencer is not None:
                sequencer.cancel()
            try:
                await self.layer.group_discard(group, self.channel)
            except events.LAYER_ERRORS:
                logger.warning("could not unsubscribe from %s", group, exc_info=True)

    async def _subscribe(self, group: str, channel: str | None = None) -> None:
        try:
            await self.layer.group_add(group, channel or self.channel)
        except events.LAYER_ERRORS:
            # Redis is away: the layer says when it is back (layer.recovered),
            # and then every group is subscribed again.
            logger.warning("could not subscribe to %s", group, exc_info=True)

    async def _renew_forever(self) -> None:
        """Renew this process's groups, so that the layer forgets only dead processes'."""
        interval = self.layer.group_expiry / RENEWALS_PER_EXPIRY
        while True:
            await asyncio.sleep(interval)
            await self._subscribe(events.USERS_GROUP)
            for group in list(self.members):
                async with self.lock:  # not across a leave: it would subscribe again
                    if group in self.members:
                        await self._subscribe(group)

    async def _receive_forever(self) -> None:
        me = asyncio.current_task()
        # Not `while True`: a cancellation swallowed below (chat.redisconnection
        # says where; rediss:// connections still can) must still end the task.
        while not (self.closing or me.cancelling()):
            event = await self.layer.receive(self.channel)
            try:
                if event["type"] == events.ROOM_EVENT:
                    # Layers that do not skip the origin bring our own back.
                    if event.get(ORIGIN) != self.channel:
                        await self._deliver(event)
                elif event["type"] in events.USER_EVENTS:
                    for socket in list(self.users.get(event["user_id"], ())):
                        await socket.dispatch(event)
                elif event["type"] == events.ROOM_DELETED:
                    # To each socket in the room as its removal (the handler leaves the room).
                    removed = {**event, "type": events.USER_REMOVED}
                    for socket in list(self.members.get(events.room_group(event["room_id"]), ())):
                        await socket.dispatch(removed)
                elif event["type"] == "layer.recovered":
                    await self._recover()
            except Exception:
                # One bad event or socket must not end every room's delivery
                # in this process.
                logger.exception("fan-out failed on a %s event", event.get("type"))

    async def close(self, timeout: float = 5) -> None:
        """Stop receiving, before the event loop ends (tests run a loop each).

        Cancelling may not be enough: a cancellation swallowed under the
        layer's blocking pop (chat.redisconnection) leaves it waiting. A
        message to our own channel ends that wait, and `closing` ends the loop.
        """
        if self.task is None or self.task.done():
            return
        self.closing = True
        for sequencer in self.sequencers.values():
            sequencer.cancel()
        self.renewing.cancel()
        self.task.cancel()
        with contextlib.suppress(*events.LAYER_ERRORS):
            # Room groups are left as their sockets close; this one is the process's.
            await self.layer.group_discard(events.USERS_GROUP, self.channel)
        with contextlib.suppress(*events.LAYER_ERRORS):
            await self.layer.send(self.channel, {"type": "fanout.closed"})
        await asyncio.wait({self.task}, timeout=timeout)
        stop_receiving = getattr(self.layer, "stop_receiving", None)
        if stop_receiving is not None:  # chat.layers: Redis pushes to this process
            await stop_receiving(self.channel)

    async def deliver_here(self, *room_events: dict) -> None:
        """Room events from this process, to this process's sockets in the room,
        in this order.

        The caller's events name this fan-out's channel as their ORIGIN, so
        that the layer does not bring them back. Runs in the caller's task: a
        socket that fails must not fail the post that sent the event.
        """
        try:
            await self._deliver(*room_events)
        except Exception:
            logger.exception("fan-out failed on a local %s event", room_events[0].get("type"))

    async def _deliver(self, *room_events: dict) -> None:
        async with self.sending:
            for event in room_events:
                group = events.room_group(event["room_id"])
                if "seq" not in event:  # presence, typing: no order to keep
                    await self._send(group, event)
                    continue
                sequencer = self.sequencers.get(group)
                if sequencer is None:
                    sequencer = self.sequencers[group] = Sequencer()
                expected = sequencer.next
                for ready in sequencer.push(event):
                    await self._send(group, ready)
                self._hold(group, sequencer, expected)

    def _hold(self, group: str, sequencer: Sequencer, expected: int | None) -> None:
        """Time the first gap's wait from when it became the first: a new one
        if the number expected moved on from `expected` (the gap before it
        filled or was settled). A timer left running from an earlier gap
        would cut it short, and read the database for a copy a moment away."""
        if not sequencer.held:
            sequencer.cancel()
        elif sequencer.next != expected or sequencer.timer is None:
            sequencer.cancel()
            sequencer.timer = asyncio.get_running_loop().call_later(
                HOLD_SECONDS, self._release_later, group, sequencer
            )

    def _release_later(self, group: str, sequencer: Sequencer) -> None:
        sequencer.timer = None
        task = asyncio.get_running_loop().create_task(self._release(group, sequencer))
        self.releasing.add(task)
        task.add_done_callback(self.releasing.discard)

    async def _release(self, group: str, sequencer: Sequencer) -> None:
        """The hold ran out: the gaps' messages from the database, then the
        held ones, in order. The gap's copies through the layer are late (the
        other process's event loop was busy), or were lost with the layer;
        a later number exists, so the gap's posts have committed. What comes
        meanwhile goes through push as ever: a message held behind a gap that
        opens during the read waits for that gap's own hold."""
        gaps, through = sequencer.overdue()
        if not gaps:
            return  # what it held went out meanwhile
        filled = []
        room_id = next(iter(sequencer.held.values()))["room_id"]
        try:
            messages = await database_call(selectors.message_numbered, room_id=room_id, seqs=gaps)
            filled = [events.message_event(message) for message in messages]
        except Exception:
            logger.warning("could not read the gap of %s; sent past it", group, exc_info=True)
        async with self.sending:
            if self.sequencers.get(group) is not sequencer:
                return  # the last socket left the room meanwhile
            expected = sequencer.next
            try:
                for event in sequencer.settle(filled, through):
                    await self._send(group, event)
            except Exception:
                logger.exception("fan-out failed on held messages of %s", group)
            self._hold(group, sequencer, expected)

    async def _send(self, group: str, event: dict) -> None:
        exclude = event.get("exclude")
        sockets = [socket for socket in self.members.get(group, ()) if socket.socket_id != exclude]
        movers: set[str] = set()
        if "online" in event:  # presence: the users named are not told about themselves
            movers = {*event["online"], *event["offline"]}
        for socket in sockets:
            if socket.username in movers:
                personal = events.presence_without(event, socket.username)
                if personal is not None:
                    await socket.room_event(personal)
            elif not socket.room_event_now(event):
                await socket.room_event(event)
        if "seq" in event and sockets:  # a message (not presence or typing)
            observe.messages_delivered(event, len(sockets))

    async def _recover(self) -> None:
        """Redis came back (maybe empty): subscribe again, then let every socket
        fetch from the database what the layer dropped meanwhile."""
        async with self.lock:
            for group in [events.USERS_GROUP, *self.members]:
                await self._subscribe(group)
        sockets = {socket for members in self.members.values() for socket in members}
        for socket in sockets:
            await socket.catch_up()


_fanouts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def running_fanout() -> Fanout | None:
    """This event loop's fan-out if it receives (it serves sockets), else None."""
    fanout = _fanouts.get(asyncio.get_running_loop())
    if fanout is None or fanout.channel is None or fanout.closing:
        return None
    if fanout.layer is not get_channel_layer():
        return None  # the settings changed layers (tests): it is on its way out
    return fanout


def get_fanout() -> Fanout:
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
                fanout.renewing.cancel()
        fanout = Fanout(layer)
        _fanouts[loop] = fanout
    return fanout


async def close_fanout() -> None:
    """Stop this event loop's fan-out, if it has one."""
    fanout = _fanouts.get(asyncio.get_running_loop())
    if fanout is not None:
        await fanout.close()
