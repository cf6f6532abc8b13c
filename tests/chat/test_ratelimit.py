"""The send rate (chat.ratelimit): a bucket per user in the database, taken
with the posts it guards."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.exceptions import RateLimited
from chat.models import Message, SendRate
from chat.ratelimit import send_rate_params
from tests.concurrency import run_at_once
from tests.conftest import need_postgres
from tests.factories import make_member, make_room, make_user
from tests.rounds import insert_round, record_loop_statements

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def burst_of_three(settings):
    # A token every 10 s: none comes back during a test, even on a slow machine.
    settings.SEND_RATE = 0.1
    settings.SEND_BURST = 3.0


def _posts(member_room, *users) -> list[dict]:
    return [
        {"user": user, "room": member_room, "body": f"from {user.username}", "client_id": None}
        for user in users
    ]


def _kinds(outcomes) -> list[str]:
    return [type(outcome).__name__ for outcome in outcomes]


def _assert_stored_or_left(outcomes, users, expected: int) -> None:
    """`expected` messages of `users` went through: stored, or left to
    message_post (None), which stores them."""
    left = [outcome for outcome in outcomes if outcome is None]
    assert Message.objects.filter(user__in=users).count() + len(left) == expected


def test_a_new_sender_has_a_full_bucket_then_is_refused_with_the_wait(burst_of_three, user, room):
    make_member(user, room)
    outcomes = [insert_round(_posts(room, user))[0] for _ in range(4)]
    assert _kinds(outcomes) == ["Message", "Message", "Message", "RateLimited"]
    # The next token is 10 s away, less the moment the posts took.
    assert 9 < outcomes[-1].extra["retry_after"] <= 10
    assert Message.objects.count() == 3


def test_a_senders_posts_in_one_round_take_tokens_in_order_until_none_is_left(
    burst_of_three, user, other_user, room
):
    make_member(user, room)
    make_member(other_user, room)
    insert_round(_posts(room, user, other_user))  # both have a bucket now
    outcomes = insert_round(_posts(room, user, other_user, user, user, other_user))
    # user had two tokens left, other_user two: the third post of user is refused.
    assert _kinds(outcomes) == ["Message", "Message", "Message", "RateLimited", "Message"]
    assert [message.seq for message in outcomes if isinstance(message, Message)] == [3, 4, 5, 6]


def test_tokens_come_back_at_the_rate(burst_of_three, user, room):
    make_member(user, room)
    insert_round(_posts(room, user))
    # As if the bucket had been emptied just under one token's time (10 s) ago...
    SendRate.objects.filter(user=user).update(full_at=time.time() + 20 + 10 - 9.5)
    refused = insert_round(_posts(room, user))[0]
    assert isinstance(refused, RateLimited)
    assert 0 < refused.extra["retry_after"] <= 0.5
    # ...and just over.
    SendRate.objects.filter(user=user).update(full_at=time.time() + 20 + 10 - 10.5)
    assert isinstance(insert_round(_posts(room, user))[0], Message)


def test_a_resend_is_answered_as_stored_even_with_no_token_left(burst_of_three, user, room):
    make_member(user, room)
    first = {"user": user, "room": room, "body": "hi", "client_id": "c-1"}
    assert _kinds(insert_round([first, *_posts(room, user, user)])) == ["Message"] * 3
    # No token left: a new post is refused, the resend is left to message_post...
    assert _kinds(insert_round([*_posts(room, user), first])) == ["RateLimited", "NoneType"]
    # ...which answers with the stored message.
    stored, created = services.message_post(**first, broadcast=False)
    assert (stored.body, created) == ("hi", False)
    assert Message.objects.count() == 3


def test_a_resend_takes_no_token(burst_of_three, user, room):
    """On SQLite posts are stored one by one; on PostgreSQL in the round's statement."""
    make_member(user, room)
    first = {"user": user, "room": room, "body": "hi", "client_id": "c-1"}
    insert_round([first])
    assert _kinds(insert_round([first, first])) == ["NoneType", "NoneType"]  # message_post's
    # The two tokens left go to new posts.
    assert _kinds(insert_round(_posts(room, user, user, user))) == [
        "Message",
        "Message",
        "RateLimited",
    ]


def test_a_resend_in_a_round_takes_no_token_and_fails_no_other_post(
    burst_of_three, user, other_user, room, monkeypatch
):
    need_postgres()
    make_member(user, room)
    make_member(other_user, room)
    first = {"user": user, "room": room, "body": "hi", "client_id": "c-1"}
    insert_round([first, *_posts(room, other_user)])  # both have a bucket now
    in_thread = []
    each = services._message_insert_each
    monkeypatch.setattr(
        services, "_message_insert_each", lambda *args: in_thread.append(args) or each(*args)
    )
    outcomes = insert_round([first, *_posts(room, other_user), first, *_posts(room, user, user)])
    assert _kinds(outcomes) == ["NoneType", "Message", "NoneType", "Message", "Message"]
    assert in_thread == []  # the round's one statement decided every post
    # user's two tokens went to the two new posts, none to the resends.
    assert _kinds(insert_round(_posts(room, user))) == ["RateLimited"]


