"""The claim gate: concurrent claim requests of one process settled together.

A flash sale sends thousands of claims at once. Settled one by one, each claim costs a thread
hop, a transaction and about ten statements, and the server's CPU, not the database, is the
limit (bench/README.md). The gate queues the requests of one process and lets at most `writers`
groups be in flight (`kit.coalesce.Coalescer`): while a group's transaction runs, the requests
that arrive meanwhile wait and form the next group, so the group size follows the load by itself
(one request when the server is idle, dozens under a flash sale) and no request waits for a
timer.

A group is settled a round at a time (`claim_group.split_rounds`: a subscriber, device or key
at most once per round), each round one transaction (`claim_group.claim_group`). If a round
fails as a whole (a database error, or a case only a group of one settles exactly), it is
rolled back and each of its requests is claimed alone in its own transaction.
So one request's error is only its own: whatever a round raises (a value the driver cannot
store, a bug met by one request), the round's requests are settled again one by one, and a
request that still fails alone gets its own error while the others get their claims.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from perkflow.coupons import service as coupons
from perkflow.coupons.service import claim_group
from perkflow.coupons.service.claim_group import ClaimRequest, ClaimResult
from perkflow.errors import PerkflowError, TooManyRequests, ValidationFailed
from perkflow.kit import metrics
from perkflow.kit.coalesce import Coalescer
from perkflow.kit.crypto import Vault

__all__ = ["ClaimGate", "ClaimRequest", "Settled", "claim_alone", "settle"]

log = logging.getLogger(__name__)

# What a group gives each of its requests: its outcome, its refusal, or the error it alone met.
Settled = ClaimResult | Exception
# Values the edge's types refuse, should one come through anyway: the driver cannot store them.
_UNSTORABLE = (DataError, psycopg.DataError, OverflowError)

# Bigger groups amortise more, but a group's rows stay locked for its whole transaction.
MAX_GROUP = 64
WRITERS = 1


# A deadlock (40P01) or serialization failure (40001) undoes the whole transaction; trying it
# again is safe and is what the database asks for.
_RETRYABLE = {"40P01", "40001"}
ALONE_TRIES = 4


def claim_alone(
    sessions: sessionmaker[Session], *, vault: Vault, request: ClaimRequest
) -> ClaimResult:
    """One claim in its own transaction, tried again if the database asks for it."""
    for attempt in range(ALONE_TRIES):
        try:
            return _claim_alone_once(sessions, vault=vault, request=request)
        except DBAPIError as exc:
            code = getattr(exc.orig, "sqlstate", None)
            if code not in _RETRYABLE or attempt == ALONE_TRIES - 1:
                raise
            log.info("claim retried after %s", code)
    raise AssertionError("unreachable")


def _claim_alone_once(
    sessions: sessionmaker[Session], *, vault: Vault, request: ClaimRequest
) -> ClaimResult:
    """One claim in its own transaction: the attempt is counted in it, one commit on success."""
    with sessions() as session:

        def count_attempt() -> None:
            coupons.admit_claim_attempt(
                session,
                subscriber_id=request.subscriber_id,
                device_id=request.device_id,
                batch_id=request.batch_id,
            )

        try:
            count_attempt()
            outcome = coupons.claim_coupon(
                session,
                actor=request.actor,
                vault=vault,
                batch_id=request.batch_id,
                subscriber_id=request.subscriber_id,
                idempotency_key=request.idempotency_key,
                channel=request.channel,
                device_id=request.device_id,
                zone=request.zone,
            )
            session.commit()
            return outcome
        except PerkflowError as exc:
            # A refused claim still counts as an attempt: drop the claim's changes, count it
            # again on its own and commit that. (Refused by the rate limit: nothing to keep.)
            session.rollback()
            if not isinstance(exc, TooManyRequests):
                count_attempt()
                session.commit()
            return exc
        except BaseException:
            session.rollback()
            raise


def settle(
    sessions: sessionmaker[Session], *, vault: Vault, requests: list[ClaimRequest]
) -> list[Settled]:
    """Claim a group, a transaction per round; a round that fails as a whole, each alone."""
    results: list[Settled | None] = [None] * len(requests)
    for indexes in claim_group.split_rounds(requests):
        batch = [requests[i] for i in indexes]
        for i, result in zip(indexes, _settle_round(sessions, vault, batch), strict=True):
            results[i] = result
    return [r for r in results if r is not None]


def _settle_round(
    sessions: sessionmaker[Session], vault: Vault, requests: list[ClaimRequest]
) -> list[Settled]:
    with sessions() as session:
        try:
            results = claim_group.claim_group(session, vault=vault, requests=requests)
            session.commit()
            return list(results)
        except Exception as exc:
            # Not an answer to anyone: whichever request caused it, the round is claimed
            # again one request at a time, so only that request meets its error.
            session.rollback()
            log.info("claim round of %d settled one by one: %r", len(requests), exc)
        except BaseException:
            session.rollback()
            raise
    return [_settle_alone(sessions, vault, r) for r in requests]


def _settle_alone(sessions: sessionmaker[Session], vault: Vault, request: ClaimRequest) -> Settled:
    """One request's own answer, whatever it meets."""
    try:
        return claim_alone(sessions, vault=vault, request=request)
    except _UNSTORABLE as exc:
        log.info("claim refused by the driver: %r", exc)
        return ValidationFailed("a value is out of range or malformed", field="body")
    except Exception as exc:
        log.exception("claim failed alone")
        return exc


class ClaimGate:
    """Queues one process's claim requests and settles them in groups on worker threads."""

    def __init__(
        self,
        settle_group: Callable[[list[ClaimRequest]], list[Settled]],
        *,
        max_group: int = MAX_GROUP,
        writers: int = WRITERS,
    ) -> None:
        self._groups: Coalescer[ClaimRequest, Settled] = Coalescer(
            settle_group, max_group=max_group, in_flight=writers
        )

    async def claim(self, request: ClaimRequest) -> coupons.ClaimOutcome:
        """Claim through the next group; raises the claim's own error."""
        result = await self._groups.submit(request)
        if isinstance(result, Exception):
            metrics.CLAIMS.labels(outcome=getattr(result, "code", "error")).inc()
            raise result
        replayed = getattr(result, "replayed", False)  # tests settle groups of plain values
        metrics.CLAIMS.labels(outcome="replayed" if replayed else "claimed").inc()
        return result
