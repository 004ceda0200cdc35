"""A body that is not JSON is named as the body, with the line and column where decoding stopped."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.org.rules import API_SCOPES
from tests.factories import make_api_key


def test_malformed_json_names_the_body_and_its_line_and_column(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        key = make_api_key(s, scopes=sorted(API_SCOPES))
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    body = b'{"subscriber_id": 1,\n "benefit_id": ,}'
    r = client.post("/v1/grants", content=body, headers=headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "body"
    assert error["message"].startswith("body: invalid JSON at line 2 column 16"), error
    assert error["errors"] == [{"field": "body", "message": error["message"][len("body: ") :]}]
