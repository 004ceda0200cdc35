"""Coupon codes: pattern-generated pools in resumable jobs, imports and exports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from perkflow.coupons import repository as repo
from perkflow.coupons.models import (
    CodeJob,
)
from perkflow.coupons.rules import (
    MAX_STOCK,
    CodeSource,
    JobStatus,
    Permutation,
    imported_code_problem,
    normalize_code,
    pattern_problem,
)
from perkflow.errors import (
    Conflict,
    NotFound,
    ValidationFailed,
)
from perkflow.kit import clock
from perkflow.kit.crypto import Vault
from perkflow.org import service as org
from perkflow.org.rules import Actor

from .access import require_edit
from .batches import get_batch
from .claims import _code_key, _encrypt_code, _pattern_of, code_hash, decrypt_code


def start_code_job(
    session: Session, *, actor: Actor, batch_id: int, count: int | None = None
) -> CodeJob:
    """Queue generating a pattern batch's missing codes, or `count` more (stock to add later)."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    if batch.code_source != CodeSource.PATTERN:
        raise Conflict("only a pattern batch has codes generated", field="code_source")
    missing = batch.stock_total - batch.pool_size if count is None else count
    if count is not None:
        if not 1 <= count <= MAX_STOCK:
            raise ValidationFailed(f"make 1-{MAX_STOCK:,} codes", field="count")
        problem = pattern_problem(_pattern_of(batch), count=batch.pool_size + count)
        if problem:
            raise ValidationFailed(problem, field="count")
    if missing <= 0:
        raise Conflict("every code of this batch exists", field="batch_id")
    now = clock.now()
    cursor = 0
    previous = repo.jobs_of(session, batch.id)
    if previous:
        cursor = max(j.cursor for j in previous)
    job = CodeJob(
        batch_id=batch.id,
        kind="generate",
        status=JobStatus.QUEUED.value,
        total=missing,
        done=0,
        cursor=cursor,
        collisions=0,
        created_by=actor.name,
        created_at=now,
        heartbeat_at=now,
    )
    session.add(job)
    try:
        session.flush()  # the partial unique index allows one live job per batch
    except IntegrityError as exc:
        raise Conflict("a code job of this batch is already running", field="batch_id") from exc
    org.record_audit(
        session,
        actor=actor,
        action="coupon_codes.start",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"job": job.id, "count": missing},
    )
    return job


def get_job(session: Session, *, job_id: int) -> CodeJob:
    """A code job by id, or 404."""
    job = repo.get_job(session, job_id)
    if job is None:
        raise NotFound(f"no code job {job_id}", field="job_id")
    return job


def jobs_of(session: Session, *, batch_id: int) -> Sequence[CodeJob]:
    """A batch's code jobs, newest first."""
    return repo.jobs_of(session, batch_id)


def job_is_stale(job: CodeJob, *, after_s: int = 30) -> bool:
    """Whether a running job's worker stopped beating (crashed): it may be resumed."""
    return job.status == JobStatus.RUNNING and clock.now() - job.heartbeat_at > timedelta(
        seconds=after_s
    )


def run_code_chunk(session: Session, *, vault: Vault, job_id: int, size: int = 5000) -> CodeJob:
    """Generate the next chunk of a job's codes; the caller commits after each chunk."""
    job = get_job(session, job_id=job_id)
    if job.status in (JobStatus.DONE, JobStatus.FAILED):
        return job
    batch = repo.get_batch(session, job.batch_id)
    assert batch is not None
    session.refresh(batch)  # pool_size moves by CAS statements: read the committed value
    pattern = _pattern_of(batch)
    perm = Permutation(_code_key(vault, batch.id), pattern.capacity)
    want = min(size, job.total - job.done)
    candidates: list[tuple[str, str]] = []
    cursor = job.cursor
    while len(candidates) < want and cursor < pattern.capacity:
        code = pattern.spell(perm(cursor))
        candidates.append((code, code_hash(vault, code)))
        cursor += 1
    # Within a batch the permutation cannot repeat a code; another batch with the same
    # pattern can, so such codes are skipped (the unique index backs this up).
    taken = repo.existing_hashes(session, [h for _, h in candidates])
    fresh = [(c, h) for c, h in candidates if h not in taken]
    base = batch.pool_size
    repo.insert_pool_codes(
        session,
        [
            {
                "batch_id": batch.id,
                "ordinal": base + i,
                "code_hash": h,
                "code_enc": _encrypt_code(vault, c, h),
            }
            for i, (c, h) in enumerate(fresh)
        ],
    )
    # CAS on the pool size: a second worker on the same job would fail here, not interleave.
    if not repo.advance_pool(session, batch_id=batch.id, expected=base, added=len(fresh)):
        raise Conflict("another worker is filling this batch's pool", field="job_id")
    job.done += len(fresh)
    job.collisions += len(candidates) - len(fresh)
    job.cursor = cursor
    job.heartbeat_at = clock.now()
    job.status = JobStatus.RUNNING.value
    if job.done >= job.total:
        job.status = JobStatus.DONE.value
        job.finished_at = clock.now()
        org.record_audit(
            session,
            actor=Actor(kind="system", id="job", name=f"code job {job.id}"),
            action="coupon_codes.done",
            target_type="coupon_batch",
            target_id=str(batch.id),
            details={"job": job.id, "done": job.done, "collisions": job.collisions},
        )
    elif cursor >= pattern.capacity:
        job.status = JobStatus.FAILED.value
        job.error = "the pattern ran out of codes"
    session.flush()  # the caller's commit makes the chunk and the progress durable together
    return job


