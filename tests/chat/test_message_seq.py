"""Each room numbers its messages 1, 2, 3... in commit order (Message.seq), so that
clients can tell a missing message from a message of another room."""

import threading

import pytest

from chat import protocol, services
from chat.models import Message, RoomSequence
from tests.concurrency import another_session, run_at_once, wait_until_blocked
from tests.conftest import need_postgres
from tests.factories import make_member, make_room, make_user
from tests.rounds import insert_round


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


@pytest.mark.django_db(transaction=True)
def test_a_round_whose_number_another_took_meanwhile_runs_again(user, room, monkeypatch):
    """Another process's insert commits the room's next number after this
    round read the last one: the round's insert fails on the number, and the
    round runs again with a fresh read, rather than leaving its posts to be
    stored one by one (two statements each, in the database thread)."""
    need_postgres()
    make_member(user, room)
    insert_round([_post(user, room, "first")])  # and its sender's bucket
    one_by_one = []
    each = services._message_insert_each

    def recording_each(posts, indexes, **kwargs):
        one_by_one.extend(posts[index]["body"] for index in indexes)
        return each(posts, indexes, **kwargs)

    monkeypatch.setattr(services, "_message_insert_each", recording_each)
    outcomes = _round_beside_another(
        [_post(user, room, "this round")],
        # Its insert, not yet committed: the round's waits for number 2.
        f"INSERT INTO {Message._meta.db_table} (room_id, user_id, body, created_at, seq)"  # noqa: S608
        f" VALUES ({room.id}, {user.id}, 'from elsewhere', now(), 2)",
    )
    assert one_by_one == []
    assert [(m.body, m.seq) for m in outcomes] == [("this round", 3)]
    rows = Message.objects.order_by("id").values_list("body", "seq")
    assert list(rows) == [("first", 1), ("from elsewhere", 2), ("this round", 3)]


@pytest.mark.django_db(transaction=True)
def test_a_round_waits_for_another_rounds_numbers_instead_of_failing(user, room, monkeypatch):
    """Two processes' rounds in one room: the room's counter (RoomSequence)
    makes the second wait for the first's commit and number after it. It
    does not read the same last number and fail on it."""
    need_postgres()
    make_member(user, room)
    insert_round([_post(user, room, "first")])
    assert RoomSequence.objects.get(room=room).last_seq == 1
    failures = []  # statements that failed on a number taken meanwhile
    numbers_taken = services._numbers_taken
    monkeypatch.setattr(
        services, "_numbers_taken", lambda exc: failures.append(exc) or numbers_taken(exc)
    )
    outcomes = _round_beside_another(
        [_post(user, room, "this round")],
        # Its round, not yet committed: this one waits for the counter.
        f"UPDATE {RoomSequence._meta.db_table} SET last_seq = 2 WHERE room_id = {room.id}",  # noqa: S608
        f"INSERT INTO {Message._meta.db_table} (room_id, user_id, body, created_at, seq)"  # noqa: S608
        f" VALUES ({room.id}, {user.id}, 'from elsewhere', now(), 2)",
    )
    assert failures == []
    assert [(m.body, m.seq) for m in outcomes] == [("this round", 3)]
    assert RoomSequence.objects.get(room=room).last_seq == 3


@pytest.mark.django_db(transaction=True)
def test_rounds_advance_each_rooms_counter_by_their_posts(user, room):
    need_postgres()
    other = make_room("other")
    make_member(user, room)
    make_member(user, other)
    insert_round([_post(user, room, "a"), _post(user, other, "b")])
    insert_round([_post(user, room, "c"), _post(user, room, "d")])
    counters = dict(RoomSequence.objects.values_list("room_id", "last_seq"))
    assert counters == {room.id: 3, other.id: 1}
    numbers = Message.objects.filter(room=room).order_by("id").values_list("seq", flat=True)
    assert list(numbers) == [1, 2, 3]


def _round_beside_another(posts: list[dict], *statements: str) -> list:
    """`insert_round(posts)` in a thread while another session has run
    `statements` in a transaction: once the round waits for that session,
    it commits. The round's outcomes."""
    outcomes = []
    with another_session() as other_process:
        for statement in statements:
            other_process.execute(statement)
        thread = threading.Thread(target=lambda: outcomes.extend(insert_round(posts)))
        thread.start()
        wait_until_blocked(thread, statement_like="%unnest%")
        other_process.commit()
        thread.join(10)
    return outcomes


def _post(user, room, body: str) -> dict:
    return {"user": user, "room": room, "body": body, "client_id": None}


@pytest.mark.django_db(transaction=True)
def test_a_rounds_message_is_the_one_read_back(user, room, django_assert_num_queries):
    """The round builds each Message from what it knows (Message.stored), not
    from a read: the same fields as the stored row, its room and author
    attached, and saved (not adding) on the default database."""
    need_postgres()
    make_member(user, room)
    (message,) = insert_round([_post(user, room, "hello") | {"client_id": "c-1"}])
    stored = Message.objects.get(pk=message.pk)
    fields = [field.attname for field in Message._meta.concrete_fields]
    assert [getattr(message, name) for name in fields] == [getattr(stored, name) for name in fields]
    assert (message.body, message.client_id, message.hidden_at) == ("hello", "c-1", None)
    assert (message._state.adding, message._state.db) == (False, "default")
    with django_assert_num_queries(0):
        assert message.room is room
        assert message.user is user
