"""The job lifecycle: create, claim, and every status change. No status changes anywhere else.

Each change is one short write transaction. Changes made for a worker are *fenced* by the lease
token the worker received when it claimed the job: if the job was canceled meanwhile, or its lease
expired and another worker took it over, the update matches no row and `LeaseLost` is raised, so
a worker that lost its job cannot overwrite anything.

An edit's input files (app.inputs checks them) are written before the job's row commits, and its
`job_inputs` rows commit with the job; Retry and Generate again point the new job at the same
files (no re-upload). A streaming job's latest partial frame (`record_preview`) is a file written
under the job's lease and removed whenever the job ends, is canceled or deleted.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, case, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased, joinedload, selectinload

from app import coordination, limits, logs, metrics, pricing, search, storage
from app.crashpoints import crash_point
from app.models import (
    Image,
    ImageStatus,
    Job,
    JobInput,
    JobKind,
    JobPhase,
    JobStatus,
    ProviderPause,
    User,
    UTCDateTime,
    db,
    utcnow,
    write_transaction,
)
from app.providers.base import ImageSlot
from app.validation import JobRequest, ValidationError, find_target

log = logging.getLogger(__name__)

# Values that let go of a job: no worker holds it until it is claimed again.
RELEASED = {"lease_token": None, "lease_expires_at": None}
# Values of a job without a preview (every job that is not running).
NO_PREVIEW = {"preview_name": None, "preview_index": None}


class JobError(Exception):
    """A user action that cannot be done; `code` and `message` are shown to the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class JobNotFound(JobError):
    def __init__(self, job_id: int) -> None:
        super().__init__("not_found", f"There is no job {job_id}.")


class JobConflict(JobError):
    """The job is in a state that does not allow the action (HTTP 409)."""


class LimitReached(JobConflict):
    """A quota or budget refuses the job (HTTP 429); `retry_after`: seconds until it resets.

    A JobConflict, so every caller that shows a refused action's message shows this one."""

    status = 429

    def __init__(self, code: str, message: str, retry_after: int) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class LeaseLost(Exception):
    """The worker no longer holds the job: it was canceled, or another worker took it."""


@dataclass(frozen=True)
class Claim:
    """What a worker knows about the job it holds. Plain values: no ORM object crosses I/O."""

    job_id: int
    token: str
    phase: str | None
    provider: str
    model: str
    prompt: str
    size: str
    n: int
    options: dict[str, Any]
    created_at: datetime
    operation_url: str | None
    deadline_at: datetime
    submit_count: int
    owner_id: int | None = None
    kind: str = JobKind.GENERATE


# What a claim reads back from the job it takes: its columns labelled with Claim's field names
# (`job_id` is the job's id; the token is minted by the claim itself, not read).
_CLAIM_COLUMNS = tuple(
    (Job.id if f.name == "job_id" else getattr(Job, f.name)).label(f.name)
    for f in fields(Claim)
    if f.name != "token"
)


# --- user actions -----------------------------------------------------------------------------


