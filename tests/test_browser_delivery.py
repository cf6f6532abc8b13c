"""End to end in a real browser: the room page loses no message and leaves
none hanging, across reconnects, refused joins and the send rate."""

import json
import re

import pytest
from django.contrib.auth.models import AbstractBaseUser
from playwright.sync_api import expect

from chat import services
from chat.models import Room
from tests.browser import log_in_and_open_general, outside_playwright
from tests.factories import make_member, make_user
from tests.servers import daphne

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MESSAGES = "#message-list .msg[data-id]"


@pytest.fixture
def people(server) -> dict[str, AbstractBaseUser]:
    """alice and bob; before `chromium` (the ORM refuses to run beside Playwright)."""
    return {"alice": make_user("alice"), "bob": make_user("bob")}


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def post_unheard(user: AbstractBaseUser, count: int) -> None:
    """`count` messages stored in `general` and not broadcast: no open page
    hears them until it asks the database (a join with `since`)."""
    room = Room.objects.get(slug="general")
    make_member(user, room)
    for n in range(count):
        services.message_post(user=user, room=room, body=f"m{n}", broadcast=False)


def test_a_page_opened_on_an_empty_room_gets_everything_after_a_reconnect(people, server, chromium):
    alice, errors = log_in_and_open_general(chromium, server, "alice")
    assert alice.locator(MESSAGES).count() == 0
    # More than a page (50) of messages that alice did not hear live.
    outside_playwright(lambda: post_unheard(people["bob"], 80))

    alice.evaluate("chatApp.disconnect()")  # as a laptop waking from sleep

    expect(alice.locator(MESSAGES)).to_have_count(80, timeout=15_000)
    bodies = alice.locator("#message-list .msg-body").all_text_contents()
    assert bodies == [f"m{n}" for n in range(80)]
    assert errors == []


def test_a_join_the_server_could_not_answer_is_asked_again(people, server, chromium):
    """The server answers a join `unavailable` when its database is away
    (docs/protocol.md). Making a real database fail between the handshake
    (which reads the session) and the join is not practical, so the browser's
    socket goes through a route that answers the first join that way, and
    passes everything else to the real server."""
    alice, errors = log_in_and_open_general(chromium, server, "alice")
    refused = []

    def refuse_the_first_join(socket) -> None:
        real_server = socket.connect_to_server()

        def from_page(text: str) -> None:
            frame = json.loads(text)
            if frame["type"] == "join" and not refused:
                refused.append(frame)
                socket.send(
                    json.dumps(
                        {
                            "type": "error",
                            "code": "unavailable",
                            "detail": "The service is briefly unavailable.",
                            "ref": frame["room"],
                            "retry_after": 0.5,
                        }
                    )
                )
                return
            real_server.send(text)

        socket.on_message(from_page)

    alice.route_web_socket(re.compile(r"/ws/chat/$"), refuse_the_first_join)
    alice.reload()

    expect(alice.locator("#status")).to_have_text("live", timeout=10_000)
    assert len(refused) == 1
    send(alice, "after the retry")
    expect(alice.locator(f"{MESSAGES} >> text=after the retry")).to_be_visible()
    assert errors == []


@pytest.fixture
def strict_server(transactional_db):
    """A server whose send rate is 2 at once, then 4 a second."""
    Room.objects.get_or_create(slug="general", defaults={"name": "General"})
    make_user("alice")
    with daphne(SEND_BURST="2", SEND_RATE="4") as address:
        yield f"http://{address}"


def test_messages_sent_faster_than_the_rate_all_go_out_in_order(strict_server, chromium):
    alice, errors = log_in_and_open_general(chromium, strict_server, "alice")
    texts = [f"quick {n}" for n in range(6)]
    for text in texts:
        send(alice, text)

    expect(alice.locator(MESSAGES)).to_have_count(6, timeout=15_000)
    assert alice.locator(".msg--failed").count() == 0
    assert alice.locator(".msg--pending").count() == 0
    assert alice.locator("#message-list .msg-body").all_text_contents() == texts
    alice.reload()  # and stored, each once
    alice.wait_for_selector("#status.status--live")
    assert alice.locator("#message-list .msg-body").all_text_contents() == texts
    assert errors == []


def test_a_message_too_large_for_a_frame_fails_and_the_next_goes_out(people, server, chromium):
    alice, errors = log_in_and_open_general(chromium, server, "alice")
    # 3,000 control characters: within the composer's 4,000, but JSON writes
    # each as \u0001, 18,000 bytes: over the server's 16 KiB frame.
    send(alice, "\u0001" * 3000)
    send(alice, "a normal one")

    expect(alice.locator(".msg--failed .msg-state")).to_contain_text("Not sent")
    expect(alice.locator(f"{MESSAGES} >> text=a normal one")).to_be_visible()
    assert alice.locator(".msg--pending").count() == 0
    assert errors == []


def test_unsent_messages_and_the_draft_survive_a_reload(people, server, chromium):
    alice, errors = log_in_and_open_general(chromium, server, "alice")
    dropping = [True]

    def drop_messages_for_now(socket) -> None:
        """Until told otherwise, the page's messages reach no server: as a
        connection that died with them in flight."""
        real_server = socket.connect_to_server()

        def from_page(text: str) -> None:
            if not (dropping[0] and json.loads(text)["type"] == "message"):
                real_server.send(text)

        socket.on_message(from_page)

    alice.route_web_socket(re.compile(r"/ws/chat/$"), drop_messages_for_now)
    alice.reload()
    expect(alice.locator("#status")).to_have_text("live")
    send(alice, "written before the reload")
    expect(alice.locator(".msg--pending")).to_have_count(1)
    alice.fill("#composer-input", "half a thought")

    dropping[0] = False
    alice.reload()

    expect(alice.locator(f"{MESSAGES} >> text=written before the reload")).to_be_visible()
    expect(alice.locator("#composer-input")).to_have_value("half a thought")
    assert alice.locator(".msg--pending").count() == 0
    alice.reload()  # stored once, and nothing left to send
    expect(alice.locator("#status")).to_have_text("live")
    assert alice.locator("#message-list .msg-body").all_text_contents() == [
        "written before the reload"
    ]
    assert errors == []


def test_others_messages_are_read_out_and_ours_are_not(people, server, chromium):
    alice, alice_errors = log_in_and_open_general(chromium, server, "alice")
    bob, bob_errors = log_in_and_open_general(chromium, server, "bob")
    alice.wait_for_selector("#online-list >> text=bob")

    send(bob, "hello alice")

    expect(alice.locator("#announcer")).to_have_text("bob: hello alice")
    expect(alice.locator("#announcer")).to_have_attribute("aria-live", "polite")
    expect(bob.locator(f"{MESSAGES} >> text=hello alice")).to_be_visible()
    expect(bob.locator("#announcer")).to_have_text("")
    assert alice_errors == bob_errors == []