def test_a_refused_body_takes_no_token(burst_of_three, user, room):
    """An empty or oversized body is the client's mistake, counted by the
    socket's error budget instead (chat.consumers)."""
    make_member(user, room)
    blank = {"user": user, "room": room, "body": "   ", "client_id": None}
    outcomes = insert_round([blank] * 3 + _posts(room, user))
    # message_post says what is wrong with the blank ones (None).
    assert _kinds(outcomes) == ["NoneType", "NoneType", "NoneType", "Message"]
    outcomes = insert_round(_posts(room, user, user, user))
    assert _kinds(outcomes) == ["Message", "Message", "RateLimited"]


def test_a_round_of_senders_with_buckets_is_one_statement(
    burst_of_three, user, other_user, room, monkeypatch
):
    """Tokens and inserts in one round trip and one commit (PostgreSQL)."""
    need_postgres()
    make_member(user, room)
    make_member(other_user, room)
    insert_round(_posts(room, user, other_user))
    statements = record_loop_statements(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        outcomes = insert_round(_posts(room, user, other_user, user))
    assert _kinds(outcomes) == ["Message"] * 3
    assert len(statements) == 1
    assert queries.captured_queries == []  # nothing in the database thread


def test_processes_posting_for_one_user_at_once_share_the_burst(settings, user, room):
    """Two processes' rounds for the same user (two sockets, two servers) run
    at the same moment: together they get the burst, not one each. Each in a
    room of its own, so that no round waits for another's number."""
    need_postgres()
    settings.SEND_RATE = 0.01
    settings.SEND_BURST = 10.0
    rooms = [room, *(make_room(f"room-{i}") for i in range(3))]
    for target in rooms:
        make_member(user, target)
    insert_round(_posts(room, user))  # the bucket exists: 9 tokens left
    outcomes = []

    def post_round(target):
        outcomes.extend(insert_round(_posts(target, *[user] * 5)))

    assert run_at_once(post_round, [(target,) for target in rooms]) == []
    assert len(outcomes) == 20
    assert sum(isinstance(outcome, Message) for outcome in outcomes) == 9
    assert sum(isinstance(outcome, RateLimited) for outcome in outcomes) == 11
    assert Message.objects.filter(user=user).count() == 10


def test_rounds_making_the_same_new_buckets_at_once_share_the_burst(
    burst_of_three, user, other_user, room
):
    """Two senders' first posts, in rounds of four processes at once, each
    naming them in another order: every bucket is made once, nobody waits
    in a circle, and each sender gets exactly the burst."""
    need_postgres()
    make_member(user, room)
    make_member(other_user, room)
    outcomes = []

    def post_round(senders):
        outcomes.extend(insert_round(_posts(room, *senders)))

    orders = [[user, other_user] * 2, [other_user, user] * 2] * 2
    assert run_at_once(post_round, [(order,) for order in orders]) == []
    assert len(outcomes) == 16
    assert sum(isinstance(outcome, RateLimited) for outcome in outcomes) == 10
    _assert_stored_or_left(outcomes, [user, other_user], 6)
    for sender in (user, other_user):
        assert Message.objects.filter(user=sender).count() <= 3


def test_a_round_whose_clock_was_read_before_the_last_takers_still_gets_its_token(
    burst_of_three, user, room, monkeypatch
):
    """A round reads its clock, then may wait for another round's lock on the
    bucket: counted at that earlier moment, the bucket the other round left
    looked a token short, and a sender's burst came up one post short
    (concurrent rounds, a slow commit)."""
    need_postgres()
    make_member(user, room)
    assert _kinds(insert_round(_posts(room, user, user))) == ["Message", "Message"]

    def read_before():
        return {**send_rate_params(), "clock": time.time() - 0.5}

    monkeypatch.setattr(services, "send_rate_params", read_before)
    assert _kinds(insert_round(_posts(room, user, user))) == ["Message", "RateLimited"]
    assert Message.objects.filter(user=user).count() == 3


def test_every_user_has_a_budget_of_their_own(burst_of_three, user, room):
    make_member(user, room)
    others = [make_user(f"member{i}") for i in range(3)]
    for other in others:
        make_member(other, room)
    for _ in range(3):
        insert_round(_posts(room, user))
    outcomes = insert_round(_posts(room, user, *others))
    assert _kinds(outcomes) == ["RateLimited", "Message", "Message", "Message"]
