"""The people of the account tests: users made through the admin's API, and ways to log a
browser in or to read the page the way a person does (by labels, roles and visible text)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Page, expect

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "the admin's own password"
PASSWORD = "correct horse battery staple"


def new_email(who: str = "user") -> str:
    """An address no other test uses: the tests share one service and its database."""
    return f"{who}-{uuid.uuid4().hex[:8]}@example.com"


@dataclass
class Person:
    id: int
    email: str
    password: str = PASSWORD


class AdminAPI:
    """The service's API as its first admin, from a script (no browser): to arrange a test."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)
        self.call("POST", "/api/auth/login", email=ADMIN_EMAIL, password=ADMIN_PASSWORD)

    def call(self, method: str, path: str, **body: Any) -> Any:
        response = self.http.request(method, path, json=body if method != "GET" else None)
        response.raise_for_status()
        return response.json()

    def new_user(self, who: str = "user", *, role: str = "user") -> Person:
        email = new_email(who)
        made = self.call("POST", "/api/admin/users", email=email, password=PASSWORD, role=role)
        return Person(made["id"], email)

    def user(self, person: Person) -> dict[str, Any]:
        """The user as the admin list shows it."""
        after = 0
        while page := self.call("GET", f"/api/admin/users?after={after}"):
            for user in page:
                if user["id"] == person.id:
                    return dict(user)
            after = page[-1]["id"]
        raise LookupError(person.email)

    def invite(self, email: str | None = None, role: str = "user") -> str:
        """An invite's token."""
        body: dict[str, Any] = {"role": role} | ({"email": email} if email else {})
        return str(self.call("POST", "/api/invites", **body)["token"])

    def close(self) -> None:
        self.http.close()


def can_log_in(url: str, email: str, password: str) -> int:
    """The status a login with these answers (200: it works)."""
    response = httpx.post(url + "/api/auth/login", json={"email": email, "password": password})
    return response.status_code


def log_in(context: BrowserContext, email: str, password: str = PASSWORD) -> None:
    """Log a browser in without its login page (that page has its own tests): a session cookie."""
    response = context.request.post("/api/auth/login", data={"email": email, "password": password})
    assert response.ok, response.text()


def open_page(page: Page, path: str) -> Page:
    """Open a page and wait until its script has wired it up."""
    page.goto(path)
    expect(page.locator("body[data-ready]")).to_be_attached()
    return page


def fill_login(page: Page, email: str, password: str) -> None:
    login = page.get_by_role("region", name="Log in")
    login.get_by_label("Email").fill(email)
    login.get_by_label("Password").fill(password)
    login.get_by_role("button", name="Log in").click()


def path_of(page: Page) -> str:
    """The page's address without the origin: where the browser is on the site."""
    return str(page.evaluate("location.pathname + location.search + location.hash"))


def everything_on(page: Page) -> str:
    """The page's markup and the values of its fields (which the markup does not hold): where a
    secret shown once could still be found."""
    return str(
        page.evaluate(
            "document.documentElement.outerHTML + [...document.querySelectorAll('input')]"
            ".map(i => i.value).join(' ')"
        )
    )
