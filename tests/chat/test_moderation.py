"""Moderation rules, called directly: who may do what, and what it does."""

from datetime import timedelta

import pytest
from django.utils import timezone

from chat import moderation, selectors, services
from chat.exceptions import Banned, Forbidden, Muted, RoomArchived, RoomLocked
from chat.models import AuditEntry, Message
from tests.factories import make_member, make_room, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def mod(room):
    moderator = make_user("mod")
    make_member(moderator, room, role="moderator")
    return moderator


@pytest.fixture
def member(user, room):
    make_member(user, room)
    return user


def post(user, room, body="hi"):
    return services.message_post(user=user, room=room, body=body)[0]


def test_locked_room_refuses_members_but_not_moderators(mod, member, room):
    moderation.room_set_locked(actor=mod, room=room, locked=True, reason="cool down")
    with pytest.raises(RoomLocked):
        post(member, room)
    assert post(mod, room, "announcement").body == "announcement"
    moderation.room_set_locked(actor=mod, room=room, locked=False)
    assert post(member, room).body == "hi"
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "reason"))
    assert actions == [("room_lock", "cool down"), ("room_unlock", "")]


def test_archived_room_refuses_everyone_and_leaves_the_list(user, member, room):
    owner = make_user("owner")
    make_member(owner, room, role="owner")
    moderation.room_set_archived(actor=owner, room=room, archived=True)
    with pytest.raises(RoomArchived):
        post(owner, room)
    assert room not in selectors.room_list_for_user(user=user)
    assert selectors.room_get_visible(slug=room.slug, user=user) == room


def test_moderators_cannot_archive(mod, room):
    with pytest.raises(Forbidden):
        moderation.room_set_archived(actor=mod, room=room, archived=True)


def test_muted_member_is_refused_until_the_mute_ends(mod, member, room):
    until = timezone.now() + timedelta(minutes=5)
    moderation.member_mute(actor=mod, room=room, user=member, until=until, reason="spam")
    with pytest.raises(Muted) as refused:
        post(member, room)
    assert refused.value.extra["until"].startswith(until.strftime("%Y-%m-%dT%H:%M"))
    moderation.member_mute(
        actor=mod, room=room, user=member, until=timezone.now() - timedelta(seconds=1)
    )
    assert post(member, room).body == "hi"


def test_banned_member_cannot_post_or_rejoin_until_unbanned(mod, member, room):
    moderation.member_ban(actor=mod, room=room, user=member, reason="abuse")
    with pytest.raises(Forbidden):
        post(member, room)
    with pytest.raises(Banned):
        services.room_join(user=member, room=room)
    moderation.member_unban(actor=mod, room=room, user=member)
    assert services.room_join(user=member, room=room).is_banned is False


@pytest.fixture
def owner(room):
    return make_member(make_user("owner"), room, role="owner").user


@pytest.fixture
def staff():
    return make_user("root", is_staff=True)


# Who bans, and whether each of the others may lift the ban.
LIFTS = {
    "mod": {"other_mod": True, "owner": True, "staff": True},
    "owner": {"mod": False, "owner": True, "staff": True},
    "staff": {"mod": False, "owner": False, "staff": True},
}


LIFT_CASES = [
    (by, lifter, allowed) for by, lifters in LIFTS.items() for lifter, allowed in lifters.items()
]


@pytest.fixture
def people(mod, owner, staff, room):
    other_mod = make_member(make_user("mod2"), room, role="moderator").user
    return {"mod": mod, "other_mod": other_mod, "owner": owner, "staff": staff}


@pytest.mark.parametrize(("banned_by", "lifted_by", "allowed"), LIFT_CASES)
def test_a_ban_is_lifted_only_with_as_much_authority_as_made_it(
    people, member, room, banned_by, lifted_by, allowed
):
    moderation.member_ban(actor=people[banned_by], room=room, user=member)
    if allowed:
        moderation.member_unban(actor=people[lifted_by], room=room, user=member)
        assert services.room_join(user=member, room=room).is_banned is False
    else:
        with pytest.raises(Forbidden):
            moderation.member_unban(actor=people[lifted_by], room=room, user=member)
        with pytest.raises(Banned):
            services.room_join(user=member, room=room)


@pytest.mark.parametrize(("muted_by", "changed_by", "allowed"), LIFT_CASES)
def test_a_running_mute_is_changed_only_with_as_much_authority_as_set_it(
    people, member, room, muted_by, changed_by, allowed
):
    until = timezone.now() + timedelta(hours=1)
    moderation.member_mute(actor=people[muted_by], room=room, user=member, until=until)

    def unmute():
        return moderation.member_mute(actor=people[changed_by], room=room, user=member, until=None)

    if allowed:
        assert unmute().muted_until is None
        assert post(member, room).body == "hi"
    else:
        with pytest.raises(Forbidden, match="may change this mute"):
            unmute()
        with pytest.raises(Muted):
            post(member, room)


