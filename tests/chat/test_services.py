"""The business rules, called directly (the socket and API tests go through the doors)."""

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg._queries import _query2pg

from chat import services
from chat.asyncdb import compact, loop_connection
from chat.exceptions import BodyTooLong, ChatError, EmptyBody, Forbidden, Muted
from chat.models import Membership, Message
from tests.conftest import need_postgres
from tests.factories import make_member, make_room
from tests.rounds import insert_round, on_a_loop_of_its_own, record_loop_statements

pytestmark = pytest.mark.django_db


def test_joining_a_public_room_makes_a_membership(user, room):
    membership = services.room_join(user=user, room=room)
    assert membership.role == Membership.Role.MEMBER
    assert services.room_join(user=user, room=room) == membership


def test_joining_a_private_room_needs_a_membership(user):
    private = make_room(is_private=True)
    with pytest.raises(Forbidden):
        services.room_join(user=user, room=private)
    assert not Membership.objects.filter(room=private).exists()


def test_message_post_stores_the_message(user, room):
    make_member(user, room)
    message, created = services.message_post(user=user, room=room, body="hi", client_id="c-1")
    assert created
    assert Message.objects.get() == message
    assert (message.body, message.client_id, message.room, message.user) == (
        "hi",
        "c-1",
        room,
        user,
    )


def test_message_post_requires_membership(user, room):
    with pytest.raises(Forbidden):
        services.message_post(user=user, room=room, body="hi")
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("body", "error"), [("", EmptyBody), (" \n\t", EmptyBody), ("x" * 4001, BodyTooLong)]
)
def test_message_post_validates_the_body(user, room, body, error):
    make_member(user, room)
    with pytest.raises(error):
        services.message_post(user=user, room=room, body=body)
    assert not Message.objects.exists()


def test_repeated_client_id_returns_the_stored_message(user, room):
    make_member(user, room)
    first, created = services.message_post(user=user, room=room, body="one", client_id="same")
    again, created_again = services.message_post(user=user, room=room, body="two", client_id="same")
    assert (created, created_again) == (True, False)
    assert again == first
    assert again.body == "one"
    assert Message.objects.count() == 1


def test_messages_without_client_id_are_never_deduplicated(user, room):
    make_member(user, room)
    services.message_post(user=user, room=room, body="a")
    services.message_post(user=user, room=room, body="a")
    assert Message.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_rolled_back_message_is_never_broadcast(user, room):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(f"room.{room.id}", channel)

    def post_then_roll_back():
        make_member(user, room)
        with transaction.atomic():
            services.message_post(user=user, room=room, body="doomed")
            transaction.set_rollback(True)
        services.message_post(user=user, room=room, body="kept")

    await database_sync_to_async(post_then_roll_back)()
    event = await layer.receive(channel)
    assert '"body":"kept"' in event["text"]
    assert await database_sync_to_async(Message.objects.count)() == 1


def _as_member(**fields):
    return lambda user, room: Membership.objects.filter(user=user, room=room).update(**fields)


def _room_is(**fields):
    return lambda user, room: type(room).objects.filter(pk=room.pk).update(**fields)


def _staff(user, room):
    type(user).objects.filter(pk=user.pk).update(is_staff=True)


POSTING_CASES = {
    "member": [],
    "not a member": [lambda user, room: Membership.objects.filter(user=user).delete()],
    "banned": [_as_member(is_banned=True)],
    "muted": [_as_member(muted_until=timezone.now() + timedelta(hours=1))],
    "mute over": [_as_member(muted_until=timezone.now() - timedelta(seconds=1))],
    "locked room": [_room_is(is_locked=True)],
    "locked, moderator": [_room_is(is_locked=True), _as_member(role=Membership.Role.MODERATOR)],
    "locked, owner": [_room_is(is_locked=True), _as_member(role=Membership.Role.OWNER)],
    "locked, staff": [_room_is(is_locked=True), _staff],
    "archived": [_room_is(is_archived=True)],
    "archived, staff": [_room_is(is_archived=True), _staff],
}


@pytest.mark.parametrize("case", POSTING_CASES)
def test_the_one_statement_post_allows_exactly_whom_the_rules_allow(case, user, room):
    """The common post checks the rules in SQL; message_check_allowed is the
    reference (and says why not): the two must agree in every case."""
    make_member(user, room)
    for change in POSTING_CASES[case]:
        change(user, room)
    user.refresh_from_db()
    room.refresh_from_db()
    membership = Membership.objects.select_related("room").filter(user=user, room=room).first()
    try:
        services.message_check_allowed(membership, user)
        allowed = True
    except ChatError:
        allowed = False
    stored = services._message_insert(user=user, room=room, body="hello", client_id=None)
    assert (stored is not None) == allowed
    assert Message.objects.filter(room=room).count() == int(allowed)


# --- several posts at once (the socket's posts of a turn of the event loop) -------------
# In autocommit (transaction=True), as the socket posts: inside a transaction
# they are posted one by one.


def _posts(*pairs) -> list[dict]:
    return [
        {"user": user, "room": room, "body": f"message {i}", "client_id": f"c-{i}"}
        for i, (user, room) in enumerate(pairs)
    ]


