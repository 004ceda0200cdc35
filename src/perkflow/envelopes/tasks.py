"""Background work of red envelopes: expiring share envelopes past their programme's end.

An entry point: each function here owns and commits its transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import unit_of_work
from perkflow.envelopes import service as envelopes


def expire_envelopes(sessions: sessionmaker[Session]) -> envelopes.ExpiryReport:
    """Expire share envelopes past their programme's end in one committed transaction."""
    with unit_of_work(sessions) as session:
        report = envelopes.expire_envelopes(session)
        session.commit()
    return report
