"""Helpers for the browser tests (fixtures `chromium` and `server` are in conftest)."""

from tests.factories import PASSWORD


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
