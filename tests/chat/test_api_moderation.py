"""Moderation through the REST API: the same services as the admin and the socket."""

import pytest

from chat.models import AuditEntry, Membership
from tests.api import api_client
from tests.factories import make_member, make_messages, make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def mod(room):
    moderator = make_user("mod")
    make_member(moderator, room, role="moderator")
    return api_client(moderator)


@pytest.fixture
def member(user, room):
    make_member(user, room)
    return user


def test_moderator_locks_and_unlocks(mod, member, room):
    locked = mod.post(
        f"/api/rooms/{room.slug}/lock/", {"locked": True, "reason": "r"}, format="json"
    )
    assert locked.status_code == 200
    assert locked.json()["is_locked"] is True
    send = api_client(member).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "x"}, format="json"
    )
    assert (send.status_code, send.json()["code"]) == (403, "room_locked")
    assert (
        mod.post(f"/api/rooms/{room.slug}/lock/", {"locked": False}, format="json").status_code
        == 200
    )


def test_member_cannot_lock(member, room):
    response = api_client(member).post(
        f"/api/rooms/{room.slug}/lock/", {"locked": True}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (403, "forbidden")


def test_mute_answers_the_member_with_its_end(mod, member, room):
    muted = mod.post(
        f"/api/rooms/{room.slug}/members/alice/mute/",
        {"until": "2999-01-01T00:00:00Z", "reason": "spam"},
        format="json",
    )
    assert muted.status_code == 200
    assert muted.json()["muted_until"].startswith("2999-01-01")
    send = api_client(member).post(
        f"/api/rooms/{room.slug}/messages/", {"body": "x"}, format="json"
    )
    assert send.status_code == 403
    assert (send.json()["code"], send.json()["until"]) == ("muted", "2999-01-01T00:00:00Z")


def test_ban_and_unban(mod, member, room):
    assert (
        mod.post(f"/api/rooms/{room.slug}/members/alice/ban/", {}, format="json").status_code == 200
    )
    assert Membership.objects.get(user=member, room=room).is_banned
    join = api_client(member).post(f"/api/rooms/{room.slug}/join/")
    assert (join.status_code, join.json()["code"]) == (403, "banned")
    assert mod.delete(f"/api/rooms/{room.slug}/members/alice/ban/").status_code == 204
    assert api_client(member).post(f"/api/rooms/{room.slug}/join/").status_code == 200
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "member_ban",
        "member_unban",
    ]


def test_moderating_an_unknown_user_is_404(mod, room):
    response = mod.post(f"/api/rooms/{room.slug}/members/ghost/ban/", {}, format="json")
    assert (response.status_code, response.json()["code"]) == (404, "user_not_found")


def test_author_deletes_own_message_and_it_leaves_history(member, other_user, room):
    mine = make_messages(room, member, 1)[0]
    theirs = make_messages(room, other_user, 1)[0]
    api = api_client(member)
    assert api.delete(f"/api/rooms/{room.slug}/messages/{theirs.id}/").status_code == 403
    assert api.delete(f"/api/rooms/{room.slug}/messages/{mine.id}/").status_code == 204
    history = api.get(f"/api/rooms/{room.slug}/messages/").json()["results"]
    assert [m["id"] for m in history] == [theirs.id]
    again = api.delete(f"/api/rooms/{room.slug}/messages/{mine.id}/")
    assert (again.status_code, again.json()["code"]) == (404, "message_not_found")


def test_moderator_hides_any_message_in_their_room(mod, member, room):
    message = make_messages(room, member, 1)[0]
    response = mod.delete(
        f"/api/rooms/{room.slug}/messages/{message.id}/", {"reason": "rude"}, format="json"
    )
    assert response.status_code == 204
    assert AuditEntry.objects.get().reason == "rude"


def test_owner_archives(user, room):
    make_member(user, room, role="owner")
    response = api_client(user).post(
        f"/api/rooms/{room.slug}/archive/", {"archived": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["is_archived"] is True
    listed = [r["slug"] for r in api_client(user).get("/api/rooms/").json()["results"]]
    assert room.slug not in listed


def test_a_ban_outlasts_the_banned_users_leave(mod, member, room):
    mod.post(f"/api/rooms/{room.slug}/members/alice/ban/", {}, format="json")
    assert api_client(member).post(f"/api/rooms/{room.slug}/leave/").status_code == 204
    join = api_client(member).post(f"/api/rooms/{room.slug}/join/")
    assert (join.status_code, join.json()["code"]) == (403, "banned")


def test_removing_a_banned_member_is_refused_rather_than_lifting_the_ban(mod, member, room):
    mod.post(f"/api/rooms/{room.slug}/members/alice/ban/", {}, format="json")
    removed = mod.delete(f"/api/rooms/{room.slug}/members/alice/")
    assert (removed.status_code, removed.json()["code"]) == (409, "member_banned")
    assert Membership.objects.get(user=member, room=room).is_banned


def test_a_muted_member_may_not_leave_until_the_mute_ends(mod, member, room):
    until = "2099-01-01T00:00:00Z"
    mod.post(f"/api/rooms/{room.slug}/members/alice/mute/", {"until": until}, format="json")
    leave = api_client(member).post(f"/api/rooms/{room.slug}/leave/")
    assert (leave.status_code, leave.json()["code"]) == (403, "muted")
    assert leave.json()["until"] == until
    assert Membership.objects.get(user=member, room=room).muted_until is not None


def test_muting_an_outsider_of_a_private_room_does_not_let_them_in(user, other_user):
    club = make_room("club", is_private=True)
    make_member(user, club, role="owner")
    muted = api_client(user).post(
        "/api/rooms/club/members/bob/mute/", {"until": "2099-01-01T00:00:00Z"}, format="json"
    )
    assert (muted.status_code, muted.json()["code"]) == (404, "not_a_member")
    assert not Membership.objects.filter(user=other_user, room=club).exists()
    # A ban may come first: it lets nobody in.
    banned = api_client(user).post("/api/rooms/club/members/bob/ban/", {}, format="json")
    assert banned.status_code == 200
    assert api_client(other_user).get("/api/rooms/club/messages/").status_code == 404


def test_a_moderator_lifting_the_owners_ban_is_403(mod, member, room):
    owner = make_user("owner")
    make_member(owner, room, role="owner")
    api_client(owner).post(f"/api/rooms/{room.slug}/members/alice/ban/", {}, format="json")
    lifted = mod.delete(f"/api/rooms/{room.slug}/members/alice/ban/")
    assert (lifted.status_code, lifted.json()["code"]) == (403, "forbidden")
    assert "owner or staff" in lifted.json()["detail"]
    banned = api_client(owner).get(f"/api/rooms/{room.slug}/members/")
    assert [m["is_banned"] for m in banned.json()["results"] if m["username"] == "alice"] == [True]
