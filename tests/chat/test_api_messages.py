"""Message history and sending over the REST API."""

import base64

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.api.throttling import SendRateThrottle
from chat.models import Membership, Message
from tests.api import api_client, path_of
from tests.factories import make_member, make_messages, make_room, make_user
from tests.ws import connect

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(user, room):
    make_member(user, room)
    return user


def walk(api, url: str, key: str = "next") -> list[int]:
    ids = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, url
        page = response.json()
        ids += [m["id"] for m in page["results"]]
        url = page[key] and path_of(page[key])
    return ids


def test_history_is_newest_first_in_the_socket_shape(member, room):
    stored = make_messages(room, member, 3)
    page = api_client(member).get(f"/api/rooms/{room.slug}/messages/").json()
    assert set(page) == {"next", "previous", "results"}
    assert [m["id"] for m in page["results"]] == [m.id for m in reversed(stored)]
    assert [m["seq"] for m in page["results"]] == [3, 2, 1]
    assert set(page["results"][0]) == {"id", "seq", "room", "user", "body", "created", "client_id"}


def test_paging_1000_messages_both_ways_yields_each_once_in_order(member, room):
    stored = [m.id for m in make_messages(room, member, 1000)]
    api = api_client(member)
    backwards = walk(api, f"/api/rooms/{room.slug}/messages/?page_size=100")
    assert backwards == list(reversed(stored))
    forwards = walk(api, f"/api/rooms/{room.slug}/messages/?after=0&page_size=100")
    assert forwards == stored
    # `previous` links lead back over the same pages.
    first = api.get(f"/api/rooms/{room.slug}/messages/?after=0&page_size=100").json()
    second = api.get(path_of(first["next"])).json()
    back = api.get(path_of(second["previous"])).json()
    assert [m["id"] for m in back["results"]] == stored[:100]


def test_before_and_after_select_the_window(member, room):
    stored = [m.id for m in make_messages(room, member, 10)]
    api = api_client(member)
    before = api.get(f"/api/rooms/{room.slug}/messages/?before={stored[5]}&page_size=3").json()
    assert [m["id"] for m in before["results"]] == [stored[4], stored[3], stored[2]]
    after = api.get(f"/api/rooms/{room.slug}/messages/?after={stored[5]}&page_size=3").json()
    assert [m["id"] for m in after["results"]] == stored[6:9]


@pytest.mark.parametrize(
    "query", ["page_size=0", "page_size=101", "after=x", "before=-1", "after=1&before=9"]
)
def test_bad_history_queries_are_400_json(member, room, query):
    response = api_client(member).get(f"/api/rooms/{room.slug}/messages/?{query}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        base64.b64encode(b"p=abc").decode(),  # a position that is not a number
        base64.b64encode(b"p=1.5&r=1").decode(),
    ],
)
def test_a_bad_cursor_is_404_json(member, room, cursor):
    make_messages(room, member, 3)
    response = api_client(member).get(f"/api/rooms/{room.slug}/messages/", {"cursor": cursor})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_cursor_made_by_hand_with_a_number_pages_on(member, room):
    stored = [message.seq for message in make_messages(room, member, 5)]
    cursor = base64.b64encode(f"p={stored[3]}".encode()).decode()
    response = api_client(member).get(f"/api/rooms/{room.slug}/messages/", {"cursor": cursor})
    assert response.status_code == 200
    assert [m["seq"] for m in response.json()["results"]] == stored[2::-1]


def test_a_history_page_costs_the_same_queries_at_any_depth(member, room):
    stored = make_messages(room, member, 500)
    api = api_client(member)
    counts = []
    for url in [
        f"/api/rooms/{room.slug}/messages/",
        f"/api/rooms/{room.slug}/messages/?before={stored[10].id}",
        f"/api/rooms/{room.slug}/messages/?after={stored[200].id}",
    ]:
        with CaptureQueriesContext(connection) as queries:
            assert api.get(url).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] == counts[2]
    assert counts[0] <= 3  # user, room, page