@pytest.mark.django_db(transaction=True)
def test_posts_together_are_one_statement_numbered_in_order(user, other_user, room, monkeypatch):
    need_postgres()
    other_room = make_room("other")
    for member, target in [(user, room), (other_user, room), (user, other_room)]:
        make_member(member, target)
    posts = _posts((user, room), (other_user, room), (user, other_room), (user, room))
    statements = record_loop_statements(monkeypatch)
    with CaptureQueriesContext(connection) as queries:
        stored = insert_round(posts)
    assert len(statements) == 1
    assert queries.captured_queries == []  # nothing in the database thread
    assert [(m.room_id, m.seq) for m in stored] == [
        (room.id, 1),
        (room.id, 2),
        (other_room.id, 1),
        (room.id, 3),
    ]
    rows = Message.objects.order_by("id").values_list("id", "body", "client_id", "user_id")
    assert list(rows) == [(m.id, m.body, m.client_id, m.user_id) for m in stored]


@pytest.mark.django_db(transaction=True)
def test_a_post_refused_among_several_is_left_to_message_post(user, other_user, room):
    make_member(user, room)
    make_member(other_user, room)
    _as_member(muted_until=timezone.now() + timedelta(hours=1))(other_user, room)
    posts = _posts((user, room), (other_user, room), (user, room))
    posts.append({"user": user, "room": room, "body": " ", "client_id": None})
    stored = insert_round(posts)
    assert [m.seq if m else None for m in stored] == [1, None, 2, None]
    assert Message.objects.count() == 2
    # message_post says why.
    with pytest.raises(Muted):
        services.message_post(**posts[1], broadcast=False)
    with pytest.raises(EmptyBody):
        services.message_post(**posts[3], broadcast=False)


@pytest.mark.django_db(transaction=True)
def test_the_round_statement_is_prepared_once_it_has_run_a_few_times(user, room):
    """Planning it cost more than running it (chatsite.settings' prepare_threshold)."""
    need_postgres()
    make_member(user, room)

    @on_a_loop_of_its_own
    async def prepared_after_rounds(sizes: list[int]) -> list[str]:
        for size in sizes:
            await services.amessage_insert_many(
                [dict(post, client_id=None) for post in _posts(*[(user, room)] * size)]
            )
        rows = await loop_connection().fetchall("SELECT statement FROM pg_prepared_statements", {})
        return [row[0] for row in rows if "unnest" in row[0]]

    assert prepared_after_rounds([1, 2]) == []
    assert len(prepared_after_rounds([1, 2, 2, 2, 2, 2])) == 1
    assert Message.objects.filter(user=user).count() == 14


@pytest.mark.django_db(transaction=True)
def test_psycopg_parses_the_round_statement_once(user, room):
    """psycopg keeps its parse of a text of up to 4 kB only (chat.asyncdb.compact)."""
    need_postgres()
    make_member(user, room)
    insert_round(_posts((user, room)))
    parsed_before = _query2pg.cache_info()
    insert_round(_posts((user, room), (user, room)))
    assert _query2pg.cache_info().hits > parsed_before.hits
    assert _query2pg.cache_info().misses == parsed_before.misses


def test_a_compacted_statement_keeps_everything_but_comments_and_spacing():
    query = """
        SELECT a,   b  -- the two columns
        FROM t
          -- a whole line of comment
        WHERE a = %(a)s
    """
    assert compact(query) == "SELECT a, b FROM t WHERE a = %(a)s"


@pytest.mark.django_db(transaction=True)
def test_a_resent_post_among_several_is_not_stored_twice(user, other_user, room):
    make_member(user, room)
    make_member(other_user, room)
    (first,) = insert_round(_posts((user, room)))
    posts = _posts((user, room), (other_user, room))
    stored = insert_round(posts)
    # On PostgreSQL the resend fails the round's statement, and each post is
    # then stored on its own: the other one is not held back.
    assert stored[0] is None
    assert stored[1].body == posts[1]["body"]
    again, created = services.message_post(**posts[0], broadcast=False)
    assert (again.id, created) == (first.id, False)
    assert Message.objects.filter(client_id="c-0").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", POSTING_CASES)
def test_posts_together_allow_exactly_whom_the_rules_allow(case, user, other_user, room):
    """The statements sent together check the rules as the one statement does."""
    make_member(user, room)
    make_member(other_user, room)
    for change in POSTING_CASES[case]:
        change(user, room)
    user.refresh_from_db()
    room.refresh_from_db()
    alone = [
        services._message_insert(user=poster, room=room, body="alone", client_id=None)
        for poster in (other_user, user)
    ]
    Message.objects.all().delete()
    stored = insert_round(_posts((other_user, room), (user, room)))
    assert [m is not None for m in stored] == [m is not None for m in alone]


@pytest.mark.django_db(transaction=True)
def test_a_big_round_of_posts_is_one_statement_after_each_rooms_last_number(
    settings, user, other_user, room, monkeypatch
):
    need_postgres()
    settings.SEND_BURST = 1000.0  # 80 posts of one sender: within the rate
    other_room = make_room("other")
    for member, target in [(user, room), (other_user, room), (other_user, other_room)]:
        make_member(member, target)
    earlier = _posts((user, room), (user, room), (other_user, other_room))
    insert_round([dict(post, client_id=None) for post in earlier])
    posts = _posts(*[(user, room), (other_user, other_room), (other_user, room)] * 40)
    statements = record_loop_statements(monkeypatch)
    stored = insert_round(posts)
    assert len(statements) == 1
    assert [m.body for m in stored] == [post["body"] for post in posts]
    in_room = [m for m in stored if m.room_id == room.id]
    assert [m.seq for m in in_room] == list(range(3, 83))
    assert [m.seq for m in stored if m.room_id == other_room.id] == list(range(2, 42))
    # Ids rise with the numbers, as they do for posts one by one.
    assert [m.id for m in stored] == sorted(m.id for m in stored)
    saved = Message.objects.filter(room=room).order_by("seq").values_list("id", "seq", "body")
    assert list(saved)[2:] == [(m.id, m.seq, m.body) for m in in_room]
