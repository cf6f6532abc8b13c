"""The admin as a moderator's console: who sees what, and no N+1 queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat.models import AuditEntry, Membership, Message, Room
from tests.factories import make_member, make_messages, make_room, make_user

pytestmark = pytest.mark.django_db

CHANGELISTS = ["room", "message", "membership", "auditentry"]


@pytest.fixture
def staff_client(client):
    client.force_login(make_user("staff", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def mod_client(client, room):
    """A non-staff moderator of `room` (the lobby)."""
    moderator = make_user("mod")
    make_member(moderator, room, role="moderator")
    client.force_login(moderator)
    return client


def test_room_moderator_sees_only_their_rooms(mod_client, room, user):
    other = make_room("other-room", name="Other Room")
    make_member(user, room)
    make_member(user, other)
    make_messages(room, user, 2)
    elsewhere = make_messages(other, user, 1)[0]
    rooms = mod_client.get("/moderation/chat/room/")
    assert rooms.status_code == 200
    assert list(rooms.context["cl"].queryset) == [room]
    listed = mod_client.get("/moderation/chat/message/").context["cl"].queryset
    assert {m.room_id for m in listed} == {room.id}
    # Another room's objects are out of reach, even by URL.
    assert mod_client.get(f"/moderation/chat/room/{other.id}/change/").status_code == 302
    assert mod_client.get(f"/moderation/chat/message/{elsewhere.id}/change/").status_code == 302


def test_room_moderator_cannot_act_on_another_room(mod_client, user):
    other = make_room("other-room")
    make_member(user, other)
    membership = Membership.objects.get(room=other)
    mod_client.post(
        "/moderation/chat/membership/", {"action": "ban", "_selected_action": [membership.id]}
    )
    membership.refresh_from_db()
    assert membership.is_banned is False
    assert not AuditEntry.objects.exists()


def test_room_moderator_bans_in_their_room(mod_client, room, user):
    make_member(user, room)
    membership = Membership.objects.get(room=room, user=user)
    response = mod_client.post(
        "/moderation/chat/membership/", {"action": "ban", "_selected_action": [membership.id]}
    )
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.is_banned is True
    assert AuditEntry.objects.get().action == "member_ban"


def test_members_and_strangers_cannot_use_the_consoles(client, room, user):
    make_member(user, room)
    client.force_login(user)
    for url in ["/moderation/", "/moderation/chat/message/", "/admin/", "/admin/chat/message/"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert "/login/" in response["Location"]


def test_moderators_are_not_staff_on_the_main_admin(mod_client):
    assert mod_client.get("/admin/chat/room/").status_code == 302


def test_audit_log_is_readable_but_not_editable(staff_client, room, user):
    make_member(user, room)
    entry = AuditEntry.objects.create(actor=user, action="room_lock", room=room, reason="x")
    assert staff_client.get("/admin/chat/auditentry/").status_code == 200
    page = staff_client.get(f"/admin/chat/auditentry/{entry.id}/change/")
    assert page.status_code == 200
    assert b'name="reason"' not in page.content  # shown, not editable
    staff_client.post(f"/admin/chat/auditentry/{entry.id}/change/", {"reason": "changed"})
    assert staff_client.post(f"/admin/chat/auditentry/{entry.id}/delete/").status_code == 403
    entry.refresh_from_db()
    assert entry.reason == "x"


def test_staff_hides_a_message_with_who_and_when(staff_client, room, user):
    message = make_messages(room, user, 1)[0]
    staff_client.post("/admin/chat/message/", {"action": "hide", "_selected_action": [message.id]})
    message.refresh_from_db()
    assert message.hidden_at is not None
    assert message.hidden_by.username == "staff"


def _fill(room_count: int) -> None:
    for _ in range(room_count):
        room = make_room()
        author = make_user()
        make_member(author, room)
        for message in make_messages(room, author, 3):
            AuditEntry.objects.create(
                actor=author, action="message_hide", room=room, target_user=author, message=message
            )


@pytest.mark.parametrize("model", CHANGELISTS)
def test_changelists_cost_the_same_queries_for_5_or_25_rows(staff_client, model):
    counts = []
    for rooms in (2, 8):
        _fill(rooms)
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(f"/admin/chat/{model}/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], f"{model}: {counts}"
    assert Message.objects.count() >= 30


@pytest.mark.parametrize("model", CHANGELISTS)
def test_moderation_site_changelists_cost_the_same_queries(mod_client, room, model):
    counts = []
    for batch in range(2):
        for _ in range(3 + 10 * batch):
            author = make_user()
            make_member(author, room)
            make_messages(room, author, 2)
        with CaptureQueriesContext(connection) as queries:
            assert mod_client.get(f"/moderation/chat/{model}/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], f"{model}: {counts}"


def test_moderators_pick_users_by_name_but_cannot_open_their_pages(mod_client, user):
    assert mod_client.get("/moderation/auth/user/").status_code == 404
    assert mod_client.get(f"/moderation/auth/user/{user.id}/change/").status_code == 404
    found = mod_client.get(
        "/moderation/autocomplete/",
        {"app_label": "chat", "model_name": "membership", "field_name": "user", "term": "ali"},
    )
    assert found.status_code == 200
    assert [result["text"] for result in found.json()["results"]] == ["alice"]


@pytest.mark.parametrize("model", ["message", "membership", "auditentry"])
def test_a_moderators_room_filter_names_only_their_rooms(mod_client, room, user, model):
    secret = make_room("secret", name="Secret Plans", is_private=True)
    make_member(user, secret)
    make_messages(secret, user, 1)
    make_member(user, room)
    page = mod_client.get(f"/moderation/chat/{model}/").content.decode()
    assert "Secret Plans" not in page


def test_accounts_are_deactivated_not_deleted(staff_client, user):
    assert staff_client.get(f"/admin/auth/user/{user.id}/delete/").status_code == 403
    actions = staff_client.get("/admin/auth/user/").context["action_form"].fields["action"]
    assert "delete_selected" not in dict(actions.choices)
    assert "deactivate" in dict(actions.choices)


def test_renaming_an_account_to_another_accounts_name_in_another_case_is_a_form_error(
    staff_client, user
):
    bob = make_user("bob")
    page = staff_client.get(f"/admin/auth/user/{bob.id}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields if name != "password"}
    data.update({"username": "ALICE", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    response = staff_client.post(f"/admin/auth/user/{bob.id}/change/", data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["username"] == [
        "A user with that username already exists."
    ]
    bob.refresh_from_db()
    assert bob.username == "bob"


def test_a_save_the_rules_refuse_is_an_error_message_not_a_500(mod_client, room, user):
    """A moderator may not mute the room's owner: the change page says so."""
    owner = make_member(user, room, role="owner")
    url = f"/moderation/chat/membership/{owner.id}/change/"
    response = mod_client.post(
        url, {"muted_until_0": "2099-01-01", "muted_until_1": "00:00:00"}, follow=True
    )
    assert response.status_code == 200
    assert response.redirect_chain == [(url, 302)]
    shown = [str(message) for message in response.context["messages"]]
    assert shown == ["Not saved: Only staff may moderate the room's owner."]
    owner.refresh_from_db()
    assert owner.muted_until is None
    assert not AuditEntry.objects.exists()


