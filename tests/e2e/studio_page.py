"""The Studio's page as a person uses it, shared by the browser tests (the `browser` and `page`
fixtures are in tests/e2e/conftest.py)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.harness import Server

PASSWORD = "studio password 123"
"""Every browser test's accounts are made with it."""


def sign_in(page: Page, server: Server, username: str) -> None:
    page.goto(f"{server.root}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(username, exact=True)).to_be_visible()