def test_a_mute_that_has_ended_binds_nobody(mod, staff, member, room):
    ended = timezone.now() - timedelta(minutes=1)
    moderation.member_mute(actor=staff, room=room, user=member, until=ended)
    until = timezone.now() + timedelta(minutes=5)
    assert moderation.member_mute(actor=mod, room=room, user=member, until=until).muted_until


def test_a_moderator_cannot_lift_staffs_ban_of_the_owner(mod, owner, staff, room):
    """A ban makes the owner a plain member, whom a moderator may moderate:
    the ban itself must remember that staff made it."""
    moderation.member_ban(actor=staff, room=room, user=owner, reason="abuse")
    with pytest.raises(Forbidden, match="Only staff"):
        moderation.member_unban(actor=mod, room=room, user=owner)
    moderation.member_unban(actor=staff, room=room, user=owner)
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "actor__username"))
    assert actions == [("member_ban", "root"), ("member_unban", "root")]


def test_banning_again_with_less_authority_does_not_lower_the_ban(mod, owner, member, room):
    moderation.member_ban(actor=owner, room=room, user=member)
    moderation.member_ban(actor=mod, room=room, user=member, reason="still rude")
    with pytest.raises(Forbidden, match="owner or staff"):
        moderation.member_unban(actor=mod, room=room, user=member)
    moderation.member_unban(actor=owner, room=room, user=member)


def test_a_passer_by_of_a_public_room_can_be_banned_before_joining(mod, other_user, room):
    moderation.member_ban(actor=mod, room=room, user=other_user)
    with pytest.raises(Banned):
        services.room_join(user=other_user, room=room)


def test_members_cannot_moderate(member, other_user, room):
    make_member(other_user, room)
    message = post(other_user, room)
    for attempt in [
        lambda: moderation.room_set_locked(actor=member, room=room, locked=True),
        lambda: moderation.member_ban(actor=member, room=room, user=other_user),
        lambda: moderation.member_mute(actor=member, room=room, user=other_user, until=None),
        lambda: moderation.message_hide(actor=member, message=message),
    ]:
        with pytest.raises(Forbidden):
            attempt()
    assert not AuditEntry.objects.exists()


def test_moderator_of_one_room_cannot_touch_another(mod, user):
    elsewhere = make_room("elsewhere")
    make_member(user, elsewhere)
    with pytest.raises(Forbidden):
        moderation.member_ban(actor=mod, room=elsewhere, user=user)
    with pytest.raises(Forbidden):
        moderation.room_set_locked(actor=mod, room=elsewhere, locked=True)


def test_nobody_moderates_the_owner_and_only_the_owner_moderates_moderators(mod, room):
    owner = make_user("owner")
    make_member(owner, room, role="owner")
    other_mod = make_user("mod2")
    make_member(other_mod, room, role="moderator")
    with pytest.raises(Forbidden):
        moderation.member_ban(actor=mod, room=room, user=owner)
    with pytest.raises(Forbidden):
        moderation.member_ban(actor=mod, room=room, user=other_mod)
    moderation.member_ban(actor=owner, room=room, user=other_mod)
    assert other_mod.memberships.get(room=room).is_banned


def test_hidden_message_leaves_every_history_and_is_audited(mod, member, room):
    kept, hidden = post(member, room, "kept"), post(member, room, "rude")
    moderation.message_hide(actor=mod, message=hidden, reason="rude")
    assert selectors.message_latest(room=room) == [kept]
    hidden.refresh_from_db()
    assert (hidden.hidden_by, hidden.hidden_at is not None) == (mod, True)
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.target_user, entry.message) == (
        "message_hide",
        mod,
        member,
        hidden,
    )
    moderation.message_unhide(actor=mod, message=hidden)
    assert selectors.message_latest(room=room) == [kept, hidden]


def test_authors_delete_their_own_messages(member, room):
    message = post(member, room)
    moderation.message_delete(user=member, room=room, message_id=message.id)
    assert not Message.objects.filter(hidden_at__isnull=True).exists()
    assert AuditEntry.objects.get().action == "message_delete"


def test_staff_moderate_every_room_and_deactivate_accounts(member, room):
    staff = make_user("staff", is_staff=True)
    moderation.room_set_locked(actor=staff, room=room, locked=True)
    moderation.user_set_active(actor=staff, user=member, active=False, reason="spam bot")
    member.refresh_from_db()
    assert member.is_active is False
    assert AuditEntry.objects.filter(action="user_deactivate", reason="spam bot").exists()


def test_only_staff_deactivate_accounts(mod, member):
    with pytest.raises(Forbidden):
        moderation.user_set_active(actor=mod, user=member, active=False)
