"""A replayed grant answers exactly what the first call answered, field for field."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from perkflow.catalog.rules import FulfilmentKind
from perkflow.grants import service as grants
from perkflow.grants.schemas import GrantOut
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.factories import make_api_key, make_benefit, make_partner, make_subscribers
from tests.grants.helpers import SECRET, ZONE, phones


def test_replay_over_the_api_answers_the_stored_grant_field_for_field(
    client: TestClient, web_sessions: sessionmaker[Session], vault: Vault
) -> None:
    with web_sessions() as s:
        [gd] = make_subscribers(s, vault, phones(1))
        partner = make_partner(
            s, connector_url="http://127.0.0.1:9/orders", secret=SECRET, vault=vault
        )
        service = make_benefit(s, partner=partner, code="svc", kind=FulfilmentKind.SERVICE)
        headers = {"authorization": f"Bearer {make_api_key(s, scopes=['grants:write'])}"}
    body = {"subscriber_id": gd, "benefit_id": service.id, "source": "campaign-7"}
    headers["Idempotency-Key"] = "replay-1"
    first = client.post("/v1/grants", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = client.post("/v1/grants", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()


def test_replay_answers_the_stored_grant_on_each_backend(
    sessions: sessionmaker[Session], vault: Vault
) -> None:
    def issue() -> dict[str, object]:
        with sessions() as s:
            issued = grants.issue_grant(
                s,
                actor=SYSTEM,
                subscriber_id=sid,
                benefit_id=benefit_id,
                source="campaign-7",
                idempotency_key="replay-2",
                zone=ZONE,
            )
            answer = GrantOut.model_validate(issued.grant).model_dump(mode="json")
            s.commit()
            return answer

    with sessions() as s:
        [sid] = make_subscribers(s, vault, phones(1))
        partner = make_partner(s)
        benefit_id = make_benefit(s, partner=partner, code="svc", kind=FulfilmentKind.SERVICE).id
        s.commit()
    first = issue()
    assert issue() == first
