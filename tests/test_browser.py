"""End to end in a real browser: Debian's Chromium driven by Playwright, against Daphne.

Two people sign up through the form, open `general`, and see each other's
messages live; a message that looks like HTML shows as text.
"""

import psycopg
import pytest
from django.conf import settings

from tests.conftest import need_postgres
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

XSS = "<img src=x onerror=alert(1)>"


def sign_up_and_open_general(browser, server: str, username: str):
    page = browser.new_context().new_page()
    alerts = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    page.goto(f"{server}/accounts/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/")
    page.click("text=General")
    page.wait_for_selector("#status.status--live")
    return page, alerts


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")


def test_two_people_chat_live_and_html_stays_text(server, chromium):
    # `server` first: the ORM refuses to run once Playwright has an event loop going.
    alice, alice_alerts = sign_up_and_open_general(chromium, server, "alice")
    bob, bob_alerts = sign_up_and_open_general(chromium, server, "bob")

    alice.wait_for_selector("#online-list >> text=bob")
    send(alice, "hello bob, it's alice")
    bob.wait_for_selector("#message-list >> text=hello bob, it's alice")

    send(bob, XSS)
    received = alice.wait_for_selector(f"#message-list .msg-body >> text={XSS}")
    assert received.text_content() == XSS
    assert alice.locator("#message-list img").count() == 0
    assert bob.locator("#message-list img").count() == 0
    assert alice_alerts == bob_alerts == []

    # Stored, so a reload shows both messages again, once each.
    bob.reload()
    bob.wait_for_selector("#status.status--live")
    bodies = bob.locator("#message-list .msg-body").all_text_contents()
    assert bodies == ["hello bob, it's alice", XSS]


def test_a_message_refused_while_the_database_is_away_is_sent_again(server, chromium):
    """The server answers `unavailable` when it lost its database connections
    (docs/protocol.md); the page sends the message again after the wait."""
    need_postgres()
    alice, alerts = sign_up_and_open_general(chromium, server, "alice")
    send(alice, "before")
    alice.wait_for_selector("#message-list .msg[data-id] >> text=before")
    # Every PostgreSQL session of the server ends, as in a PostgreSQL restart.
    # Straight through psycopg: Django's ORM refuses to run beside Playwright.
    port = server.rsplit(":", 1)[1]
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            [f"chat-test-server-{port}"],
        ).fetchone()[0]
    assert ended >= 1

    send(alice, "during")
    alice.wait_for_selector("#message-list .msg[data-id] >> text=during", timeout=20_000)
    assert alice.locator("#message-list .msg--failed").count() == 0
    assert alerts == []
    alice.reload()
    alice.wait_for_selector("#status.status--live")
    assert alice.locator("#message-list .msg-body").all_text_contents() == ["before", "during"]
