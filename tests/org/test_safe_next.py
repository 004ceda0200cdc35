"""The `next=` target after sign-in and a language switch stays on this site."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from perkflow.org.pages import _safe_next

HOSTILE = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "https://evil.example/",
    "http:evil.example",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "/%09/evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%252F%252Fevil.example",
    "/%25252F%25252Fevil.example",
    "/console\x00",
    "/console\x7f",
    "/console /x",
    "/console\u2028",
    " /console",
    "/" + "a" * 3000,
    "",
    None,
]

SAFE = [
    ("/console", "/console"),
    ("/console/subscribers?q=abc&page=2", "/console/subscribers?q=abc&page=2"),
    ("/console/segments/3", "/console/segments/3"),
    ("/console/audit#top", "/console/audit"),
    ("/console/subscribers?q=%2F", "/console/subscribers?q=%2F"),
    ("/h5", "/h5"),
]


@pytest.mark.parametrize("target", HOSTILE)
def test_a_hostile_target_falls_back_to_the_console(target: str | None) -> None:
    assert _safe_next(target) == "/console"


@pytest.mark.parametrize(("target", "expected"), SAFE)
def test_a_same_site_path_is_kept(target: str, expected: str) -> None:
    assert _safe_next(target) == expected


@pytest.mark.parametrize("target", ["/\\evil.example", "/%2F%2Fevil.example", "/\t/evil.example"])
def test_the_language_switch_never_redirects_off_site(client: TestClient, target: str) -> None:
    r = client.get("/lang/en", params={"next": target}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console"
