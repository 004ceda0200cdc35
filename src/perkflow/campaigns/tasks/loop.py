"""Waves ending, and the worker loop: plan, dispatch, finish waves, wait for what is due."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from perkflow.campaigns import repository as repo
from perkflow.campaigns import service as campaigns
from perkflow.campaigns.rules import WaveKind, WaveStatus
from perkflow.db import unit_of_work
from perkflow.kit import clock
from perkflow.mart import Mart

from .dispatch import dispatch_batch
from .dispatcher import Dispatcher, DispatchReport, _running_waves
from .planning import plan_wave


def finish_waves(sessions: sessionmaker[Session], *, campaign_id: int | None = None) -> list[int]:
    """Close test/rollout waves with nothing left to send; a done rollout finishes its campaign."""
    done: list[int] = []
    with unit_of_work(sessions) as session:
        for wave in repo.waves_in(session, WaveStatus.RUNNING.value, campaign_id=campaign_id):
            if wave.kind == WaveKind.TRIGGER or repo.has_open(session, wave_id=wave.id):
                continue
            if repo.move_wave(
                session,
                wave_id=wave.id,
                expected=WaveStatus.RUNNING.value,
                target=WaveStatus.DONE.value,
                finished_at=clock.now(),
            ):
                done.append(wave.id)
                if wave.kind == WaveKind.ROLLOUT:
                    campaigns.complete_campaign(session, campaign_id=wave.campaign_id)
        session.commit()
    return done


def next_due_in_s(
    sessions: sessionmaker[Session], *, now: datetime, campaign_id: int | None = None
) -> float | None:
    """Seconds until the next open contact of a sending wave is due (None: nothing open)."""
    with unit_of_work(sessions) as session:
        waves = _running_waves(session, campaign_id=campaign_id)
        if not waves:
            return None
        at = repo.next_due_at(session, wave_ids=sorted(waves))
    if at is None:
        return None
    return max(0.0, (at - now).total_seconds())


def open_totals(session: Session) -> tuple[int, int]:
    """(settled, total) contacts of the waves now sending: what a progress bar shows."""
    waves = _running_waves(session)
    if not waves:
        return 0, 0
    total, open_ = repo.totals(session, wave_ids=sorted(waves))
    return total - open_, total


@dataclass
class WorkerReport:
    rounds: int = 0
    planned: int = 0
    waves_done: int = 0
    dispatch: DispatchReport = field(default_factory=DispatchReport)


def run_worker(
    sessions: sessionmaker[Session],
    dispatcher: Dispatcher,
    *,
    mart: Mart,
    batch_size: int = 200,
    once: bool = False,
    follow: bool = False,
    idle_s: float = 0.5,
    max_wait_s: float = 60.0,
    stop: threading.Event | None = None,
    on_round: Callable[[WorkerReport], None] | None = None,
    campaign_id: int | None = None,
) -> WorkerReport:
    """Plan waves, dispatch, finish waves; until nothing is open (or forever with `follow`).

    Without `follow` it still waits for retries and expired leases due within `max_wait_s`.
    With `campaign_id` it works on that campaign's waves only (the console's dispatch-now).
    """
    stop = stop or threading.Event()
    report = WorkerReport()
    while not stop.is_set():
        report.rounds += 1
        with unit_of_work(sessions) as session:
            planning = [
                w.id
                for w in repo.waves_in(session, WaveStatus.PLANNING.value, campaign_id=campaign_id)
            ]
        for wave_id in planning:
            report.planned += plan_wave(
                sessions, mart=mart, vault=dispatcher.vault, wave_id=wave_id
            )
        batch = dispatch_batch(sessions, dispatcher, batch_size=batch_size, campaign_id=campaign_id)
        report.dispatch.add(batch)
        report.waves_done += len(finish_waves(sessions, campaign_id=campaign_id))
        if on_round is not None:
            on_round(report)
        if once:
            break
        if batch.claimed or planning:
            continue
        wait = next_due_in_s(sessions, now=clock.now(), campaign_id=campaign_id)
        if wait is None or wait > max_wait_s:
            if not follow:
                break
            stop.wait(idle_s)
        else:
            stop.wait(min(max(wait, 0.05), idle_s))
    return report