def test_a_big_rooms_page_links_to_its_members_and_still_saves(staff_client, room):
    Membership.objects.bulk_create(
        Membership(room=room, user=make_user(f"m{n}")) for n in range(101)
    )
    url = f"/admin/chat/room/{room.id}/change/"
    page = staff_client.get(url)
    assert page.context["inline_admin_formsets"] == []
    assert f'/admin/chat/membership/?room__id__exact={room.id}">101 members</a>' in (
        page.content.decode()
    )
    saved = staff_client.post(url, {"name": "Renamed", "description": ""})
    assert saved.status_code == 302
    room.refresh_from_db()
    assert room.name == "Renamed"


def test_a_small_rooms_page_edits_its_members_in_place(staff_client, room, user):
    make_member(user, room)
    page = staff_client.get(f"/admin/chat/room/{room.id}/change/")
    assert len(page.context["inline_admin_formsets"]) == 1


def test_a_ban_from_the_admin_carries_the_reason_given(mod_client, room, user):
    make_member(user, room)
    membership = Membership.objects.get(room=room, user=user)
    response = mod_client.post(
        "/moderation/chat/membership/",
        {"action": "ban", "_selected_action": [membership.id], "reason": "  spamming links "},
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.reason) == ("member_ban", "spamming links")


def test_a_room_pages_existing_members_are_named_for_good(staff_client, room, user):
    make_member(user, room)
    page = staff_client.get(f"/admin/chat/room/{room.id}/change/")
    formset = page.context["inline_admin_formsets"][0].formset
    existing, blank = formset.forms[0], formset.empty_form
    assert existing.fields["user"].disabled is True
    assert blank.fields["user"].disabled is False


def test_a_room_page_adds_and_removes_members_through_the_services(staff_client, room, user):
    leaving = make_member(user, room)
    newcomer = make_user("newcomer")
    url = f"/admin/chat/room/{room.id}/change/"
    prefix = staff_client.get(url).context["inline_admin_formsets"][0].formset.prefix
    response = staff_client.post(
        url,
        {
            "name": room.name,
            "description": room.description,
            f"{prefix}-TOTAL_FORMS": "2",
            f"{prefix}-INITIAL_FORMS": "1",
            f"{prefix}-0-id": leaving.id,
            f"{prefix}-0-room": room.id,
            f"{prefix}-0-user": newcomer.id,  # disabled: ignored
            f"{prefix}-0-DELETE": "on",
            f"{prefix}-1-room": room.id,
            f"{prefix}-1-user": newcomer.id,
        },
    )
    assert response.status_code == 302
    assert list(room.memberships.values_list("user__username", flat=True)) == ["newcomer"]
    actions = AuditEntry.objects.order_by("id").values_list("action", "target_user__username")
    assert list(actions) == [("member_remove", "alice"), ("member_add", "newcomer")]


def test_a_mute_set_on_the_membership_page_goes_through_the_service(mod_client, room, user):
    membership = make_member(user, room)
    url = f"/moderation/chat/membership/{membership.id}/change/"
    response = mod_client.post(url, {"muted_until_0": "2099-01-01", "muted_until_1": "00:00:00"})
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.muted_until.year == 2099
    assert AuditEntry.objects.get().action == "member_mute"


def test_staff_create_a_room_on_the_add_page_and_own_it(staff_client):
    prefix = staff_client.get("/admin/chat/room/add/").context["inline_admin_formsets"][0]
    prefix = prefix.formset.prefix
    response = staff_client.post(
        "/admin/chat/room/add/",
        {
            "name": "Book Club",
            "slug": "book-club",
            "description": "",
            f"{prefix}-TOTAL_FORMS": "0",
            f"{prefix}-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    room = Room.objects.get(slug="book-club")
    assert list(room.memberships.values_list("user__username", "role")) == [("staff", "owner")]
