"""The request owns its transaction: a page that answers 4xx leaves nothing behind, a page that
succeeds has committed before its response is sent, an exception rolls back (web/auth.DbSession,
web/forms.refuse, web/render.render)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import make_engine, make_session_factory
from perkflow.errors import Forbidden, ValidationFailed
from perkflow.kit import clock
from perkflow.main import create_app
from perkflow.org.models import LoginAttempt
from perkflow.org.rules import Role
from perkflow.settings import Settings
from perkflow.web.auth import DbSession, doom, is_doomed
from perkflow.web.forms import refuse, refused_form
from perkflow.web.render import render
from tests.factories import make_staff
from tests.web.helpers import csrf_of

PAGE = "h5/expired.html"  # any page: these routes only need something to render


def _write(session: Session, name: str) -> None:
    session.add(LoginAttempt(username=name, ip="-", at=clock.now(), success=False))
    session.flush()


def _rows(session: Session, name: str) -> int:
    query = select(func.count()).select_from(LoginAttempt).where(LoginAttempt.username == name)
    return int(session.scalar(query) or 0)


def _add_routes(app: FastAPI) -> None:
    sessions: sessionmaker[Session] = app.state.sessions

    @app.post("/t/refused")
    def refused(request: Request, session: DbSession) -> Response:
        _write(session, "refused")
        try:
            raise ValidationFailed("name: taken", field="name")
        except ValidationFailed as exc:
            status = refuse(request, session, exc)
            # Shown again after the rollback: the page reads what is stored.
            seen = _rows(session, "refused")
            _write(session, "refused-later")  # whatever the page does afterwards is undone too
            return render(request, PAGE, {"message": f"seen {seen}"}, status_code=status)

    @app.post("/t/refused-form")
    def refused_template(request: Request, session: DbSession) -> Response:
        _write(session, "refused-form")
        exc = ValidationFailed("name: taken", field="name")
        return refused_form(request, session, exc, PAGE, {"message": exc.message})

    @app.post("/t/forbidden")
    def forbidden(request: Request, session: DbSession) -> Response:
        _write(session, "forbidden")
        refuse(request, session, Forbidden("not yours"))
        return render(request, PAGE, {"message": "unreachable"})

    @app.post("/t/page-4xx")
    def page_4xx(request: Request, session: DbSession) -> Response:
        _write(session, "page-4xx")
        return render(request, PAGE, {"message": "no"}, status_code=409)

    @app.post("/t/doomed-by-hand")
    def doomed_by_hand(request: Request, session: DbSession) -> Response:
        _write(session, "by-hand")
        doom(request)
        return PlainTextResponse("no", status_code=400)

    @app.post("/t/raised")
    def raised(session: DbSession) -> Response:
        _write(session, "raised")
        raise ValidationFailed("name: taken", field="name")

    @app.post("/t/crashed")
    def crashed(session: DbSession) -> Response:
        _write(session, "crashed")
        raise RuntimeError("boom")

    @app.post("/t/saved")
    def saved(request: Request, session: DbSession) -> Response:
        _write(session, "saved")
        assert not is_doomed(request)

        def body() -> Iterator[str]:
            # Read while the response is being sent, from another connection.
            with sessions() as other:
                yield f"stored {_rows(other, 'saved')}"

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/t/shown")
    def shown(request: Request, session: DbSession) -> Response:
        _write(session, "shown")
        return render(request, PAGE, {"message": "fine"})


@pytest.fixture
def tclient(settings: Settings, ledger_url: str) -> Iterator[TestClient]:
    engine = make_engine(ledger_url)
    app = create_app(settings.model_copy(update={"database_url": ledger_url}), engine=engine)
    _add_routes(app)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        c.sessions = make_session_factory(engine)
        yield c
    engine.dispose()


def _stored(client: TestClient, name: str) -> int:
    with client.sessions() as s:
        return _rows(s, name)


def test_a_refused_form_leaves_nothing_behind(tclient: TestClient) -> None:
    r = tclient.post("/t/refused")
    assert r.status_code == 422
    assert "seen 0" in r.text  # rolled back before the page was shown again
    assert _stored(tclient, "refused") == 0
    assert _stored(tclient, "refused-later") == 0


def test_refused_form_renders_the_template_with_the_errors_and_rolls_back(
    tclient: TestClient,
) -> None:
    r = tclient.post("/t/refused-form")
    assert r.status_code == 422 and "name: taken" in r.text
    assert _stored(tclient, "refused-form") == 0


def test_an_error_that_is_not_the_forms_passes_through_and_rolls_back(
    tclient: TestClient,
) -> None:
    r = tclient.post("/t/forbidden")
    assert r.status_code == 403 and "unreachable" not in r.text
    assert _stored(tclient, "forbidden") == 0


def test_any_page_answered_4xx_is_rolled_back(tclient: TestClient) -> None:
    assert tclient.post("/t/page-4xx").status_code == 409
    assert _stored(tclient, "page-4xx") == 0
    assert tclient.post("/t/doomed-by-hand").status_code == 400
    assert _stored(tclient, "by-hand") == 0


def test_an_exception_rolls_back(tclient: TestClient) -> None:
    assert tclient.post("/t/raised").status_code == 422
    assert _stored(tclient, "raised") == 0
    assert tclient.post("/t/crashed").status_code == 500
    assert _stored(tclient, "crashed") == 0


def test_a_successful_page_commits_before_its_response_is_sent(tclient: TestClient) -> None:
    r = tclient.post("/t/saved")
    assert r.status_code == 200 and r.text == "stored 1"
    r = tclient.post("/t/shown")
    assert r.status_code == 200
    assert _stored(tclient, "shown") == 1


def test_a_wrong_password_is_recorded_though_the_page_answers_401(
    client: TestClient, web_sessions: sessionmaker[Session]
) -> None:
    with web_sessions() as s:
        make_staff(s, username="admin", role=Role.HQ_ADMIN, region="CN")
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"username": "admin", "password": "wrong", "csrf_token": token})
    assert r.status_code == 401
    with web_sessions() as s:
        assert _rows(s, "admin") == 1
