"""Browserless helpers for page tests: read the CSRF token, sign in."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.factories import PASSWORD


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> None:
    token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token, "next": "/console"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
