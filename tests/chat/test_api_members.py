"""Room members over the REST API."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import moderation
from chat.models import Membership
from tests.api import api_client, path_of
from tests.factories import make_member, make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def private_room(user):
    room = make_room("club", is_private=True)
    make_member(user, room, role="owner")
    return room


def test_owner_adds_and_lists_members(user, other_user, private_room):
    api = api_client(user)
    added = api.post("/api/rooms/club/members/", {"username": "bob"}, format="json")
    assert added.status_code == 201
    assert added.json()["role"] == "member"
    again = api.post("/api/rooms/club/members/", {"username": "bob"}, format="json")
    assert again.status_code == 200
    members = api.get("/api/rooms/club/members/").json()["results"]
    assert [(m["username"], m["role"]) for m in members] == [("alice", "owner"), ("bob", "member")]


def test_members_come_in_pages_oldest_first(user, private_room):
    for n in range(5):
        make_member(make_user(f"m{n}"), private_room)
    api = api_client(user)
    first = api.get("/api/rooms/club/members/?page_size=4").json()
    second = api.get(path_of(first["next"])).json()
    assert first["count"] == 6
    assert [m["username"] for m in first["results"] + second["results"]] == [
        "alice",
        "m0",
        "m1",
        "m2",
        "m3",
        "m4",
    ]
    assert second["next"] is None


def test_moderator_adds_members_but_not_moderators(other_user, private_room):
    make_member(other_user, private_room, role="moderator")
    make_user("carol")
    api = api_client(other_user)
    as_mod = api.post(
        "/api/rooms/club/members/", {"username": "carol", "role": "moderator"}, format="json"
    )
    assert as_mod.status_code == 403
    as_member = api.post("/api/rooms/club/members/", {"username": "carol"}, format="json")
    assert as_member.status_code == 201


def test_member_cannot_add_members(other_user, private_room):
    make_member(other_user, private_room)
    make_user("carol")
    response = api_client(other_user).post(
        "/api/rooms/club/members/", {"username": "carol"}, format="json"
    )
    assert response.status_code == 403
    assert not Membership.objects.filter(user__username="carol").exists()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"username": "nobody"}, "user_not_found"),
        ({}, "invalid"),
        ({"username": "bob", "role": "owner"}, "invalid"),
    ],
)
def test_adding_members_validates_input(user, other_user, private_room, body, code):
    response = api_client(user).post("/api/rooms/club/members/", body, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_owner_removes_a_member_and_member_removes_themselves(user, other_user, private_room):
    make_member(other_user, private_room)
    carol = make_user("carol")
    make_member(carol, private_room)
    assert api_client(user).delete("/api/rooms/club/members/bob/").status_code == 204
    assert api_client(carol).delete("/api/rooms/club/members/carol/").status_code == 204
    assert list(private_room.memberships.values_list("user__username", flat=True)) == ["alice"]


def test_member_cannot_remove_others_and_nobody_removes_the_owner(user, other_user, private_room):
    make_member(other_user, private_room, role="moderator")
    carol = make_user("carol")
    make_member(carol, private_room)
    assert api_client(carol).delete("/api/rooms/club/members/bob/").status_code == 403
    owner = api_client(other_user).delete("/api/rooms/club/members/alice/")
    assert (owner.status_code, owner.json()["code"]) == (409, "owner_cannot_leave")
    assert private_room.memberships.count() == 3


def test_removing_a_non_member_is_404(user, private_room):
    response = api_client(user).delete("/api/rooms/club/members/ghost/")
    assert response.status_code == 404


def test_members_say_who_banned_or_muted_them(user, other_user, private_room):
    """A client can tell which bans and mutes its user may undo."""
    make_member(other_user, private_room)
    carol = make_member(make_user("carol"), private_room).user
    moderation.member_ban(actor=user, room=private_room, user=carol)
    moderation.member_mute(
        actor=user, room=private_room, user=other_user, until=timezone.now() + timedelta(hours=1)
    )
    api = api_client(user)
    members = api.get("/api/rooms/club/members/").json()["results"]
    assert [(m["username"], m["mute_authority"], m["ban_authority"]) for m in members] == [
        ("alice", None, None),
        ("bob", "owner", None),
        ("carol", None, "owner"),
    ]
    Membership.objects.filter(user=other_user).update(muted_until=timezone.now())  # ended
    members = api.get("/api/rooms/club/members/").json()["results"]
    assert [m["mute_authority"] for m in members] == [None, None, None]
