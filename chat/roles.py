"""Who may manage a room: its owner and moderators, and staff everywhere."""

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from chat.exceptions import Forbidden
from chat.models import Membership, Room
from chat.selectors import membership_role

Role = Membership.Role
MANAGERS = frozenset({Role.OWNER, Role.MODERATOR})
OWNER = frozenset({Role.OWNER})
STAFF = "staff"
# The authority a ban or a mute is made with, lowest first: undoing it takes
# as much, so that a room's moderator does not undo staff's, nor the owner's.
AUTHORITIES = (Role.MODERATOR, Role.OWNER, STAFF)


def is_staff(user: AbstractBaseUser) -> bool:
    return bool(getattr(user, "is_staff", False)) and user.is_active


def require_role(user: AbstractBaseUser, room: Room, roles: frozenset[str], detail: str) -> None:
    """Raise Forbidden unless `user` is staff or holds one of `roles` in `room`."""
    if is_staff(user):
        return
    if membership_role(user=user, room=room) not in roles:
        raise Forbidden(detail)


def require_moderator(user: AbstractBaseUser, room: Room) -> str:
    """Raise Forbidden unless `user` is staff or the room's owner or a
    moderator; their authority there (one of AUTHORITIES)."""
    if is_staff(user):
        return STAFF
    role = membership_role(user=user, room=room)
    if role not in MANAGERS:
        raise Forbidden("Only the room's owner or moderators may do this.")
    return role


def outranks(held: str, needed: str) -> bool:
    """`held` is at least the authority `needed`."""
    return AUTHORITIES.index(held) >= AUTHORITIES.index(needed)


def rooms_moderated_by(user: AbstractBaseUser) -> QuerySet[Room]:
    if is_staff(user):
        return Room.objects.all()
    return Room.objects.filter(
        memberships__user=user, memberships__role__in=MANAGERS, memberships__is_banned=False
    )
