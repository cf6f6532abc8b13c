"""The send-rate tokens (chat.ratelimit), taken in the database thread."""

import socket
import threading
import time

import pytest
from channels.db import database_sync_to_async

from chat import services
from chat.ratelimit import RedisBuckets, get_send_buckets
from chat.sharedstate import THREAD_CLIENT_TIMEOUT
from tests.conftest import need_redis
from tests.factories import make_member, make_user
from tests.ws import connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_redis_that_does_not_answer_holds_the_thread_briefly_then_lets_posts_through():
    """A hung Redis must not hold the database thread, which every socket
    needs: the take gives up after THREAD_CLIENT_TIMEOUT and, as when Redis
    is down, allows (messages are stored without the limit)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        buckets = RedisBuckets(f"redis://127.0.0.1:{port}/0", "silent")
        verdicts = []
        took = threading.Thread(target=lambda: verdicts.extend(buckets.take_many([1, 2])))
        started = time.monotonic()
        took.start()
        took.join(timeout=10 * THREAD_CLIENT_TIMEOUT)
        waited = time.monotonic() - started
    assert not took.is_alive(), "the take is still waiting for Redis"
    assert [verdict.allowed for verdict in verdicts] == [True, True]
    assert waited >= THREAD_CLIENT_TIMEOUT * 0.9  # it did wait for an answer first


@pytest.mark.asyncio
async def test_a_rounds_tokens_are_taken_in_the_database_thread_just_before_its_insert(
    user, room, monkeypatch
):
    """From the event loop, a busy loop read Redis's answer late, and the
    whole round waited for it (docs/performance.md)."""
    need_redis()
    order = []
    original_take = get_send_buckets().take_many
    insert_many = services.message_insert_many

    def take_many(user_ids):
        order.append(("take", threading.get_ident()))
        return original_take(user_ids)

    def recording_insert_many(posts):
        order.append(("insert", threading.get_ident()))
        return insert_many(posts)

    monkeypatch.setattr(get_send_buckets(), "take_many", take_many)
    monkeypatch.setattr(services, "message_insert_many", recording_insert_many)
    await database_sync_to_async(make_member)(user, room)
    other = await database_sync_to_async(make_user)("bob")
    await database_sync_to_async(make_member)(other, room)
    async with connect(user) as alice, connect(other) as bob:
        for client in (alice, bob):
            await client.join(room.slug)
        await alice.post(room.slug, "hello", "c-1")
        assert (await bob.receive_until("message"))["body"] == "hello"
    assert [step for step, _ in order] == ["take", "insert"]
    assert len({thread for _, thread in order}) == 1
    assert order[0][1] != threading.get_ident()  # not the event loop's
