"""Small factories: the objects a test needs, with defaults it does not care about."""

import functools
import itertools

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Max

from chat.models import Membership, Message, Room

_sequence = itertools.count(1)
PASSWORD = "correct-horse-battery-9"


@functools.cache
def _password_hash() -> str:
    # Hashing is slow on purpose; every test user shares one hash of PASSWORD.
    return make_password(PASSWORD)


def make_user(username: str | None = None, **fields) -> AbstractBaseUser:
    username = username or f"user{next(_sequence)}"
    return get_user_model().objects.create(username=username, password=_password_hash(), **fields)


def make_room(slug: str | None = None, **fields) -> Room:
    slug = slug or f"room-{next(_sequence)}"
    fields.setdefault("name", slug.replace("-", " ").title())
    return Room.objects.create(slug=slug, **fields)


def make_member(
    user: AbstractBaseUser, room: Room, role: str = Membership.Role.MEMBER
) -> Membership:
    return Membership.objects.create(user=user, room=room, role=role)


def make_messages(room: Room, user: AbstractBaseUser, count: int) -> list[Message]:
    last = room.messages.aggregate(last=Max("seq"))["last"] or 0
    return Message.objects.bulk_create(
        Message(room=room, user=user, body=f"message {i}", seq=last + 1 + i) for i in range(count)
    )
