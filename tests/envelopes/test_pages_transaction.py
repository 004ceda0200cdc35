"""Red-envelope pages own their transaction: a refused draw or programme leaves nothing stored
and its page says why; typed chances and amounts are read exactly (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.envelopes import service as envelopes
from perkflow.envelopes.models import EnvelopeDraw, EnvelopeProgram
from perkflow.errors import Conflict, ValidationFailed
from perkflow.kit.crypto import Vault
from perkflow.main import create_app
from perkflow.org.models import AuditEntry
from perkflow.org.rules import SYSTEM, Role
from perkflow.settings import Settings
from perkflow.subscribers import service as subscribers
from tests.envelopes.factories import make_lottery
from tests.factories import make_staff, make_subscribers
from tests.web.helpers import csrf_of, sign_in

PHONE = ("13812345678", "GD", "GD01")


@pytest.fixture
def app_sessions(
    settings: Settings, ledger_url: str
) -> Iterator[tuple[TestClient, sessionmaker[Session]]]:
    engine = make_engine(ledger_url)
    app = create_app(settings.model_copy(update={"database_url": ledger_url}), engine=engine)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, make_session_factory(engine)
    engine.dispose()


def _count(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _then_refuse(real: Callable[..., Any], refusal: Exception) -> Callable[..., Any]:
    """The real service call, its writes done, then a refusal (one met after writing)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise refusal

    return wrapped


def test_a_refused_draw_stores_no_draw_and_spends_no_budget(
    app_sessions: tuple[TestClient, sessionmaker[Session]],
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        make_subscribers(s, vault, [PHONE])
        lottery = make_lottery(s, budget_fen=100_000, tiers=[(1, 888, 1_000_000)])
        _, signed = subscribers.issue_login_token(s, actor=SYSTEM, vault=vault, phone=PHONE[0])
        s.commit()
    assert client.get(f"/h5/enter?t={signed}", follow_redirects=False).status_code == 303
    token = csrf_of(client.get("/h5/envelopes").text)
    refusal = Conflict("refused after the draw was written", field="program_id")
    monkeypatch.setattr(envelopes, "draw_lottery", _then_refuse(envelopes.draw_lottery, refusal))
    r = client.post(f"/h5/envelopes/{lottery.id}/draw", data={"csrf_token": token})
    assert r.status_code == 409 and "refused after the draw was written" in r.text
    assert 'id="draw-result"' not in r.text
    assert _count(sessions, EnvelopeDraw) == 0
    assert _count(sessions, AuditEntry, AuditEntry.action == "envelope.draw") == 0
    with sessions() as s:
        program = s.get(EnvelopeProgram, lottery.id)
        assert program is not None and program.spent_fen == 0
    monkeypatch.undo()
    drawn = client.post(f"/h5/envelopes/{lottery.id}/draw", data={"csrf_token": token})
    assert drawn.status_code == 200 and _count(sessions, EnvelopeDraw) == 1


def _programme_form(client: TestClient, **fields: str) -> dict[str, str]:
    page = client.get("/console/envelopes")
    return {
        "csrf_token": csrf_of(page.text),
        "code": "refused-lottery",
        "name_zh": "抽红包",
        "name_en": "Lucky draw",
        "kind": "lottery",
        "budget_yuan": "1000",
        "tier1_yuan": "8.88",
        "tier1_percent": "50",
        **fields,
    }


def test_a_refused_programme_leaves_no_programme(
    app_sessions: tuple[TestClient, sessionmaker[Session]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "hq")
    refusal = ValidationFailed("refused after the programme was written", field="code")
    monkeypatch.setattr(
        envelopes, "create_program", _then_refuse(envelopes.create_program, refusal)
    )
    r = client.post("/console/envelopes/new", data=_programme_form(client))
    assert r.status_code == 422 and "code: refused after the programme was written" in r.text
    assert 'value="refused-lottery"' in r.text  # the values sent are shown again
    assert _count(sessions, EnvelopeProgram) == 0
    assert _count(sessions, AuditEntry, AuditEntry.action == "envelope_program.create") == 0


def test_chances_and_amounts_are_read_exactly(
    app_sessions: tuple[TestClient, sessionmaker[Session]],
) -> None:
    client, sessions = app_sessions
    with sessions() as s:
        make_staff(s, username="hq", role=Role.HQ_ADMIN, region="CN")
    sign_in(client, "hq")
    for field, bad in (
        ("tier1_percent", "inf"),
        ("tier1_percent", "nan"),
        ("tier1_percent", "-5"),
        ("tier1_percent", "1e3"),
        ("tier1_yuan", "8.888"),
        ("budget_yuan", "-1000"),
    ):
        r = client.post("/console/envelopes/new", data=_programme_form(client, **{field: bad}))
        assert r.status_code == 422 and field in r.text, (field, bad)
    assert _count(sessions, EnvelopeProgram) == 0
    # 0.00005 % is 0.5 ppm, rounded half to even (0, and a tier's least weight is 1 ppm);
    # 12.34565 % is 123,456.5 ppm, rounded to 123,456.
    r = client.post(
        "/console/envelopes/new",
        data=_programme_form(
            client, tier1_percent="12.34565", tier2_yuan="1", tier2_percent="0.00005"
        ),
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    program_id = int(re.findall(r"\d+", r.headers["location"])[-1])
    with sessions() as s:
        tiers = envelopes.program_tiers(s, program_id=program_id)
        assert [(t.tier, t.weight_ppm, t.prize_fen) for t in tiers] == [
            (1, 123_456, 888),
            (2, 1, 100),
        ]
