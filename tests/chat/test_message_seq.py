"""Each room numbers its messages 1, 2, 3... in commit order (Message.seq), so that
clients can tell a missing message from a message of another room."""

import pytest

from chat import protocol, services
from chat.models import Message
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
