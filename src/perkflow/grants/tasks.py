"""The outbox worker: an entry point that leases due messages and delivers them to partners."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from sqlalchemy.orm import Session, sessionmaker

from perkflow.db import unit_of_work
from perkflow.grants import connector
from perkflow.grants import service as grants
from perkflow.grants.rules import Outcome, OutcomeKind
from perkflow.kit import clock
from perkflow.kit.crypto import Vault

log = logging.getLogger("perkflow.grants.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process behaves."""

    callback_base: str
    lease_s: float = 60.0
    batch: int = 32
    concurrency: int = 8
    backoff_base_s: float = 1.0
    callback_wait_s: float = 10.0
    paused_defer_s: float = 300.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    idle_s: float = 0.5


def worker_id() -> str:
    """host:pid:random, so a lease names the process that holds it."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxWorker:
    """Leases due messages, calls partners outside any transaction, records each outcome."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        vault: Vault,
        config: WorkerConfig,
        name: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.vault = vault
        self.config = config
        self.name = name or worker_id()
        self.breakers = connector.Breakers(
            threshold=config.breaker_threshold, cooldown_s=config.breaker_cooldown_s
        )
        self.tally: Counter[str] = Counter()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._clients_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, config.concurrency), thread_name_prefix="outbox"
        )

    def _client(self) -> httpx.Client:
        # One connection pool per delivery thread.
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(follow_redirects=False)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def close(self) -> None:
        """Stop the delivery threads and close their connections."""
        self._pool.shutdown(wait=True)
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def claim(self) -> list[int]:
        """Lease a batch of due messages in one short transaction."""
        with unit_of_work(self.sessions) as session:
            ids = grants.claim_messages(
                session,
                worker=self.name,
                now=clock.now(),
                lease_s=self.config.lease_s,
                limit=self.config.batch,
            )
            session.commit()
        return ids

    def deliver(self, message_id: int) -> str:
        """Build, send and record one message; each step in its own transaction or none."""
        cfg = self.config
        with unit_of_work(self.sessions) as session:
            delivery = grants.prepare_delivery(
                session,
                vault=self.vault,
                message_id=message_id,
                worker=self.name,
                callback_base=cfg.callback_base,
                defer_s=cfg.paused_defer_s,
            )
            session.commit()
        if delivery is None:
            return "skipped"
        breaker = self.breakers.of(delivery.partner_id)
        defer_s = 0.0
        if breaker.allow():
            # No transaction is open while we wait on the partner.
            outcome = connector.send(self._client(), delivery)
            breaker.record(outcome)
        else:
            defer_s = max(breaker.retry_in_s(), 0.05)
            outcome = Outcome(OutcomeKind.DEFERRED, error="circuit open: partner is failing")
        with unit_of_work(self.sessions) as session:
            what = grants.record_outcome(
                session,
                message_id=message_id,
                worker=self.name,
                outcome=outcome,
                backoff_base_s=cfg.backoff_base_s,
                callback_wait_s=cfg.callback_wait_s,
                defer_s=defer_s,
            )
            session.commit()
        log.info("message %s: %s (%s)", message_id, what, outcome.error or outcome.kind.value)
        return what

    def _deliver_safely(self, message_id: int) -> str:
        try:
            return self.deliver(message_id)
        except Exception as exc:
            # One bad message must not stop the worker; it counts as a failed attempt, so a
            # message that always crashes ends in the dead-letter list instead of looping.
            log.exception("message %s: delivery crashed", message_id)
            try:
                with unit_of_work(self.sessions) as session:
                    grants.record_outcome(
                        session,
                        message_id=message_id,
                        worker=self.name,
                        outcome=Outcome(OutcomeKind.RETRY, error=f"worker error: {exc!r}"[:300]),
                        backoff_base_s=self.config.backoff_base_s,
                        callback_wait_s=self.config.callback_wait_s,
                    )
                    session.commit()
            except Exception:
                log.exception(
                    "message %s: recording the crash failed; the lease will run out", message_id
                )
            return "crashed"

    def run_once(self) -> int:
        """Claim one batch and deliver it in parallel; returns how many messages were claimed."""
        ids = self.claim()
        for what in self._pool.map(self._deliver_safely, ids):
            self.tally[what] += 1
        return len(ids)

    def drain(self, *, max_seconds: float = 60.0) -> int:
        """Deliver until nothing is due right now (or time runs out); returns messages claimed."""
        deadline = time.monotonic() + max_seconds
        total = 0
        while time.monotonic() < deadline:
            n = self.run_once()
            total += n
            if n == 0:
                break
        return total

    def run(self, *, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Deliver until `stop` is set (or `max_seconds` pass), sleeping briefly when idle."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            try:
                n = self.run_once()
            except Exception:
                log.exception("claiming failed; retrying")
                n = 0
            if n == 0:
                stop.wait(self.config.idle_s)
