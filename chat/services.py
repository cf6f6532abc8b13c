"""Writes: every change to rooms, memberships and messages goes through here.

The consumer, the REST API and the admin all call these functions, so a rule
(who may post, how long a message may be) is written once.
"""

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from chat import events, protocol
from chat.exceptions import BodyTooLong, EmptyBody, Forbidden
from chat.models import BODY_MAX_LENGTH, Membership, Message, Room


def room_join(*, user: AbstractBaseUser, room: Room) -> Membership:
    """Make `user` a member of `room`; private rooms admit existing members only."""
    if room.is_private:
        try:
            return Membership.objects.get(user=user, room=room)
        except Membership.DoesNotExist:
            raise Forbidden("This room is private; only its members may join.") from None
    membership, _ = Membership.objects.get_or_create(user=user, room=room)
    return membership


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
