"""End to end in a real browser: scrolling up in a room loads its older messages.

The page shows the latest 50; scrolling to the top fetches older pages from the
REST history API until the beginning of the conversation, each message once.
"""

import pytest

from chat.models import Room
from tests.browser import log_in_and_open_general
from tests.factories import make_messages, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MESSAGE_COUNT = 120  # the page's 50, then pages of 50 and 20


@pytest.fixture
def long_history(server):
    """A user and MESSAGE_COUNT messages in `general`: `message 0` is the oldest.

    Requested before `chromium`: the ORM refuses to run once Playwright has an
    event loop going.
    """
    user = make_user("alice")
    room, _ = Room.objects.get_or_create(slug="general", defaults={"name": "General"})
    make_messages(room, user, MESSAGE_COUNT)
    return user


def scroll_to_top(page) -> None:
    """Scrolls the messages to the top and waits for the load that starts."""
    shown = page.locator("#message-list .msg").count()
    page.eval_on_selector("#message-scroller", "scroller => { scroller.scrollTop = 0; }")
    page.wait_for_function(
        """(shown) => document.querySelectorAll("#message-list .msg").length > shown
                      || document.getElementById("older").textContent.includes("Beginning")""",
        arg=shown,
    )


def test_scrolling_up_loads_every_older_message_once_in_order(long_history, server, chromium):
    page, errors = log_in_and_open_general(chromium, server, long_history.username)
    assert page.locator("#message-list .msg").count() == 50
    beginning = page.locator("#older", has_text="Beginning of the conversation")

    for _ in range(MESSAGE_COUNT // 50 + 1):
        if beginning.is_visible():
            break
        scroll_to_top(page)

    assert beginning.is_visible()
    bodies = page.locator("#message-list .msg-body").all_text_contents()
    assert bodies == [f"message {i}" for i in range(MESSAGE_COUNT)]
    assert errors == []
