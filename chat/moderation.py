"""Moderation: rules and effects, for the admin, the API and the socket alike.

Each action checks who may take it (chat.roles), writes, records itself in
the audit log, and, once committed, reaches the people connected right now.
"""

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from chat import events, protocol, selectors
from chat.audit import Action, audit_record
from chat.exceptions import Forbidden, NotAMember
from chat.models import Membership, Message, Room
from chat.roles import (
    AUTHORITIES,
    OWNER,
    STAFF,
    Role,
    is_staff,
    outranks,
    require_moderator,
    require_role,
)

# --- rooms ------------------------------------------------------------------------------


@transaction.atomic
def room_set_locked(*, actor: AbstractBaseUser, room: Room, locked: bool, reason: str = "") -> None:
    """Lock (read-only for members) or unlock a room."""
    require_moderator(actor, room)
    room.is_locked = locked
    room.save(update_fields=["is_locked"])
    action = Action.ROOM_LOCK if locked else Action.ROOM_UNLOCK
    audit_record(actor=actor, action=action, room=room, reason=reason)
    _broadcast_room_state(room)


@transaction.atomic
def room_set_archived(
    *, actor: AbstractBaseUser, room: Room, archived: bool, reason: str = ""
) -> None:
    """Archive (read-only for everyone, out of room lists) or bring a room back."""
    require_role(actor, room, OWNER, "Only the room's owner may archive it.")
    room.is_archived = archived
    room.save(update_fields=["is_archived"])
    action = Action.ROOM_ARCHIVE if archived else Action.ROOM_UNARCHIVE
    audit_record(actor=actor, action=action, room=room, reason=reason)
    _broadcast_room_state(room)


def _broadcast_room_state(room: Room) -> None:
    frame = protocol.room_state_frame(room)
    transaction.on_commit(lambda: events.room_broadcast(room.id, frame))


# --- messages ----------------------------------------------------------------------------


@transaction.atomic
def message_hide(*, actor: AbstractBaseUser, message: Message, reason: str = "") -> None:
    """Hide a message: gone from every history and from open screens.

    Its author may hide their own message (deleting it); moderators any in
    their rooms.
    """
    if message.user_id == actor.pk:
        action = Action.MESSAGE_DELETE
    else:
        require_moderator(actor, message.room)
        action = Action.MESSAGE_HIDE
    if message.hidden_at is not None:
        return
    message.hidden_at = timezone.now()
    message.hidden_by = actor
    message.save(update_fields=["hidden_at", "hidden_by"])
    audit_record(
        actor=actor,
        action=action,
        room=message.room,
        target_user=message.user,
        message=message,
        reason=reason,
    )
    frame = protocol.message_deleted_frame(room=message.room.slug, message_id=message.id)
    transaction.on_commit(lambda: events.room_broadcast(message.room_id, frame))


@transaction.atomic
def message_unhide(*, actor: AbstractBaseUser, message: Message, reason: str = "") -> None:
    """Bring a hidden message back into history (open screens see it on reload)."""
    require_moderator(actor, message.room)
    if message.hidden_at is None:
        return
    message.hidden_at = None
    message.hidden_by = None
    message.save(update_fields=["hidden_at", "hidden_by"])
    audit_record(
        actor=actor,
        action=Action.MESSAGE_UNHIDE,
        room=message.room,
        target_user=message.user,
        message=message,
        reason=reason,
    )


def message_delete(
    *, user: AbstractBaseUser, room: Room, message_id: int, reason: str = ""
) -> None:
    """The socket's and API's `delete`: hide one visible message of the room."""
    message = selectors.message_get(room=room, message_id=message_id)
    message_hide(actor=user, message=message, reason=reason)


# --- people ---------------------------------------------------------------------------------


@transaction.atomic
def member_mute(
    *,
    actor: AbstractBaseUser,
    room: Room,
    user: AbstractBaseUser,
    until: datetime | None,
    reason: str = "",
) -> Membership:
    """Mute `user` in `room` until `until` (None unmutes). Their sends get `muted`."""
    held = require_moderator(actor, room)
    # A mute makes no member of a private room: a membership there is access.
    membership = _target_membership(actor, room, user, create=not room.is_private)
    if membership.is_muted and membership.mute_authority:
        _require_as_much(held, membership.mute_authority, "change this mute")
    membership.muted_until = until
    membership.mute_authority = held if until is not None else ""
    membership.save(update_fields=["muted_until", "mute_authority"])
    action = Action.MEMBER_MUTE if until is not None else Action.MEMBER_UNMUTE
    detail = {"until": until.isoformat()} if until is not None else {}
    audit_record(actor=actor, action=action, room=room, target_user=user, reason=reason, **detail)
    return membership


