"""Background work of coupons: code generation in committed chunks, periodic housekeeping.

The housekeeping round also expires red envelopes (`envelopes.tasks`).

An entry point: each function here owns and commits its transactions.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.rules import JobStatus
from perkflow.db import Pacer, unit_of_work
from perkflow.envelopes import tasks as envelope_tasks
from perkflow.errors import PerkflowError
from perkflow.kit.crypto import Vault

Progress = Callable[[int, int], None]
CHUNK = 10_000
log = logging.getLogger(__name__)


def run_code_job(
    sessions: sessionmaker[Session],
    *,
    vault: Vault,
    job_id: int,
    progress: Progress | None = None,
    chunk: int = CHUNK,
) -> str:
    """Generate a job's codes chunk by chunk, each chunk committed with the job's progress."""
    # It runs beside the console (a thread of the server): on SQLite its chunks stay short.
    pacer = Pacer(sessions, most=chunk)
    while True:
        try:
            with pacer.turn(), unit_of_work(sessions) as session:
                job = coupons.run_code_chunk(session, vault=vault, job_id=job_id, size=pacer.size)
                done, total, status = job.done, job.total, job.status
                session.commit()
        except PerkflowError as exc:
            with unit_of_work(sessions) as session:
                coupons.fail_job(session, job_id=job_id, error=exc.message)
                session.commit()
            return JobStatus.FAILED.value
        if progress is not None:
            progress(done, total)
        if status != JobStatus.RUNNING:
            return status


def start_in_background(sessions: sessionmaker[Session], *, vault: Vault, job_id: int) -> None:
    """Run a job on a daemon thread of this process (a crash leaves it resumable)."""
    threading.Thread(
        target=run_code_job,
        kwargs={"sessions": sessions, "vault": vault, "job_id": job_id},
        name=f"coupon-code-job-{job_id}",
        daemon=True,
    ).start()


def prune_rate_limits(sessions: sessionmaker[Session]) -> int:
    """Drop finished claim-rate windows in one committed transaction; how many rows went."""
    with unit_of_work(sessions) as session:
        dropped = coupons.prune_rate_buckets(session)
        session.commit()
    return dropped


def run_rate_pruner(
    sessions: sessionmaker[Session], *, every_s: float, stop: threading.Event
) -> None:
    """Prune finished rate windows every `every_s` seconds until `stop` is set (a scheduler)."""
    # Each claim attempt adds up to two rows per 10 s window; without this the table only grows.
    while not stop.is_set():
        prune_rate_limits(sessions)
        stop.wait(every_s)


@dataclass(frozen=True)
class Housekeeping:
    """What one round of housekeeping did."""

    rate_windows: int
    envelopes: int
    returned_fen: int


def housekeep(sessions: sessionmaker[Session]) -> Housekeeping:
    """One round of the periodic work, each job in its own transaction."""
    dropped = prune_rate_limits(sessions)
    expired = envelope_tasks.expire_envelopes(sessions)
    return Housekeeping(
        rate_windows=dropped, envelopes=expired.envelopes, returned_fen=expired.returned_fen
    )


def run_housekeeping(
    sessions: sessionmaker[Session],
    *,
    every_s: float,
    stop: threading.Event,
    on_round: Callable[[Housekeeping], None] | None = None,
) -> None:
    """Housekeep every `every_s` seconds until `stop` is set (the coupons' scheduler)."""
    while not stop.is_set():
        try:
            done = housekeep(sessions)
        except Exception:
            # A database hiccup must not end the scheduler; every job is safe to run again.
            log.exception("coupon housekeeping failed; retrying in %s s", every_s)
        else:
            if on_round is not None:
                on_round(done)
        stop.wait(every_s)
