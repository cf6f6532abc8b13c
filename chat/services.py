"""Writes: every change to rooms, memberships and messages goes through here.

The consumer, the REST API and the admin all call these functions, so a rule
(who may post, how long a message may be, who may add members) is written once.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat import events, protocol
from chat.exceptions import (
    BodyTooLong,
    EmptyBody,
    Forbidden,
    InvalidRoomName,
    OwnerCannotLeave,
    RoomExists,
    UserNotFound,
)
from chat.models import BODY_MAX_LENGTH, Membership, Message, Room
from chat.selectors import membership_role

Role = Membership.Role
MANAGERS = {Role.OWNER, Role.MODERATOR}

# --- rooms ------------------------------------------------------------------------------


def room_create(
    *,
    user: AbstractBaseUser,
    name: str,
    slug: str = "",
    description: str = "",
    is_private: bool = False,
) -> Room:
    """Create a room; its creator becomes its owner."""
    slug = slug or slugify(name)[:50]
    if not slug:
        raise InvalidRoomName()
    try:
        with transaction.atomic():
            room = Room.objects.create(
                slug=slug,
                name=name,
                description=description,
                is_private=is_private,
                created_by=user,
            )
            Membership.objects.create(user=user, room=room, role=Role.OWNER)
    except IntegrityError:
        raise RoomExists(f"A room {slug!r} already exists.") from None
    return room


def room_update(*, user: AbstractBaseUser, room: Room, **fields: object) -> Room:
    """Change a room's name, description or privacy: its owner (or staff) only."""
    _require_role(user, room, {Role.OWNER}, "Only the room's owner may change it.")
    for field, value in fields.items():
        setattr(room, field, value)
    room.save(update_fields=list(fields))
    return room


def room_delete(*, user: AbstractBaseUser, room: Room) -> None:
    _require_role(user, room, {Role.OWNER}, "Only the room's owner may delete it.")
    room.delete()


# --- memberships ----------------------------------------------------------------------------


def room_join(*, user: AbstractBaseUser, room: Room) -> Membership:
    """Make `user` a member of `room`; private rooms admit existing members only."""
    if room.is_private:
        try:
            return Membership.objects.get(user=user, room=room)
        except Membership.DoesNotExist:
            raise Forbidden("This room is private; only its members may join.") from None
    membership, _ = Membership.objects.get_or_create(user=user, room=room)
    return membership


def member_add(
    *, actor: AbstractBaseUser, room: Room, username: str, role: str = Role.MEMBER
) -> tuple[Membership, bool]:
    """Add someone to a room (owner or moderator); only the owner hands out roles.

    Returns (membership, created); adding an existing member changes nothing.
    """
    _require_role(actor, room, MANAGERS, "Only the room's owner or moderators may add members.")
    if role != Role.MEMBER:
        _require_role(actor, room, {Role.OWNER}, "Only the room's owner may appoint moderators.")
    if role == Role.OWNER:
        raise Forbidden("A room has one owner.")
    try:
        user = get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise UserNotFound(f"No active user {username!r}.") from None
    return Membership.objects.get_or_create(user=user, room=room, defaults={"role": role})


def member_remove(*, actor: AbstractBaseUser, room: Room, membership: Membership) -> None:
    """Remove a member: themselves (leaving), or by the owner or a moderator.

    Moderators may remove members but not other moderators; nobody removes the owner.
    """
    if membership.role == Role.OWNER:
        raise OwnerCannotLeave()
    if membership.user_id != actor.pk:
        needed = {Role.OWNER} if membership.role == Role.MODERATOR else MANAGERS
        _require_role(actor, room, needed, "You may not remove this member.")
    membership.delete()


def room_leave(*, user: AbstractBaseUser, room: Room) -> None:
    try:
        membership = Membership.objects.get(user=user, room=room)
    except Membership.DoesNotExist:
        return  # not a member: leaving is already done
    member_remove(actor=user, room=room, membership=membership)


# --- messages -------------------------------------------------------------------------------


def message_validate_body(body: str) -> None:
    if not body.strip():
        raise EmptyBody()
    if len(body) > BODY_MAX_LENGTH:
        raise BodyTooLong(f"A message may hold at most {BODY_MAX_LENGTH} characters.")


def message_post(
    *, user: AbstractBaseUser, room: Room, body: str, client_id: str | None = None
) -> tuple[Message, bool]:
    """Store a message and, once committed, broadcast it to the room.

    Returns (message, created). A repeated (user, client_id) is not stored
    again: the first message comes back with created=False and nothing is
    broadcast, so a client may resend freely after a lost acknowledgement.
    """
    message_validate_body(body)
    if not Membership.objects.filter(user=user, room=room).exists():
        raise Forbidden("Only members of this room may post in it.")
    try:
        with transaction.atomic():
            message = Message.objects.create(room=room, user=user, body=body, client_id=client_id)
            frame = protocol.message_frame(message)
            # After commit: a rolled-back message must never reach a screen.
            transaction.on_commit(lambda: events.room_broadcast(room.id, frame))
    except IntegrityError:
        if client_id is None:
            raise
        existing = Message.objects.select_related("room", "user").get(
            user=user, client_id=client_id
        )
        return existing, False
    return message, True


def _require_role(user: AbstractBaseUser, room: Room, roles: set[str], detail: str) -> None:
    if getattr(user, "is_staff", False):
        return  # staff moderate every room
    if membership_role(user=user, room=room) not in roles:
        raise Forbidden(detail)