@transaction.atomic
def member_ban(
    *, actor: AbstractBaseUser, room: Room, user: AbstractBaseUser, reason: str = ""
) -> Membership:
    """Ban `user` from `room`: their sockets leave it now, and they cannot rejoin."""
    held = require_moderator(actor, room)
    # A ban may come first, in any room: a banned row gives no access.
    membership = _target_membership(actor, room, user, create=True)
    if membership.is_banned and membership.ban_authority:
        # Banned again (a new reason) by less authority: the ban keeps the
        # higher, or banning again would be a way to lift it.
        held = max(held, membership.ban_authority, key=AUTHORITIES.index)
    membership.is_banned = True
    membership.ban_authority = held
    membership.role = Role.MEMBER
    membership.save(update_fields=["is_banned", "ban_authority", "role"])
    audit_record(actor=actor, action=Action.MEMBER_BAN, room=room, target_user=user, reason=reason)
    slug, why = room.slug, reason or "banned"
    transaction.on_commit(
        lambda: events.user_removed_from_room(user.pk, room_slug=slug, reason=why)
    )
    return membership


@transaction.atomic
def member_unban(
    *, actor: AbstractBaseUser, room: Room, user: AbstractBaseUser, reason: str = ""
) -> None:
    """Lift `user`'s ban in `room`: it takes the authority the ban was made
    with (a ban demotes an owner to member, so a moderator would otherwise
    lift staff's ban of the owner)."""
    held = require_moderator(actor, room)
    membership = (
        Membership.objects.select_for_update().filter(room=room, user=user, is_banned=True).first()
    )
    if membership is None:
        return
    if membership.ban_authority:
        _require_as_much(held, membership.ban_authority, "lift this ban")
    membership.is_banned = False
    membership.ban_authority = ""
    membership.save(update_fields=["is_banned", "ban_authority"])
    audit_record(
        actor=actor, action=Action.MEMBER_UNBAN, room=room, target_user=user, reason=reason
    )


# Who has at least each authority, for the refusals.
_AS_MUCH = {
    Role.MODERATOR: "the room's owner or moderators",
    Role.OWNER: "the room's owner or staff",
    STAFF: "staff",
}


def _require_as_much(held: str, needed: str, what: str) -> None:
    """A ban or a running mute is changed only with the authority it was made
    with (`held` is the actor's): a moderator does not undo the owner's or staff's."""
    if not outranks(held, needed):
        raise Forbidden(f"Only {_AS_MUCH[needed]} may {what}.")


def _target_membership(
    actor: AbstractBaseUser, room: Room, user: AbstractBaseUser, *, create: bool
) -> Membership:
    """The membership a mute or ban applies to, made if `create` (a public
    room's passer-by, who may join at any time).

    Only staff moderate the owner, and only the owner or staff a moderator.
    """
    if create:
        membership, _ = Membership.objects.get_or_create(room=room, user=user)
    else:
        try:
            membership = Membership.objects.get(room=room, user=user)
        except Membership.DoesNotExist:
            raise NotAMember(f"{user.get_username()} is not a member of this room.") from None
    if membership.role == Role.OWNER and not is_staff(actor):
        raise Forbidden("Only staff may moderate the room's owner.")
    if membership.role == Role.MODERATOR:
        require_role(actor, room, OWNER, "Only the owner may moderate a moderator.")
    if user.pk == actor.pk:
        raise Forbidden("You cannot moderate yourself.")
    return membership


@transaction.atomic
def user_set_active(
    *, actor: AbstractBaseUser, user: AbstractBaseUser, active: bool, reason: str = ""
) -> None:
    """Deactivate an account (staff only): every socket of it closes now, in
    every process, and its tokens stop working. Or reactivate it."""
    if not is_staff(actor):
        raise Forbidden("Only staff may deactivate accounts.")
    if user.pk == actor.pk:
        raise Forbidden("You cannot deactivate yourself.")
    user.is_active = active
    user.save(update_fields=["is_active"])
    action = Action.USER_REACTIVATE if active else Action.USER_DEACTIVATE
    audit_record(actor=actor, action=action, target_user=user, reason=reason)
    if not active:
        # Access tokens already fail (an inactive user does not authenticate);
        # refresh tokens must not mint new ones after a reactivation either.
        for token in OutstandingToken.objects.filter(user=user):
            BlacklistedToken.objects.get_or_create(token=token)
        user_id = user.pk
        transaction.on_commit(lambda: events.user_disconnect(user_id))
