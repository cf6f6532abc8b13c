"""Room broadcasts: the one place that talks to the channel layer's groups.

A room's sockets sit in the group `room.<id>`. Each event carries the frame
already encoded, so a room of N members costs one JSON encoding, not N.
"""

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chat import protocol

ROOM_EVENT = "room.frame"


def room_group(room_id: int) -> str:
    return f"room.{room_id}"


async def aroom_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> None:
    """Send `frame` to every socket in the room, except the channel `exclude`."""
    event = {"type": ROOM_EVENT, "text": protocol.encode(frame)}
    if exclude is not None:
        event["exclude"] = exclude
    await get_channel_layer().group_send(room_group(room_id), event)


def room_broadcast(room_id: int, frame: dict, *, exclude: str | None = None) -> None:
    """aroom_broadcast for sync code (services, views, admin)."""
    async_to_sync(aroom_broadcast)(room_id, frame, exclude=exclude)
