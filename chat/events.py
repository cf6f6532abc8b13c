"""Room and user broadcasts: the one place that talks to the channel layer's groups.

A room's sockets are reached through the group `room.<id>`, which each
process subscribes to once for its sockets (chat.fanout). What moderation
tells a user's sockets goes to the group `users`, which every process joins
once, and each process hands it to its own sockets of that user: these events
are rare, and a group per user would cost every connect and disconnect a
Redis round trip.
Each room event carries the frame already encoded, so a room of N members
costs one JSON encoding, not N.

Broadcasts are best effort by design: the channel layer delivers at most once
and may be down (Redis restarting). A failed broadcast is logged and never
undoes or fails what was stored: clients catch up from the database (`join`
with `since`), which is the delivery guarantee (docs/protocol.md).
"""

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from chat import fanout, protocol
from chat.batching import Batch
from chat.layers import ORIGIN
from chat.presence import get_presence
from chat.sharedstate import per_loop

logger = logging.getLogger(__name__)

ROOM_EVENT = "room.frame"
# Events to every socket of one user (in every process): moderation's reach.
USER_REMOVED = "user.removed"
USER_DISCONNECT = "user.disconnect"
USER_EVENTS = frozenset({USER_REMOVED, USER_DISCONNECT})
# To every socket in one room, in every process: the room is gone. Through
# USERS_GROUP, which every process hears, as the room's group is gone with it.
ROOM_DELETED = "room.deleted"
USERS_GROUP = "users"
LAYER_ERRORS = (RedisError, OSError, ChannelFull)


# Tasks of _resend and presence flushes, held so that they are not collected
# while they wait.
_background: set[asyncio.Task] = set()


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


async def _group_send(group: str, event: dict) -> bool:
    try:
        await get_channel_layer().group_send(group, event)
    except LAYER_ERRORS:
        logger.exception("broadcast to %s failed (type %s)", group, event["type"])
        return False
    return True


@dataclass(eq=False, slots=True)  # a publish: compared by identity, never merged
class _Publish:
    group: str
    event: dict


async def _publish_many(publishes: list[_Publish]) -> dict[_Publish, bool]:
    """Room events to the layer, in one call where it takes many (chat.layers)."""
    layer = get_channel_layer()
    send_many = getattr(layer, "group_send_many", None)
    if send_many is None:
        return {publish: await _group_send(publish.group, publish.event) for publish in publishes}
    try:
        await send_many([(publish.group, publish.event) for publish in publishes])
    except LAYER_ERRORS:
        logger.exception("broadcast of %d room events failed", len(publishes))
        return dict.fromkeys(publishes, False)
    return dict.fromkeys(publishes, True)


_publishes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _publish(group: str, event: dict) -> asyncio.Future:
    """Send `event` to the layer's `group` with the other room events of this
    turn of the event loop: one Redis round trip for a burst of posts. The
    future says whether the layer took it."""
    return per_loop(_publishes, lambda: Batch(_publish_many)).submit(_Publish(group, event))


def _room_event(room_id: int, frame: dict, exclude: str | None) -> dict:
    event = {"type": ROOM_EVENT, "room_id": room_id, "text": protocol.encode(frame)}
    if exclude is not None:
        event["exclude"] = exclude
    if frame["type"] == "message":
        # Sockets track what the layer brought them, per room (chat.resume).
        event["room"], event["id"], event["seq"] = frame["room"], frame["id"], frame["seq"]
        event["t"] = time.time()  # wall clock: the receiving process may be another
    elif frame["type"] == "presence":
        # The users named are not told about themselves (presence_without).
        event["room"], event["online"], event["offline"] = (
            frame["room"],
            frame["online"],
            frame["offline"],
        )
    return event


def message_event(message) -> dict:
    """A stored message as the room event its broadcast carried (chat.fanout
    fills a gap with these)."""
    return _room_event(message.room_id, protocol.message_frame(message), None)


async def aroom_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> bool:
    """Send `frame` to every socket in the room, except the socket `exclude`.

    This process's own sockets get it from here, whatever the layer does; the
    layer takes it to the other processes. Returns whether the layer took it.
    A message the layer refused is sent again in the background until it
    takes it (see _resend).
    """
    room_events = [_room_event(room_id, frame, exclude)]
    if frame["type"] == "message":
        # "bob joined" before "bob: hi", when both come from this process.
        joins = _joins_due_now(room_id)
        if joins is not None:
            room_events.insert(0, joins)
    return (await _broadcast(room_id, room_events))[-1]


async def _broadcast(room_id: int, room_events: list[dict]) -> list[bool]:
    """Room events out, in order: whether the layer took each."""
    here = fanout.running_fanout()
    group = room_group(room_id)
    published = []
    for event in room_events:
        if here is not None:
            event[ORIGIN] = here.channel  # the layer leaves this process out
        # Submitted first (they go out at the end of this turn): the other
        # processes' sockets do not wait for ours.
        published.append(_publish(group, event))
    if here is not None:
        # Before any wait: the posts that a turn of the database thread stored
        # reach this process's sockets in the order they were numbered.
        await here.deliver_here(*room_events)
    taken = [await publish for publish in published]
    for event, ok in zip(room_events, taken, strict=True):
        if not ok and "seq" in event:
            task = asyncio.get_running_loop().create_task(_resend(group, event))
            _background.add(task)
            task.add_done_callback(_background.discard)
    return taken


RESEND_FIRST, RESEND_MAX, RESEND_FOR = 0.05, 1.0, 300.0