def create_job(
    request: JobRequest,
    *,
    owner_id: int | None,
    idempotency_key: str | None = None,
    parent_id: int | None = None,
    origin: str | None = None,
) -> tuple[Job, bool]:
    """Store a queued job owned by `owner_id` and wake the worker. Returns (job, created).

    `owner_id` is whose quota and budget the job counts against, always given by the caller
    (a view passes the signed-in user's id); None is the ownerless bucket of open mode.
    With an idempotency key already used for the same parameters, returns the existing job and
    `created=False`; reusing a key for different parameters is a conflict. A job over the
    owner's daily image quota or monthly budget raises LimitReached and stores nothing.
    """
    owner = db.session.get(User, owner_id) if owner_id is not None else None
    if idempotency_key is not None:
        idempotency_key = scoped_idempotency_key(owner_id, idempotency_key)
        existing = _job_by_idempotency_key(idempotency_key, request)
        if existing is not None:
            return existing, False
    config = current_app.config
    target = find_target(config["ATELIER_TARGETS"], request.provider)
    now = utcnow()
    estimated_cost = pricing.known_estimate(
        target.model.name, request.size, request.n, request.options, inputs=request.inputs
    )
    # The inputs' files are durable before the row naming them commits (as for outputs).
    stored_inputs, written = _store_inputs(request)
    job = Job(
        status=JobStatus.QUEUED,
        owner_id=owner_id,
        cost_usd=estimated_cost,
        cost_source="estimate" if estimated_cost is not None else None,
        prompt=request.prompt,
        size=request.size,
        n=request.n,
        options=dict(request.options),
        provider=target.id,
        model=target.model.name,
        idempotency_key=idempotency_key,
        parent_id=parent_id,
        origin=origin if parent_id is not None else None,
        kind=JobKind.EDIT if request.is_edit else JobKind.GENERATE,
        inputs=[
            JobInput(
                owner_id=owner_id,
                position=position,
                role=item.role,
                **storage.file_columns(stored),
                source_image_id=item.source_image_id,
            )
            for position, (item, stored) in enumerate(
                zip(request.inputs, stored_inputs, strict=True)
            )
        ],
        created_at=now,
        next_attempt_at=now,
        deadline_at=now + timedelta(seconds=config["ATELIER_JOB_DEADLINE_SECONDS"]),
    )
    try:
        with write_transaction() as session:
            # Counted in the same write transaction as the insert, so two requests at once
            # cannot both take the last image of a quota.
            _lock_owner_limits(session, owner_id)
            if job.inputs:
                # Its inputs' rows name objects: never commit them into a store the library
                # was moved away from (app.storage_migrate's switch).
                storage.check_location(session)
            used = limits.limits_for(owner, now)
            refused = limits.refusal(used, request.n, estimated_cost or 0.0, now)
            if refused is not None:
                raise LimitReached(refused.code, refused.message, refused.retry_after)
            session.add(job)
            session.flush()
            search.index_job(session, job.id, job.prompt, None)
            coordination.jobs_changed(session)  # idle workers of every instance (PostgreSQL)
    except BaseException as error:
        # Files written for this request that no committed row names go again.
        storage.current().remove_unused_files(written)
        if not isinstance(error, IntegrityError):
            raise
        # Two requests with the same key raced; the other one won.
        if idempotency_key is None:
            raise
        existing = _job_by_idempotency_key(idempotency_key, request)
        if existing is None:  # the other job was deleted meanwhile
            raise JobConflict(
                "idempotency_key_in_use", "This Idempotency-Key is already in use; pick another."
            ) from None
        return existing, False
    _restore_missing_inputs(request)
    logs.job_event(log, job.id, "queued", JobStatus.QUEUED, n=job.n, size=job.size)
    crash_point("after_commit")
    _wake_worker()
    return job, True


def _store_inputs(request: JobRequest) -> tuple[list[storage.StoredImage], list[str]]:
    """Write the request's uploaded inputs (gallery images and copied inputs are on disk
    already); return what each input is stored as, and the names of files this call created."""
    files = storage.current()
    stored: list[storage.StoredImage] = []
    written: list[str] = []
    for item in request.inputs:
        if item.stored is not None:
            stored.append(item.stored)
            continue
        assert item.prepared is not None
        names = (item.prepared.file_name, *storage.thumbnail_names(item.prepared.sha256))
        existed = {name for name in names if files.exists(name)}
        stored.append(files.store_prepared(item.prepared))
        written += [name for name in names if name not in existed]
    return stored, written


def _restore_missing_inputs(request: JobRequest) -> None:
    """Write again, after the commit, any uploaded input file that is gone.

    `_store_inputs` leaves a file that is already there alone, and a request that fails removes
    the files it wrote that no committed row names. So when two requests upload the same bytes
    and the one that wrote them fails (over quota, say) before the other commits, the other's
    rows would name a removed file; this request still holds the bytes, so it writes them again.
    (Content addressing makes this a few stat calls when nothing is missing.)"""
    files = storage.current()
    for item in request.inputs:
        if item.prepared is not None:
            files.store_prepared(item.prepared)


def _input_files(job: Job) -> tuple[Any, ...]:
    """A job's inputs as already stored files, for a new job that uses them again."""
    from app.inputs import stored_input  # app.inputs needs app.validation, as this module does

    return tuple(
        stored_input(item.role, storage.stored_from_row(item), item.source_image_id)
        for item in job.inputs
    )