def fail_job(session: Session, *, job_id: int, error: str) -> None:
    """Mark a job failed (it can be started again and continues where it stopped)."""
    job = get_job(session, job_id=job_id)
    job.status = JobStatus.FAILED.value
    job.error = error[:500]
    job.finished_at = clock.now()


@dataclass(frozen=True)
class ImportReport:
    """What an import of codes did."""

    added: int
    duplicates: int
    invalid: list[tuple[int, str]]


def import_codes(
    session: Session, *, actor: Actor, vault: Vault, batch_id: int, codes: Sequence[str]
) -> ImportReport:
    """Append imported codes to a batch's pool; malformed lines are reported, duplicates skipped."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    session.refresh(batch)  # pool_size moves by CAS statements: read the committed value
    if batch.code_source != CodeSource.IMPORT:
        raise Conflict("only an import batch takes imported codes", field="code_source")
    seen: set[str] = set()
    clean: list[tuple[str, str]] = []
    invalid: list[tuple[int, str]] = []
    duplicates = 0
    for line_no, raw in enumerate(codes, start=1):
        code = normalize_code(raw)
        if not code:
            continue
        problem = imported_code_problem(code)
        if problem:
            invalid.append((line_no, problem))
            continue
        if code in seen:
            duplicates += 1
            continue
        seen.add(code)
        clean.append((code, code_hash(vault, code)))
    taken = repo.existing_hashes(session, [h for _, h in clean])
    fresh = [(c, h) for c, h in clean if h not in taken]
    duplicates += len(clean) - len(fresh)
    base = batch.pool_size
    if fresh:
        repo.insert_pool_codes(
            session,
            [
                {
                    "batch_id": batch.id,
                    "ordinal": base + i,
                    "code_hash": h,
                    "code_enc": _encrypt_code(vault, c, h),
                }
                for i, (c, h) in enumerate(fresh)
            ],
        )
        # CAS on the pool size: two imports at once cannot hand out the same ordinals.
        if not repo.advance_pool(session, batch_id=batch.id, expected=base, added=len(fresh)):
            raise Conflict("another import into this batch is running; retry", field="batch_id")
        session.refresh(batch)
    org.record_audit(
        session,
        actor=actor,
        action="coupon_codes.import",
        target_type="coupon_batch",
        target_id=str(batch.id),
        details={"added": len(fresh), "duplicates": duplicates, "invalid": len(invalid)},
    )
    return ImportReport(added=len(fresh), duplicates=duplicates, invalid=invalid)


def export_codes(
    session: Session, *, actor: Actor, vault: Vault, batch_id: int, after: int = -1, limit: int
) -> list[tuple[int, str]]:
    """(ordinal, clear code) of a pool, for printing; audited."""
    batch = get_batch(session, actor=actor, batch_id=batch_id)
    require_edit(actor, batch.owner_region)
    rows = repo.pool_codes_page(session, batch_id=batch.id, after_ordinal=after, limit=limit)
    if after < 0:
        org.record_audit(
            session,
            actor=actor,
            action="coupon_codes.export",
            target_type="coupon_batch",
            target_id=str(batch.id),
        )
    return [(r.ordinal, decrypt_code(vault, code_enc=r.code_enc, hashed=r.code_hash)) for r in rows]
