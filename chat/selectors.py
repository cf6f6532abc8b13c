"""Reads: what the pages, the socket and the API show."""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Exists, Max, OuterRef, Q, QuerySet, Subquery

from chat.exceptions import MessageNotFound, RoomNotFound, UnknownUser
from chat.models import Membership, Message, Room

HISTORY_PAGE_SIZE = 50
# Rooms or members on one page of a list (the API's and the lobby's).
LIST_PAGE_SIZE = 50
CATCH_UP_PAGE_SIZE = 100


def room_get(*, slug: str) -> Room:
    try:
        return Room.objects.get(slug=slug)
    except Room.DoesNotExist:
        raise RoomNotFound(f"No room {slug!r}.") from None


def room_list_for_user(*, user: AbstractBaseUser) -> QuerySet[Room]:
    """The rooms to list for `user`: those visible to them, without the
    archived, by name (then age: a stable order for pages)."""
    return room_visible_to(user=user).filter(is_archived=False).order_by("name", "id")


def _my_membership(user: AbstractBaseUser) -> QuerySet[Membership]:
    # A banned member is an outsider: a private room vanishes for them.
    return Membership.objects.filter(user=user, is_banned=False)


def room_visible_to(*, user: AbstractBaseUser) -> QuerySet[Room]:
    """Public rooms and the private rooms the user belongs to, with
    `member_count` and `my_role` (None when not a member)."""
    mine = _my_membership(user).filter(room=OuterRef("pk"))
    return Room.objects.filter(Q(is_private=False) | Exists(mine)).annotate(
        member_count=Count("memberships"),
        my_role=Subquery(mine.values("role")[:1]),
    )


def room_get_visible(*, slug: str, user: AbstractBaseUser) -> Room:
    """The room as `user` may see it (annotated as in room_visible_to).

    A private room the user is not in does not exist for them: RoomNotFound,
    so that its existence is not told to outsiders.
    """
    try:
        return room_visible_to(user=user).get(slug=slug)
    except Room.DoesNotExist:
        raise RoomNotFound(f"No room {slug!r}.") from None


def room_get_readable(*, slug: str, user: AbstractBaseUser) -> Room:
    """The room, if `user` may read it (the rule of room_visible_to), unannotated.

    For reading history: counting a large room's members, as room_get_visible
    does, costs more than the page itself, and two plain lookups cost less
    than one query with the visibility subquery (measured in bench/history.py).
    """
    room = room_get(slug=slug)
    if room.is_private and not _my_membership(user).filter(room=room).exists():
        raise RoomNotFound(f"No room {slug!r}.")
    return room


def membership_role(*, user: AbstractBaseUser, room: Room) -> str | None:
    my_role = getattr(room, "my_role", None)
    if my_role is not None:
        return my_role  # annotated by room_get_visible
    memberships = Membership.objects.filter(user=user, room=room, is_banned=False)
    return memberships.values_list("role", flat=True).first()


def user_get(*, username: str) -> AbstractBaseUser:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise UnknownUser(f"No user {username!r}.") from None


def member_list(*, room: Room) -> QuerySet[Membership]:
    return room.memberships.select_related("user").order_by("joined_at", "id")


def member_get(*, room: Room, username: str) -> Membership:
    try:
        return room.memberships.select_related("user").get(user__username=username)
    except Membership.DoesNotExist:
        raise RoomNotFound(f"{username!r} is not a member of this room.") from None


def message_queryset(*, room: Room) -> QuerySet[Message]:
    """The room's visible (not hidden) messages with what their payload shows."""
    # Through the related manager, each message's `room` is this instance:
    # no join on the room for every page.
    return room.messages.filter(hidden_at__isnull=True).select_related("user")


def message_history(
    *, room: Room, before: int | None = None, after: int | None = None
) -> QuerySet[Message]:
    """The room's visible messages below id `before` and above `after`, to be
    ordered and paged by the caller (the API's cursor pagination, by seq).

    The id bounds become seq bounds inside the same statement: the number of
    the nearest visible message past the bound (seq order is id order within
    a room), so the page is one range of the (room, seq) index.
    """
    messages = message_queryset(room=room)
    visible_seqs = message_queryset(room=room).values("seq")
    if before is not None:
        last = visible_seqs.filter(id__lt=before).order_by("-id")[:1]
        messages = messages.filter(seq__lte=Subquery(last))
    if after is not None:
        first = visible_seqs.filter(id__gt=after).order_by("id")[:1]
        messages = messages.filter(seq__gte=Subquery(first))
    return messages


def message_get(*, room: Room, message_id: int) -> Message:
    try:
        return message_queryset(room=room).get(id=message_id)
    except Message.DoesNotExist:
        raise MessageNotFound(f"No message {message_id} in this room.") from None


def message_latest(*, room: Room, limit: int = HISTORY_PAGE_SIZE) -> list[Message]:
    """The room's latest `limit` messages, oldest first."""
    # By seq, not id: the (room, seq) index serves it whatever other rooms
    # stored since (see chat.api.pagination).
    newest_first = list(message_queryset(room=room).order_by("-seq")[:limit])
    newest_first.reverse()
    return newest_first


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[Message]  # oldest first
    # Every visible message numbered (seq) up to this is in `messages`, or
    # at or before the id the page was asked after.
    through: int
    # The room's last number when it was read: every message numbered up to
    # it had committed, and any later one is numbered above it.
    last: int


def message_page(*, room: Room, since: int | None) -> Page:
    """What a `join` sends: the latest messages, or the next catch-up page after id `since`.

    A full catch-up page (CATCH_UP_PAGE_SIZE) means there may be more.
    """
    # The room's last number, read before the page: every message numbered up
    # to it had committed (posts take their numbers one at a time, holding
    # the room until their commit), so the page holds all the visible ones.
    last_seq = room.messages.aggregate(last=Max("seq"))["last"] or 0
    if since is None:
        messages, more = message_latest(room=room), False
    else:
        messages = message_since(room=room, since=since)
        more = len(messages) >= CATCH_UP_PAGE_SIZE  # a full page: more may follow
    # Posts may have committed meanwhile: the page's last message is then the room's.
    last = max(last_seq, messages[-1].seq if messages else 0)
    # Complete up to the room's last number (hidden messages keep theirs), or
    # with more to follow, only up to this page's last message.
    return Page(messages, messages[-1].seq if more else last, last)


def message_since(*, room: Room, since: int, limit: int = CATCH_UP_PAGE_SIZE) -> list[Message]:
    """The first `limit` messages after id `since`, oldest first.

    A full page means there may be more: the caller asks again from its last id.
    """
    return list(message_queryset(room=room).filter(id__gt=since).order_by("id")[:limit])


def message_numbered(*, room_id: int, seqs: list[int]) -> list[Message]:
    """The room's visible messages with these numbers, in order: what a
    process's fan-out fills a gap with (chat.fanout)."""
    messages = Message.objects.filter(room_id=room_id, seq__in=seqs, hidden_at__isnull=True)
    return list(messages.select_related("room", "user").order_by("seq"))
