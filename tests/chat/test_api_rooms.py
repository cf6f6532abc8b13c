"""Rooms over the REST API: list, create, read, change, delete, join, leave."""

import pytest

from chat.models import Membership, Room
from tests.api import api_client, path_of
from tests.factories import make_member, make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(user):
    return api_client(user)


def test_anonymous_requests_get_401_json(room):
    for method, url in [("get", "/api/rooms/"), ("get", f"/api/rooms/{room.slug}/messages/")]:
        response = getattr(api_client(), method)(url)
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"


def test_list_shows_public_and_my_private_rooms_with_counts_and_role(api, user, other_user):
    public = make_room("pub", name="Pub")
    make_member(other_user, public)
    mine = make_room("mine", is_private=True)
    make_member(user, mine, role="owner")
    make_room("theirs", is_private=True)
    rooms = {r["slug"]: r for r in api.get("/api/rooms/").json()["results"]}
    assert "theirs" not in rooms
    assert rooms["pub"]["member_count"] == 1
    assert rooms["pub"]["my_role"] is None
    assert rooms["mine"]["my_role"] == "owner"
    assert rooms["mine"]["is_private"] is True


def test_the_room_list_comes_in_pages_by_name(api):
    existing = Room.objects.count()  # the rooms every database starts with
    for n in range(60):
        make_room(f"r{n:02d}", name=f"Room {59 - n:02d}")  # names in the reverse order of ids
    first = api.get("/api/rooms/").json()
    assert first["count"] == existing + 60
    assert len(first["results"]) == 50
    assert first["previous"] is None
    rest = api.get(path_of(first["next"])).json()
    names = [r["name"] for r in first["results"] + rest["results"]]
    assert len(names) == existing + 60
    assert names == sorted(names)
    assert rest["next"] is None
    small = api.get("/api/rooms/?page_size=7").json()
    assert len(small["results"]) == 7
    assert small["results"] == first["results"][:7]


@pytest.mark.parametrize("page", ["99", "0", "x"])
def test_a_room_page_that_does_not_exist_is_404_json(api, page):
    response = api.get(f"/api/rooms/?page={page}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_create_room_makes_the_creator_owner(api, user):
    response = api.post("/api/rooms/", {"name": "Book Club", "is_private": True}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert (body["slug"], body["my_role"], body["member_count"]) == ("book-club", "owner", 1)
    assert Membership.objects.get(room__slug="book-club").user == user


def test_create_room_with_taken_slug_is_409(api, room):
    response = api.post("/api/rooms/", {"name": "x", "slug": room.slug}, format="json")
    assert response.status_code == 409
    assert response.json()["code"] == "room_exists"


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "ok", "slug": "not a slug"}, {"name": "!!!"}, {"name": "x" * 101}],
)
def test_create_room_validates_input(api, body):
    response = api.post("/api/rooms/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] in {"invalid", "invalid_name"}
    assert not Room.objects.exclude(slug__in=["general", "random"]).exists()


def test_owner_changes_and_deletes_the_room(api, user):
    room = make_room("owned")
    make_member(user, room, role="owner")
    response = api.patch(f"/api/rooms/{room.slug}/", {"description": "new"}, format="json")
    assert response.status_code == 200
    assert response.json()["description"] == "new"
    assert api.delete(f"/api/rooms/{room.slug}/").status_code == 204
    assert not Room.objects.filter(slug="owned").exists()


def test_members_cannot_change_or_delete_the_room(api, user, room):
    make_member(user, room)
    patch = api.patch(f"/api/rooms/{room.slug}/", {"name": "mine now"}, format="json")
    delete = api.delete(f"/api/rooms/{room.slug}/")
    assert (patch.status_code, delete.status_code) == (403, 403)
    assert patch.json()["code"] == "forbidden"
    room.refresh_from_db()
    assert room.name == "Lobby"


def test_private_room_is_404_for_outsiders_everywhere(api):
    secret = make_room("secret", is_private=True)
    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("get", "members/"),
        ("post", "join/"),
        ("get", "messages/"),
        ("post", "messages/"),
    ]:
        response = getattr(api, method)(f"/api/rooms/{secret.slug}/{path}", {}, format="json")
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "room_not_found"


def test_join_and_leave_a_public_room(api, user, room):
    joined = api.post(f"/api/rooms/{room.slug}/join/")
    assert joined.status_code == 200
    assert joined.json()["my_role"] == "member"
    assert api.post(f"/api/rooms/{room.slug}/leave/").status_code == 204
    assert not Membership.objects.filter(user=user, room=room).exists()


def test_owner_cannot_leave(api, user):
    room = make_room("owned")
    make_member(user, room, role="owner")
    response = api.post(f"/api/rooms/{room.slug}/leave/")
    assert response.status_code == 409
    assert response.json()["code"] == "owner_cannot_leave"


def test_staff_may_change_any_room(room):
    staff = make_user("mod", is_staff=True)
    response = api_client(staff).patch(
        f"/api/rooms/{room.slug}/", {"name": "Renamed"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"