# PostgreSQL advisory lock keys (SQLite needs none: BEGIN IMMEDIATE serialises writers).
OWNER_LIMITS_LOCK = 0x41544C00_00000000  # + owner id (0 for the ownerless bucket)
CLAIM_LOCK = 0x41544C43  # serialises claims while a concurrency cap applies


def _lock_owner_limits(session: Any, owner_id: int | None) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(OWNER_LIMITS_LOCK + (owner_id or 0))))


def scoped_idempotency_key(owner_id: int | None, key: str) -> str:
    """What is stored for a client's key: a hash of the owner and the key, so every account
    has keys of its own (one user's key is never a conflict, or a hint, for another)."""
    return hashlib.sha256(f"{owner_id or 0}\n{key}".encode()).hexdigest()


def _job_by_idempotency_key(key: str, request: JobRequest) -> Job | None:
    job = db.session.scalar(select(Job).where(Job.idempotency_key == key))
    if job is None:
        return None
    if (
        job.prompt,
        job.provider,
        job.size,
        job.n,
        job.options or {},
        [(item.role, item.sha256) for item in job.inputs],
    ) != (
        request.prompt,
        request.provider,
        request.size,
        request.n,
        dict(request.options),
        [(item.role, item.sha256) for item in request.inputs],
    ):
        raise JobConflict(
            "idempotency_key_reused",
            "This idempotency key was already used for a job with different parameters.",
        )
    return job


