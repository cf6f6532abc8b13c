"""Each room numbers its messages 1, 2, 3... in commit order (Message.seq), so that
clients can tell a missing message from a message of another room."""

import threading
import time

import psycopg
import pytest
from asgiref.sync import async_to_sync
from django.db import connection

from chat import protocol, services
from chat.asyncdb import close_loop_connection
from chat.models import Message, RoomSequence
from tests.concurrency import run_at_once
from tests.conftest import need_postgres
from tests.factories import make_member, make_room, make_user


@pytest.mark.django_db
def test_messages_are_numbered_per_room(user, room):
    other = make_room("other")
    make_member(user, room)
    make_member(user, other)
    posted = [
        services.message_post(user=user, room=target, body="hi", broadcast=False)[0]
        for target in (room, room, other, room)
    ]
    assert [m.seq for m in posted] == [1, 2, 1, 3]
    assert [m.seq for m in Message.objects.order_by("id")] == [1, 2, 1, 3]
    assert protocol.message_frame(posted[-1])["seq"] == 3


@pytest.mark.django_db
def test_a_resent_client_id_keeps_its_number(user, room):
    make_member(user, room)
    first, _ = services.message_post(user=user, room=room, body="hi", client_id="c-1")
    again, created = services.message_post(user=user, room=room, body="hi", client_id="c-1")
    assert (created, again.id, again.seq) == (False, first.id, 1)


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_take_distinct_numbers_in_commit_order(room):
    need_postgres()
    users = [make_user(f"writer{i}") for i in range(4)]
    for user in users:
        make_member(user, room)

    def post_many(user):
        for i in range(15):
            services.message_post(user=user, room=room, body=f"{user.username} {i}")

    assert run_at_once(post_many, [(user,) for user in users]) == []
    rows = list(Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True))
    # No gaps, no repeats, and id order is seq order.
    assert rows == list(range(1, 61))


async def _on_a_loop(posts: list[dict]) -> list:
    try:
        return await services.amessage_insert_many(posts)
    finally:
        close_loop_connection()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "insert_many",
    [services.message_insert_many, async_to_sync(_on_a_loop)],
    ids=["database thread", "event loop"],
)
def test_a_round_whose_number_another_took_meanwhile_runs_again(
    insert_many, user, room, monkeypatch
):
    """Another process's insert commits the room's next number after this
    round read the last one: the round's insert fails on the number, and the
    round runs again with a fresh read, rather than leaving its posts to be
    stored one by one (two statements each, in the database thread)."""
    need_postgres()
    make_member(user, room)
    services.message_insert_many([_post(user, room, "first")])  # and its sender's bucket
    one_by_one = []
    each = services._message_insert_each

    def recording_each(posts, indexes, **kwargs):
        one_by_one.extend(posts[index]["body"] for index in indexes)
        return each(posts, indexes, **kwargs)

    monkeypatch.setattr(services, "_message_insert_each", recording_each)
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params) as other_process:  # a transaction, left open
        other_process.execute(
            f"INSERT INTO {Message._meta.db_table} (room_id, user_id, body, created_at, seq)"  # noqa: S608
            " VALUES (%s, %s, 'from elsewhere', now(), 2)",
            [room.id, user.id],
        )
        outcomes = []
        thread = threading.Thread(
            target=lambda: outcomes.extend(insert_many([_post(user, room, "this round")]))
        )
        thread.start()
        _wait_until_blocked(thread)  # the round's insert waits for number 2
        other_process.commit()
        thread.join(10)
    assert one_by_one == []
    assert [(m.body, m.seq) for m in outcomes] == [("this round", 3)]
    rows = Message.objects.order_by("id").values_list("body", "seq")
    assert list(rows) == [("first", 1), ("from elsewhere", 2), ("this round", 3)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "insert_many",
    [services.message_insert_many, async_to_sync(_on_a_loop)],
    ids=["database thread", "event loop"],
)
def test_a_round_waits_for_another_rounds_numbers_instead_of_failing(
    insert_many, user, room, monkeypatch
):
    """Two processes' rounds in one room: the room's counter (RoomSequence)
    makes the second wait for the first's commit and number after it. It
    does not read the same last number and fail on it."""
    need_postgres()
    make_member(user, room)
    services.message_insert_many([_post(user, room, "first")])
    assert RoomSequence.objects.get(room=room).last_seq == 1
    failures = []  # statements that failed on a number taken meanwhile
    numbers_taken = services._numbers_taken
    monkeypatch.setattr(
        services, "_numbers_taken", lambda exc: failures.append(exc) or numbers_taken(exc)
    )
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params) as other_process:  # its round, not yet committed
        other_process.execute(
            f"UPDATE {RoomSequence._meta.db_table} SET last_seq = 2 WHERE room_id = %s",  # noqa: S608
            [room.id],
        )
        other_process.execute(
            f"INSERT INTO {Message._meta.db_table} (room_id, user_id, body, created_at, seq)"  # noqa: S608
            " VALUES (%s, %s, 'from elsewhere', now(), 2)",
            [room.id, user.id],
        )
        outcomes = []
        thread = threading.Thread(
            target=lambda: outcomes.extend(insert_many([_post(user, room, "this round")]))
        )
        thread.start()
        _wait_until_blocked(thread)  # the round waits for the other's counter
        other_process.commit()
        thread.join(10)
    assert failures == []
    assert [(m.body, m.seq) for m in outcomes] == [("this round", 3)]
    assert RoomSequence.objects.get(room=room).last_seq == 3


@pytest.mark.django_db(transaction=True)
def test_rounds_advance_each_rooms_counter_by_their_posts(user, room):
    need_postgres()
    other = make_room("other")
    make_member(user, room)
    make_member(user, other)
    services.message_insert_many([_post(user, room, "a"), _post(user, other, "b")])
    services.message_insert_many([_post(user, room, "c"), _post(user, room, "d")])
    counters = dict(RoomSequence.objects.values_list("room_id", "last_seq"))
    assert counters == {room.id: 3, other.id: 1}
    numbers = Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True)
    assert list(numbers) == [1, 2, 3]


def _wait_until_blocked(thread: threading.Thread) -> None:
    for _ in range(500):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE %s",
                ["%unnest%"],
            )
            if cursor.fetchone()[0]:
                return
        assert thread.is_alive()
        time.sleep(0.01)
    raise AssertionError("the round never waited for the other insert")


def _post(user, room, body: str) -> dict:
    return {"user": user, "room": room, "body": body, "client_id": None}
