"""Reads: what the pages, the socket and the API show."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from chat.exceptions import RoomNotFound
from chat.models import Message, Room

HISTORY_PAGE_SIZE = 50
CATCH_UP_PAGE_SIZE = 100


def room_get(*, slug: str) -> Room:
    try:
        return Room.objects.get(slug=slug)
    except Room.DoesNotExist:
        raise RoomNotFound(f"No room {slug!r}.") from None


def room_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Room]:
    """Public rooms, and the private rooms the user belongs to."""
    return Room.objects.filter(Q(is_private=False) | Q(memberships__user=user)).distinct()


def room_is_visible_to(*, room: Room, user: AbstractBaseUser) -> bool:
    return not room.is_private or room.memberships.filter(user=user).exists()


def message_latest(*, room: Room, limit: int = HISTORY_PAGE_SIZE) -> list[Message]:
    """The room's latest `limit` messages, oldest first."""
    newest_first = list(
        Message.objects.filter(room=room).select_related("room", "user").order_by("-id")[:limit]
    )
    newest_first.reverse()
    return newest_first


def message_since(*, room: Room, since: int, limit: int = CATCH_UP_PAGE_SIZE) -> list[Message]:
    """The first `limit` messages after id `since`, oldest first.

    A full page means there may be more: the caller asks again from its last id.
    """
    return list(
        Message.objects.filter(room=room, id__gt=since)
        .select_related("room", "user")
        .order_by("id")[:limit]
    )