def test_a_private_room_page_adds_only_the_membership_check(user):
    secret = make_room("secret", is_private=True)
    make_member(user, secret)
    stored = make_messages(secret, user, 300)
    api = api_client(user)
    counts = []
    for url in [
        f"/api/rooms/{secret.slug}/messages/",
        f"/api/rooms/{secret.slug}/messages/?before={stored[200].id}",
    ]:
        with CaptureQueriesContext(connection) as queries:
            response = api.get(url)
        assert response.status_code == 200
        assert len(response.json()["results"]) == 50
        counts.append(len(queries))
    assert counts == [4, 4]  # user, room, membership, page


def test_a_banned_member_cannot_read_a_private_rooms_history(user):
    secret = make_room("secret", is_private=True)
    Membership.objects.create(user=user, room=secret, is_banned=True)
    make_messages(secret, user, 3)
    response = api_client(user).get(f"/api/rooms/{secret.slug}/messages/")
    assert (response.status_code, response.json()["code"]) == (404, "room_not_found")


def test_hidden_messages_are_left_out_of_history_pages(member, room):
    stored = make_messages(room, member, 5)
    Message.objects.filter(id=stored[2].id).update(hidden_at=timezone.now())
    response = api_client(member).get(f"/api/rooms/{room.slug}/messages/")
    assert [m["id"] for m in response.json()["results"]] == [stored[i].id for i in (4, 3, 1, 0)]


def test_send_stores_and_answers_201(member, room):
    response = api_client(member).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "via api", "client_id": "a-1"}, format="json"
    )
    assert response.status_code == 201
    stored = Message.objects.get()
    assert response.json()["id"] == stored.id
    assert response.json()["body"] == "via api"


def test_send_with_repeated_client_id_answers_200_with_the_stored_message(member, room):
    api = api_client(member)
    url = f"/api/rooms/{room.slug}/messages/"
    first = api.post(url, {"body": "once", "client_id": "a-1"}, format="json")
    again = api.post(url, {"body": "twice", "client_id": "a-1"}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert Message.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"body": ""}, "empty_body"),
        ({"body": "   "}, "empty_body"),
        ({"body": "x" * 4001}, "body_too_long"),
        ({"body": "x" * 100_000}, "body_too_long"),
        ({}, "invalid"),
        ({"body": "ok", "client_id": "x" * 101}, "invalid"),
    ],
)
def test_send_validates_like_the_socket(member, room, body, code):
    response = api_client(member).post(f"/api/rooms/{room.slug}/messages/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code
    assert not Message.objects.exists()


def test_non_members_cannot_send_to_a_public_room(other_user, room):
    response = api_client(other_user).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "hi"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_sends_are_throttled_per_user(member, room, monkeypatch):
    monkeypatch.setattr(SendRateThrottle, "THROTTLE_RATES", {"send": "3/minute"})
    api = api_client(member)
    responses = [
        api.post(f"/api/rooms/{room.slug}/messages/", {"body": f"m{i}"}, format="json")
        for i in range(4)
    ]
    assert [r.status_code for r in responses] == [201, 201, 201, 429]
    assert responses[-1].json()["code"] == "throttled"
    assert int(responses[-1]["Retry-After"]) > 0
    assert Message.objects.count() == 3
    # Reading is not throttled.
    assert api.get(f"/api/rooms/{room.slug}/messages/").status_code == 200


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_api_send_reaches_open_sockets(channel_backend, member, room):
    listener = await database_sync_to_async(make_user)("listener")
    async with connect(listener) as socket:
        await socket.join(room.slug)

        def send():
            return api_client(member).post(
                f"/api/rooms/{room.slug}/messages/", {"body": "from a bot"}, format="json"
            )

        response = await database_sync_to_async(send)()
        live = await socket.receive_type("message")
    assert response.status_code == 201
    assert live == {"type": "message", **response.json()}
