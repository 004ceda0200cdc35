"""A coupon code job beside the console: short committed chunks on SQLite, every code once."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons import tasks
from perkflow.coupons.models import PoolCode
from perkflow.coupons.rules import CodeSource
from perkflow.kit.crypto import Vault
from perkflow.org.rules import SYSTEM
from tests.coupons.factories import make_batch

CODES = 3_000


def test_a_large_code_job_commits_in_short_chunks_and_makes_each_code_once(
    session: Session, sessions: sessionmaker[Session], vault: Vault
) -> None:
    batch = make_batch(session, activate=False, stock_total=CODES, code_source=CodeSource.PATTERN)
    job = coupons.start_code_job(session, actor=SYSTEM, batch_id=batch.id)
    session.commit()
    progress: list[int] = []
    done = tasks.run_code_job(
        sessions, vault=vault, job_id=job.id, progress=lambda n, _total: progress.append(n)
    )
    assert done == "done"
    assert progress[-1] == CODES and progress == sorted(set(progress))
    if session.get_bind().dialect.name == "sqlite":
        # One SQLite write lock for every writer: the job never holds it for its whole run.
        assert len(progress) > 3, progress
    else:
        assert len(progress) == 1  # PostgreSQL keeps the job's own chunk size
    made = session.scalar(
        select(func.count(func.distinct(PoolCode.code_hash))).where(PoolCode.batch_id == batch.id)
    )
    assert made == CODES
