"""A socket's message, stored with the other posts of its turn of the event loop.

Under load, a turn brings posts from many sockets. Each takes a token from its
sender's send-rate bucket (chat.ratelimit) and is inserted. One by one, that
is a PostgreSQL round trip and commit per message (and a hop to the database
thread and back), and the loop's share of each is what a busy process runs
out of first (docs/performance.md). Here a round serves every post that came
while the one before it was busy (chat.batching.Batch), with one statement
that takes their tokens and stores them, run by the event loop itself on
PostgreSQL (services.amessage_insert_many). A lone post is a round of its
own, at once.
"""

import weakref
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser

from chat import services
from chat.batching import Batch, database_call
from chat.exceptions import RateLimited
from chat.models import Message, Room
from chat.sharedstate import per_loop


@dataclass(eq=False, slots=True)  # a post: compared by identity, never merged
class _Post:
    user: AbstractBaseUser
    room: Room
    body: str
    client_id: str | None

    def fields(self) -> dict:
        return {
            "user": self.user,
            "room": self.room,
            "body": self.body,
            "client_id": self.client_id,
        }


async def _store_round(posts: list[_Post]) -> dict[_Post, Message | RateLimited | None]:
    """Each post: its message, RateLimited, or None (message_post decides)."""
    outcomes = await services.amessage_insert_many([post.fields() for post in posts])
    return dict(zip(posts, outcomes, strict=True))


_rounds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # per event loop


async def post_message(
    *, user: AbstractBaseUser, room: Room, body: str, client_id: str | None
) -> Message:
    """services.message_post(broadcast=False) for a socket, behind the
    sender's send-rate limit (RateLimited), with the posts of its turn. The
    message returned, new or resent, is the caller's to broadcast."""
    post = _Post(user, room, body, client_id)
    outcome = await per_loop(_rounds, lambda: Batch(_store_round)).get(post)
    if isinstance(outcome, RateLimited):
        raise outcome
    if outcome is None:  # message_post says why not, or finds the resent message
        outcome, _ = await database_call(services.message_post, **post.fields(), broadcast=False)
    return outcome
