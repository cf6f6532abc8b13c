"""Helpers for the browser tests (fixtures `chromium` and `server` are in conftest)."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connections

from tests.factories import PASSWORD

T = TypeVar("T")


def log_in_and_open_general(browser, base_url: str, username: str):
    """A new browser context, logged in through the form, on `general` once live."""
    page = browser.new_context().new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    page.goto(f"{base_url}/rooms/general/")
    page.wait_for_selector("#status.status--live")
    return page, errors


def outside_playwright(work: Callable[[], T]) -> T:
    """Run ORM code in another thread: in this one, Playwright's event loop
    makes Django raise SynchronousOnlyOperation."""

    def run() -> T:
        try:
            return work()
        finally:
            # The thread's own connection; left open, it would block the flush.
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()