def cancel_job(job_id: int) -> Job:
    """Cancel a queued or running job; a worker holding it loses its lease at its next step."""
    now = utcnow()
    with write_transaction() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status.in_(JobStatus.ACTIVE))
            .values(
                status=JobStatus.CANCELED,
                phase=None,
                **NO_PREVIEW,
                finished_at=now,
                **RELEASED,
                error_code="canceled",
                error_message="Canceled by you.",
                # Never sent: it cost nothing. Sent: the provider may still generate and bill
                # it, so the estimate stays.
                cost_usd=case((Job.submit_count == 0, 0.0), else_=Job.cost_usd),
                cost_source=case((Job.submit_count == 0, "table"), else_=Job.cost_source),
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # a place under the concurrency cap is free (PostgreSQL)
            coordination.jobs_changed(session)
    job = get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if result.rowcount != 1:
        raise JobConflict("already_finished", f"Job {job_id} has already finished ({job.status}).")
    _drop_preview(job_id)
    logs.job_event(log, job_id, "canceled", JobStatus.CANCELED)
    return job


def retry_job(job_id: int, *, owner_id: int | None) -> Job:
    """Queue a new job, owned by `owner_id`, with the same parameters as a finished one."""
    return _copy_job(job_id, "retry", owner_id)


def generate_again(job_id: int, *, owner_id: int | None) -> Job:
    """Like retry, for any job, finished or not: another take on the same prompt."""
    return _copy_job(job_id, "again", owner_id)


def _copy_job(job_id: int, origin: str, owner_id: int | None) -> Job:
    source = get_job(job_id)
    if source is None:
        raise JobNotFound(job_id)
    if origin == "retry" and not source.is_final:
        raise JobConflict("still_active", f"Job {job_id} is still {source.status}.")
    request = JobRequest(
        prompt=source.prompt,
        provider=source.provider,
        size=source.size,
        n=source.n,
        options=dict(source.options or {}),
        # The same files, not uploaded again.
        inputs=_input_files(source),
    )
    try:
        job, _ = create_job(request, owner_id=owner_id, parent_id=source.id, origin=origin)
    except ValidationError:
        raise JobConflict(
            "provider_unavailable",
            f"Job {job_id} used the provider {source.provider!r}, which is no longer configured.",
        ) from None
    return job


def delete_job(job_id: int) -> None:
    """Delete a finished job, its image rows and the files no other image uses."""
    job = get_job(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if not job.is_final:
        raise JobConflict(
            "still_active", f"Job {job_id} is still {job.status}; cancel it before deleting it."
        )
    names = {
        name
        for row in [*job.images, *job.inputs]
        for name in (row.file_name, row.thumbnail_name, row.thumbnail_large_name)
    }
    with write_transaction() as session:
        session.execute(delete(Image).where(Image.job_id == job_id))
        session.execute(delete(JobInput).where(JobInput.job_id == job_id))
        session.execute(delete(Job).where(Job.id == job_id))
        search.unindex_job(session, job_id)
    # Another job (of any owner) may use these files as an output or an input; only unused
    # ones go.
    files = storage.current()
    files.remove_unused_files(names)
    files.remove_preview(job_id)
    files.set_spool_aside(job_id)
    logs.job_event(log, job_id, "deleted", None)


def get_job(job_id: int) -> Job | None:
    """The job with its images and inputs (loaded with it: every job card shows them)."""
    return db.session.get(
        Job,
        job_id,
        populate_existing=True,
        options=[joinedload(Job.images), selectinload(Job.inputs)],
    )


# --- worker side --------------------------------------------------------------------------------


def _lease_until() -> datetime:
    return utcnow() + timedelta(seconds=current_app.config["ATELIER_LEASE_SECONDS"])


def claim_due_job() -> Claim | None:
    """Atomically take the next due job (queued, or running with no live lease), or None.

    A queued job is started only while fewer than ATELIER_MAX_CONCURRENT_JOBS jobs are running
    (in flight at a provider, across every worker and process) and its provider is not paused
    after rate limiting; running jobs are always advanced. A queued job past its deadline is
    taken regardless, to be failed without calling the provider.
    """
    now = utcnow()
    cap = current_app.config["ATELIER_MAX_CONCURRENT_JOBS"]
    postgres = db.engine.dialect.name == "postgresql"
    token = uuid.uuid4().hex
    with write_transaction() as session:
        if postgres and cap:
            # Read committed would let two claimers both see "cap - 1 running" and both start a
            # job; taking turns (a claim is one short UPDATE) keeps the cap exact.
            session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
        row = session.execute(
            _claim_statement(cap, postgres),
            {"now": now, "token": token, "lease_until": _lease_until()},
        ).one_or_none()
    if row is None:
        return None
    values = dict(row._mapping)
    # A dict of the claim's own, never None.
    values["options"] = dict(values["options"] or {})
    return Claim(token=token, **values)


@functools.cache
def _claim_statement(cap: int, postgres: bool) -> Any:
    """The claim's UPDATE ... RETURNING, built once per cap and dialect (building it cost a
    worker about as much as running it: bench.pipeline); `now`, `token` and `lease_until` are
    bound at each execution."""
    now = bindparam("now", type_=UTCDateTime())
    candidate = aliased(Job, name="candidate")
    paused = exists(
        select(ProviderPause.provider).where(
            ProviderPause.provider == candidate.provider, ProviderPause.paused_until > now
        )
    )
    may_start = ~paused
    if cap:
        in_flight = aliased(Job, name="in_flight")
        running = (
            select(func.count(in_flight.id))
            .where(in_flight.status == JobStatus.RUNNING)
            .scalar_subquery()
        )
        may_start = and_(may_start, running < cap)
    due = (
        select(candidate.id)
        .where(
            candidate.next_attempt_at <= now,
            or_(candidate.lease_expires_at.is_(None), candidate.lease_expires_at < now),
            or_(
                candidate.status == JobStatus.RUNNING,
                and_(
                    candidate.status == JobStatus.QUEUED,
                    or_(may_start, candidate.deadline_at <= now),
                ),
            ),
        )
        .order_by(candidate.next_attempt_at, candidate.id)
        .limit(1)
    )
    if postgres:
        # Concurrent claimers skip a row another transaction is claiming instead of waiting
        # for it and then matching nothing (SQLite needs nothing: BEGIN IMMEDIATE serialises).
        due = due.with_for_update(skip_locked=True)
    return (
        update(Job)
        .where(Job.id == due.scalar_subquery())
        .values(
            status=JobStatus.RUNNING,
            lease_token=bindparam("token"),
            lease_expires_at=bindparam("lease_until", type_=UTCDateTime()),
            claims=Job.claims + 1,
            started_at=db.func.coalesce(Job.started_at, now),
        )
        .returning(*_CLAIM_COLUMNS)
        .execution_options(synchronize_session=False)
    )


def _fenced_update(claim: Claim, **values: Any) -> None:
    with write_transaction() as session:
        _fenced_update_in(session, claim, **values)


def _fenced_update_in(session: Any, claim: Claim, **values: Any) -> None:
    result = session.execute(
        update(Job)
        .where(
            Job.id == claim.job_id,
            Job.lease_token == claim.token,
            Job.status == JobStatus.RUNNING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise LeaseLost(claim.job_id)


def renew_lease(claim: Claim) -> None:
    _fenced_update(claim, lease_expires_at=_lease_until())


def mark_submitting(claim: Claim) -> None:
    """Record that a submit is about to be sent: after a crash its outcome is unknown."""
    _fenced_update(claim, phase=JobPhase.SUBMITTING, submit_count=Job.submit_count + 1)
    logs.job_event(log, claim.job_id, "submitting", JobStatus.RUNNING, phase=JobPhase.SUBMITTING)


def mark_submitted(claim: Claim, operation_url: str, next_poll_at: datetime) -> None:
    """Keep the operation URL (before any poll) and release the job until its next poll."""
    _release(claim, next_poll_at, phase=JobPhase.POLLING, operation_url=operation_url)
    logs.job_event(log, claim.job_id, "submitted", JobStatus.RUNNING, phase=JobPhase.POLLING)


def requeue_submission(claim: Claim, next_attempt_at: datetime, reason: str) -> None:
    """The provider refused the submit for now (rate limit, outage): try again later."""
    _release(claim, next_attempt_at, status=JobStatus.QUEUED, phase=None)
    logs.job_event(log, claim.job_id, "requeued", JobStatus.QUEUED, reason=reason)
    metrics.submission_requeued()


def release_until(claim: Claim, next_attempt_at: datetime) -> None:
    """Let go of a job that is waiting on the provider; it is due again at `next_attempt_at`."""
    _release(claim, next_attempt_at)


def _release(claim: Claim, next_attempt_at: datetime, **values: Any) -> None:
    """Give up the lease (fenced), setting `values` too; the job is due at `next_attempt_at`."""
    _fenced_update(claim, next_attempt_at=next_attempt_at, **values, **RELEASED)


def mark_downloading(claim: Claim, usage: dict[str, Any] | None = None) -> None:
    """The provider has finished; its images are being saved (and its token usage kept)."""
    values: dict[str, Any] = {"phase": JobPhase.DOWNLOADING, "lease_expires_at": _lease_until()}
    if usage is not None:
        values["usage"] = usage
    _fenced_update(claim, **values)
    logs.job_event(log, claim.job_id, "downloading", JobStatus.RUNNING, phase=JobPhase.DOWNLOADING)


def recorded_image_indexes(job_id: int) -> set[int]:
    """Slots already recorded, so a resumed download does not fetch them again."""
    return set(db.session.scalars(select(Image.index).where(Image.job_id == job_id)))


def record_stored_image(claim: Claim, slot: ImageSlot, stored: storage.StoredImage) -> None:
    """Commit the row of a stored image. StorageMoved when `storage migrate` switched the
    library elsewhere after the upload's own check (store_downloaded): then nothing commits,
    the download goes to the local spool and the job says why; the step ends and the job is
    taken up again when its lease expires (the spooled bytes are used then)."""
    try:
        _record_image(
            claim,
            Image(
                job_id=claim.job_id,
                index=slot.index,
                status=ImageStatus.STORED,
                **storage.file_columns(stored),
                placeholder=stored.placeholder,
                revised_prompt=slot.revised_prompt,
                filter_results=slot.filter_results,
                # Content Credentials, read at store time from the provider's exact bytes.
                **stored.credentials,
            ),
        )
    except storage.StorageMoved as error:
        _hold_back(claim, slot.index, stored, error)
        raise
    metrics.image_saved()


def _hold_back(
    claim: Claim, index: int, stored: storage.StoredImage, error: storage.StorageMoved
) -> None:
    """Keep an image whose row may not commit (the library moved) in the local spool, read
    back from the store it was uploaded to (migrate never deletes it), and note why on the
    job, as store_downloaded does during an outage."""
    files = storage.current()
    try:
        kept = files.spool(claim.job_id, index, files.read(stored.file_name))
    except (OSError, storage.StorageUnavailable):
        kept = False
    where = (
        "the downloaded image is kept in the local spool"
        if kept
        else f"the image stays in the old storage as {stored.file_name}"
    )
    # A job canceled or taken over meanwhile (LeaseLost) has nothing to be told.
    with contextlib.suppress(LeaseLost):
        _fenced_update(
            claim,
            error_code=STORAGE_FAILING,
            error_message=f"Storage is failing ({error}); {where}.",
        )


def record_missing_image(
    claim: Claim, slot: ImageSlot, status: str, code: str, message: str
) -> None:
    """A slot with no image: filtered by the provider, or the download failed."""
    _record_image(
        claim,
        Image(
            job_id=claim.job_id,
            index=slot.index,
            status=status,
            error_code=code,
            error_message=message,
            revised_prompt=slot.revised_prompt,
            filter_results=slot.filter_results,
        ),
    )


def _record_image(claim: Claim, image: Image) -> None:
    with write_transaction() as session:
        if image.file_name:
            # The row names an object: read where the library lives in this very transaction
            # (FOR SHARE on PostgreSQL), so it commits before `storage migrate` switches (which
            # then copies its objects) or not at all. StorageMoved: nothing is committed.
            storage.check_location(session)
        _fenced_update_in(session, claim, lease_expires_at=_lease_until())
        image.owner_id = session.scalar(select(Job.owner_id).where(Job.id == claim.job_id))
        session.add(image)
        if image.revised_prompt:
            # Keep the revised prompts searchable with the job's own prompt.
            job = session.get(Job, claim.job_id)
            job.revised_prompts = " ".join(
                filter(None, [job.revised_prompts, image.revised_prompt])
            )
            search.index_job(session, job.id, job.prompt, job.revised_prompts)


def finish_from_images(claim: Claim, nothing_stored: str | None = None) -> str:
    """Set the final status from the recorded images: succeeded if at least one was stored.

    `nothing_stored` explains a failure when no image row says what went wrong.
    """
    statuses = [image.status for image in _images_of(claim.job_id)]
    if ImageStatus.STORED in statuses:
        _finish(claim, JobStatus.SUCCEEDED, None, None)
        return JobStatus.SUCCEEDED
    if statuses and all(status == ImageStatus.FILTERED for status in statuses):
        mark_failed(
            claim,
            "contentFilter",
            "Every image was filtered by Azure's safety system; none can be shown.",
        )
    else:
        first = next((image for image in _images_of(claim.job_id) if image.error_message), None)
        if first is not None:
            message = f"No image could be saved: {first.error_message}"
        else:
            message = nothing_stored or "No image could be saved."
        mark_failed(claim, "download_failed", message)
    return JobStatus.FAILED


def _images_of(job_id: int) -> list[Image]:
    return list(db.session.scalars(select(Image).where(Image.job_id == job_id)))


def mark_failed(claim: Claim, code: str, message: str) -> None:
    _finish(claim, JobStatus.FAILED, code, message)
    metrics.job_failed(code)


def _finish(claim: Claim, status: str, code: str | None, message: str | None) -> None:
    with write_transaction() as session:
        cost = pricing.final_cost(session, claim.job_id, status, code)
        _fenced_update_in(
            session,
            claim,
            status=status,
            phase=None,
            finished_at=utcnow(),
            error_code=code,
            error_message=message,
            **RELEASED,
            **NO_PREVIEW,
            **cost,
        )
    _drop_preview(claim.job_id)
    logs.job_event(log, claim.job_id, status, status, code=code)
    metrics.job_finished(claim.job_id, status)


def record_preview(claim: Claim, index: int, data: bytes) -> None:
    """Keep a streaming job's latest partial frame, fenced by the lease: a worker that lost the
    job raises LeaseLost (which stops the stream) and leaves no file behind. A frame that is
    not an image, or that cannot be written (a full disk), is dropped with a log line (a
    preview is a nicety; the final image is checked as always)."""
    files = storage.current()
    try:
        name = files.write_preview(claim.job_id, data)
    except storage.ImageRejected as error:
        log.info("job %s: partial frame %s dropped (%s)", claim.job_id, index, error)
        return
    except (OSError, storage.StorageUnavailable) as error:
        # A full or failing disk (or object store) must not fail the job: the final image is
        # what counts, and write_preview leaves no temporary file behind.
        log.warning("job %s: partial frame %s not written (%s)", claim.job_id, index, error)
        return
    try:
        _fenced_update(
            claim, preview_name=name, preview_index=index, lease_expires_at=_lease_until()
        )
    except LeaseLost:
        # The job ended (or was taken over) meanwhile; its preview must not outlive it.
        files.remove_preview(claim.job_id)
        raise
    crash_point("mid_stream")


def input_files(job_id: int) -> list[JobInput]:
    """The job's inputs in order (images, then the mask), for the worker to send."""
    return list(
        db.session.scalars(
            select(JobInput).where(JobInput.job_id == job_id).order_by(JobInput.position)
        )
    )


def _drop_preview(job_id: int) -> None:
    try:
        storage.current().remove_preview(job_id)
    except storage.StorageUnavailable as error:  # verify --repair removes it later
        log.warning("job %s: preview not removed (%s)", job_id, error)


# --- storing a download while the storage service may be failing ------------------------------

STORAGE_FAILING = "storage_unavailable"  # the error code a running job carries meanwhile
STORAGE_RETRY_FIRST_SECONDS, STORAGE_RETRY_MAX_SECONDS = 0.5, 10.0


def store_downloaded(
    claim: Claim,
    files: storage.Storage,
    index: int,
    data: bytes,
    metadata: dict[str, Any],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> storage.StoredImage:
    """Store a downloaded image and its sidecar, retrying while the storage service fails.

    On the first failure the bytes go to the local spool (bounded: ATELIER_STORAGE_SPOOL_MB)
    and the job carries a "storage is failing" note (its card shows it); the upload is tried
    again with exponential backoff until it succeeds or the job's deadline comes, when
    StorageUnavailable is raised (the spooled copy stays, and the caller records why). Call it
    under the job's LeaseKeeper: the lease is renewed while this waits. ImageRejected when the
    bytes are not an image (nothing is spooled then)."""
    delay = STORAGE_RETRY_FIRST_SECONDS
    noted = False
    while True:
        try:
            stored = files.store_image(data)
            # Beside the untouched original, before its row commits (objects alone rebuild).
            files.write_sidecar(stored.sha256, claim.job_id, index, metadata)
            # Moved by `storage migrate`? Then wait here like during an outage (the row's own
            # commit checks again, under a lock, in _record_image).
            _check_location_now()
        except storage.StorageUnavailable as error:
            remaining = (claim.deadline_at - utcnow()).total_seconds()
            kept = files.spool(claim.job_id, index, data)
            where = (
                "the downloaded image is kept in the local spool"
                if kept
                else "the local spool is full (ATELIER_STORAGE_SPOOL_MB), so the image is "
                "only held in memory"
            )
            if remaining <= delay:
                raise storage.StorageUnavailable(
                    f"Storage kept failing until this job's deadline ({error}); {where}."
                ) from None
            if not noted:
                logs.job_event(log, claim.job_id, "storage_failing", JobStatus.RUNNING)
                _fenced_update(
                    claim,
                    error_code=STORAGE_FAILING,
                    error_message=f"Storage is failing ({error}); {where} and the upload is "
                    "retried until the job's deadline.",
                )
                noted = True
            sleep(delay)
            delay = min(delay * 2, STORAGE_RETRY_MAX_SECONDS)
            continue
        files.unspool(claim.job_id, index)
        if noted:
            _fenced_update(claim, error_code=None, error_message=None)
        return stored


def _check_location_now() -> None:
    """StorageMoved when the library was moved away from this instance's storage (a plain
    primary-key read, its transaction ended at once)."""
    try:
        storage.check_location(db.session, lock=False)
    finally:
        db.session.commit()


def _wake_worker() -> None:
    worker = current_app.extensions.get("atelier_worker")
    if worker is not None:
        worker.wake()
