"""End to end in a real browser: Debian's Chromium driven by Playwright, against Daphne.

Two people sign up through the form, open `general`, and see each other's
messages live; a message that looks like HTML shows as text.
"""

import pytest

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
