"""End to end in a real browser: moderation reaches the room pages open right now.

An author deletes their own message and it vanishes from the other reader's
page; a locked room turns a member's composer read-only under a "Locked"
banner, live and on a fresh page; so does leaving the room elsewhere, or a ban.
"""

import pytest
from django.contrib.auth.models import AbstractBaseUser
from playwright.sync_api import expect

from chat import moderation, services
from chat.models import Room
from tests.browser import log_in_and_open_general, outside_playwright
from tests.conftest import need_redis
from tests.factories import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def people(server) -> dict[str, AbstractBaseUser]:
    """alice and bob, and a staff member to lock rooms.

    Requested before `chromium`: the ORM refuses to run once Playwright has an
    event loop going in this thread.
    """
    return {
        "alice": make_user("alice"),
        "bob": make_user("bob"),
        "staff": make_user("staff", is_staff=True),
    }


def set_general_locked(staff: AbstractBaseUser, locked: bool) -> None:
    room = Room.objects.get(slug="general")
    moderation.room_set_locked(actor=staff, room=room, locked=locked)


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def test_deleted_message_vanishes_from_the_other_page(people, server, chromium):
    alice, alice_errors = log_in_and_open_general(chromium, server, "alice")
    bob, bob_errors = log_in_and_open_general(chromium, server, "bob")
    send(alice, "oops, wrong room")
    # Stored (it has an id) on alice's page, shown on bob's.
    mine = alice.locator("#message-list .msg[data-id]", has_text="oops, wrong room")
    theirs = bob.locator("#message-list .msg", has_text="oops, wrong room")
    expect(mine).to_have_count(1)
    expect(theirs).to_have_count(1)
    assert theirs.locator(".msg-delete").count() == 0  # bob moderates nothing

    questions = []
    alice.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    mine.hover()
    mine.locator(".msg-delete").click()

    expect(theirs).to_have_count(0)
    expect(mine).to_have_count(0)
    assert questions == ["Delete your message? It disappears for everyone."]
    # Gone from the history a new page shows, too.
    bob.reload()
    bob.wait_for_selector("#status.status--live")
    expect(theirs).to_have_count(0)
    assert alice_errors == bob_errors == []


def test_lock_makes_a_members_composer_read_only_live(people, server, chromium):
    # The lock is broadcast from this process: only a shared layer reaches Daphne.
    need_redis()
    bob, errors = log_in_and_open_general(chromium, server, "bob")
    banner = bob.locator("#room-banner")
    expect(banner).to_be_hidden()
    expect(bob.locator("#composer-input")).to_be_enabled()

    outside_playwright(lambda: set_general_locked(people["staff"], True))

    expect(banner).to_be_visible()
    expect(banner).to_have_class("room-banner room-banner--locked")
    expect(banner).to_contain_text("Locked")
    expect(bob.locator("#composer-input")).to_be_disabled()
    expect(bob.locator(".composer-send")).to_be_disabled()

    outside_playwright(lambda: set_general_locked(people["staff"], False))

    expect(banner).to_be_hidden()
    expect(bob.locator("#composer-input")).to_be_enabled()
    expect(bob.locator(".composer-send")).to_be_enabled()
    assert errors == []


def leave_or_ban_in_general(people, how: str) -> None:
    room = Room.objects.get(slug="general")
    if how == "left":
        services.room_leave(user=people["bob"], room=room)
    else:
        moderation.member_ban(actor=people["staff"], room=room, user=people["bob"])


@pytest.mark.parametrize(
    ("how", "text"),
    [
        ("left", "You left this room from elsewhere."),
        ("banned", "You were removed from this room (banned)."),
    ],
)
def test_leaving_elsewhere_or_a_ban_makes_the_open_page_read_only(
    people, server, chromium, how, text
):
    need_redis()  # told from this process: only a shared layer reaches Daphne
    bob, errors = log_in_and_open_general(chromium, server, "bob")
    expect(bob.locator("#composer-input")).to_be_enabled()

    outside_playwright(lambda: leave_or_ban_in_general(people, how))

    banner = bob.locator("#room-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(text)
    expect(bob.locator("#composer-input")).to_be_disabled()
    assert errors == []


def test_deleting_the_room_makes_its_open_page_read_only(people, server, chromium):
    need_redis()  # told from this process: only a shared layer reaches Daphne
    bob, errors = log_in_and_open_general(chromium, server, "bob")
    send(bob, "still here?")
    expect(bob.locator("#message-list .msg[data-id] >> text=still here?")).to_be_visible()

    outside_playwright(
        lambda: services.room_delete(user=people["staff"], room=Room.objects.get(slug="general"))
    )

    expect(bob.locator("#room-banner")).to_contain_text("This room was deleted.")
    expect(bob.locator("#composer-input")).to_be_disabled()
    expect(bob.locator("#status")).to_have_text("offline")
    assert errors == []


@pytest.fixture
def locked_general(people) -> Room:
    """`general`, locked by staff before Playwright starts (the ORM still runs here)."""
    set_general_locked(people["staff"], True)
    return Room.objects.get(slug="general")


def test_locked_room_page_opens_read_only_for_members(locked_general, server, chromium):
    bob, errors = log_in_and_open_general(chromium, server, "bob")

    banner = bob.locator("#room-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("This room is locked")
    expect(bob.locator("#composer-input")).to_be_disabled()
    expect(bob.locator(".composer-send")).to_be_disabled()
    assert errors == []