async def _resend(group: str, event: dict) -> None:
    """Send a message event again until the layer takes it (Redis is back).

    Sockets that stay connected through a Redis outage catch up from the
    database when the layer recovers (chat.fanout), but only with what was
    stored by then. A broadcast that failed after that catch-up (a pooled
    connection still dead, Redis back a moment later than it seemed) would
    otherwise reach them only when a later message shows its clients the gap
    (chat.resume) and they fetch it.
    """
    loop = asyncio.get_running_loop()
    give_up, delay = loop.time() + RESEND_FOR, RESEND_FIRST
    while loop.time() < give_up:
        await asyncio.sleep(delay)
        try:
            await get_channel_layer().group_send(group, event)
        except LAYER_ERRORS:
            logger.debug("broadcast retry to %s failed", group, exc_info=True)
            delay = min(delay * 2, RESEND_MAX)
            continue
        logger.info("broadcast of message %s to %s went out on a retry", event["id"], group)
        return
    logger.error(
        "gave up broadcasting message %s to %s; clients get it when they rejoin",
        event["id"],
        group,
    )


# --- presence: a room's joins and leaves of the moment, in one frame -------------------

# A join or leave waits this long for others in the same room. A storm of N
# joins to a room of N (every client reconnecting after a restart) is then a
# frame per tick for each socket, not N frames each: N**2 writes in all.
PRESENCE_TICK = 0.1


@dataclass(slots=True)
class _PresenceBatch:
    slug: str
    users: dict[str, bool] = field(default_factory=dict)  # user -> online now
    changes: dict[str, int] = field(default_factory=dict)  # user -> changes so far


# Per event loop (one per process in production; tests run several).
_presence_batches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def presence_changed(*, room_id: int, room_slug: str, user: str, online: bool) -> None:
    """`user` came online in the room or went offline: the room hears it within PRESENCE_TICK."""
    loop = asyncio.get_running_loop()
    batches = _presence_batches.setdefault(loop, {})
    batch = batches.get(room_id)
    if batch is None:
        batch = batches[room_id] = _PresenceBatch(room_slug)
        loop.call_later(PRESENCE_TICK, _presence_due, room_id)
    batch.users[user] = online
    batch.changes[user] = batch.changes.get(user, 0) + 1


def _presence_due(room_id: int) -> None:
    task = asyncio.get_running_loop().create_task(apresence_flush(room_id))
    _background.add(task)
    task.add_done_callback(_background.discard)


def _presence_event(room_id: int, slug: str, users: dict[str, bool]) -> dict:
    frame = protocol.presence_frame(
        room=slug,
        online=sorted(user for user, online in users.items() if online),
        offline=sorted(user for user, online in users.items() if not online),
    )
    return _room_event(room_id, frame, None)


def _joins_due_now(room_id: int) -> dict | None:
    """The room's pending joins as one event, taken; None if none. Its
    leaves wait for the tick, which checks them (apresence_flush)."""
    batch = _presence_batches.get(asyncio.get_running_loop(), {}).get(room_id)
    if batch is None or not any(batch.users.values()):
        return None
    joins = {user: online for user, online in batch.users.items() if online}
    for user in joins:
        del batch.users[user]
    return _presence_event(room_id, batch.slug, joins)


async def apresence_flush(room_id: int) -> None:
    """Send the room's pending joins and leaves now, if it has any.

    A leave whose user is online again by now is dropped: their new socket
    may be another process's, whose join can reach the room before this
    leave (each process sends its own after its own tick), and would be
    undone by it.
    """
    batches = _presence_batches.get(asyncio.get_running_loop(), {})
    batch = batches.get(room_id)
    if batch is None:
        return
    leaves = {user: batch.changes[user] for user, online in batch.users.items() if not online}
    if leaves:
        # The batch stays while this waits, so that a message meanwhile
        # still sends its joins first (_joins_due_now).
        back = set(await get_presence().online(room_id)) & set(leaves)
        if batches.get(room_id) is not batch:
            return  # flushed meanwhile
        for user in back:
            if batch.changes[user] == leaves[user]:  # not changed again since
                del batch.users[user]
    del batches[room_id]
    if batch.users:
        await _broadcast(room_id, [_presence_event(room_id, batch.slug, batch.users)])


def presence_without(event: dict, user: str) -> dict | None:
    """A presence event that names `user`, as `user`'s own sockets get it:
    without their coming or going (None if that was all of it)."""
    online = [other for other in event["online"] if other != user]
    offline = [other for other in event["offline"] if other != user]
    if not (online or offline):
        return None
    frame = protocol.presence_frame(room=event["room"], online=online, offline=offline)
    return {**event, "online": online, "offline": offline, "text": protocol.encode(frame)}


def room_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> bool:
    """aroom_broadcast for sync code (services, views, admin)."""
    return async_to_sync(aroom_broadcast)(room_id, frame, exclude=exclude)


def user_removed_from_room(user_id: int, *, room_slug: str, reason: str) -> bool:
    """Every socket of the user leaves the room at once (a ban)."""
    event = {"type": USER_REMOVED, "user_id": user_id, "room": room_slug, "reason": reason}
    return async_to_sync(_group_send)(USERS_GROUP, event)


def room_deleted(room_id: int, *, room_slug: str) -> bool:
    """Every socket in the room leaves it at once (the room was deleted)."""
    event = {"type": ROOM_DELETED, "room_id": room_id, "room": room_slug, "reason": "deleted"}
    return async_to_sync(_group_send)(USERS_GROUP, event)


def user_disconnect(user_id: int) -> bool:
    """Every socket of the user closes (a deactivated account)."""
    event = {"type": USER_DISCONNECT, "user_id": user_id}
    return async_to_sync(_group_send)(USERS_GROUP, event)
