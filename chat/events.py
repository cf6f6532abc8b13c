"""Room broadcasts: the one place that talks to the channel layer's groups.

A room's sockets sit in the group `room.<id>`. Each event carries the frame
already encoded, so a room of N members costs one JSON encoding, not N.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import protocol

ROOM_EVENT = "room.frame"
# Events to every socket of one user (in every process): moderation's reach.
USER_REMOVED = "user.removed"
USER_DISCONNECT = "user.disconnect"


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


async def aroom_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> None:
    """Send `frame` to every socket in the room, except the channel `exclude`."""
    event = {"type": ROOM_EVENT, "text": protocol.encode(frame)}
    if exclude is not None:
        event["exclude"] = exclude
    await get_channel_layer().group_send(room_group(room_id), event)


def room_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> None:
    """aroom_broadcast for sync code (services, views, admin)."""
    async_to_sync(aroom_broadcast)(room_id, frame, exclude=exclude)


def user_removed_from_room(user_id: int, *, room_slug: str, reason: str) -> None:
    """Every socket of the user leaves the room at once (a ban)."""
    event = {"type": USER_REMOVED, "room": room_slug, "reason": reason}
    async_to_sync(get_channel_layer().group_send)(user_group(user_id), event)


def user_disconnect(user_id: int) -> None:
    """Every socket of the user closes (a deactivated account)."""
    async_to_sync(get_channel_layer().group_send)(user_group(user_id), {"type": USER_DISCONNECT})
