"""Cost limits: per-user daily image quotas, monthly budgets, and why a queued job waits.

Quotas and budgets are counted per owner from the jobs table (every process agrees, nothing is
kept in memory). The bucket is the owner's user id, or the ownerless jobs (`owner_id IS NULL`)
when there is no user (sign-in off, the CLI); the ownerless bucket has the site defaults.

What counts:
- images per day (UTC): the `n` of every job created today, except jobs that never reached the
  provider (canceled or failed with `submit_count == 0`);
- spending per calendar month (UTC): the sum of `Job.cost_usd`, which holds the estimate until a
  job finishes and then what it cost (0 for jobs that never reached the provider).

`app.jobs.create_job` asks `refusal()` before storing a job; the global concurrency cap and
provider pauses are applied when a worker claims a job (`app.jobs.claim_due_job`). A worker
pauses a provider that rate limits it with `pause_provider()`, for every worker at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, func, not_, select
from sqlalchemy.dialects import postgresql, sqlite

from app import logs, pricing
from app.models import Job, JobStatus, ProviderPause, User, db, utcnow, write_transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """One owner's limits (0 means none) and what is used of them."""

    owner_id: int | None
    daily_images: int
    monthly_budget: float
    images_today: int
    spent_this_month: float

    @property
    def images_left(self) -> int | None:
        return None if not self.daily_images else max(self.daily_images - self.images_today, 0)

    @property
    def budget_left(self) -> float | None:
        if not self.monthly_budget:
            return None
        return max(round(self.monthly_budget - self.spent_this_month, 6), 0.0)


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    retry_after: int  # seconds until the limit resets


def day_start(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


# Jobs that never reached the provider requested nothing and cost nothing.
_NEVER_SENT = and_(Job.submit_count == 0, Job.status.in_((JobStatus.CANCELED, JobStatus.FAILED)))


def limits_for(user: User | None, now: datetime | None = None) -> Limits:
    """The user's (or the ownerless bucket's) limits and usage, read now."""
    now = now or utcnow()
    config = current_app.config
    owner_id = user.id if user is not None else None
    daily = config["ATELIER_DAILY_IMAGE_QUOTA"]
    budget = config["ATELIER_MONTHLY_BUDGET_USD"]
    if user is not None and user.daily_image_quota is not None:
        daily = user.daily_image_quota
    if user is not None and user.monthly_budget_usd is not None:
        budget = user.monthly_budget_usd
    # `Job.owner_id == None` compiles to IS NULL: the ownerless bucket needs no special case.
    images_today = db.session.scalar(
        select(func.coalesce(func.sum(Job.n), 0)).where(
            Job.owner_id == owner_id, Job.created_at >= day_start(now), not_(_NEVER_SENT)
        )
    )
    spent = db.session.scalar(
        select(func.coalesce(func.sum(Job.cost_usd), 0.0)).where(
            Job.owner_id == owner_id, Job.created_at >= month_start(now)
        )
    )
    return Limits(owner_id, int(daily), float(budget), int(images_today), float(spent))


def refusal(limits: Limits, n: int, cost: float, now: datetime) -> Refusal | None:
    """Why a job of `n` images costing `cost` may not be created, or None when it may."""
    if limits.daily_images and limits.images_today + n > limits.daily_images:
        used, quota = limits.images_today, limits.daily_images
        more = "" if used >= quota else f"; this job asks for {n} more"
        return Refusal(
            "daily_quota_reached",
            f"You have requested {used} of your {quota} images today{more}; the limit resets "
            "at 00:00 UTC.",
            _seconds_until(day_start(now) + timedelta(days=1), now),
        )
    if limits.monthly_budget and limits.spent_this_month + cost > limits.monthly_budget + 1e-9:
        total = limits.spent_this_month + cost
        return Refusal(
            "monthly_budget_reached",
            f"This job would take your spending this month to {pricing.format_usd(total)} of "
            f"your {pricing.format_usd(limits.monthly_budget)} budget (spent so far: "
            f"{pricing.format_usd(limits.spent_this_month)}; it resets on the 1st at 00:00 UTC).",
            _seconds_until(next_month(now), now),
        )
    return None


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, int((moment - now).total_seconds()) + 1)


# --- provider pauses ----------------------------------------------------------------------------


def pause_provider(provider: str, seconds: float, reason: str) -> datetime:
    """Stop every worker from submitting new jobs to `provider` for `seconds` (a pause already
    reaching further is kept). Returns when the pause ends."""
    until = utcnow() + timedelta(seconds=seconds)
    with write_transaction() as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        latest = func.greatest if dialect == "postgresql" else func.max
        statement = insert(ProviderPause).values(
            provider=provider, paused_until=until, reason=reason
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[ProviderPause.provider],
                set_={
                    "paused_until": latest(
                        ProviderPause.paused_until, statement.excluded.paused_until
                    ),
                    "reason": statement.excluded.reason,
                },
            )
        )
        paused_until = session.scalar(
            select(ProviderPause.paused_until).where(ProviderPause.provider == provider)
        )
    logs.event(
        log,
        f"provider {provider} paused until {paused_until:%H:%M:%S} UTC (rate limited)",
        "provider.paused",
        provider=provider,
        seconds=round(seconds, 2),
    )
    return paused_until


# --- why a queued job waits ---------------------------------------------------------------------


def running_jobs() -> int:
    """Jobs in flight at a provider, across every worker (not limited to the viewer's jobs)."""
    jobs = Job.__table__  # the table, not the entity: request scoping must not narrow this count
    return db.session.scalar(
        select(func.count()).select_from(jobs).where(jobs.c.status == JobStatus.RUNNING)
    )


# Why a queued job may wait (shown on its card): wait_reasons' answers.
PAUSE_MESSAGE = "Paused: {service} is rate limiting; trying again at {time} UTC"
CAP_MESSAGE = "Waiting: {running} jobs are already running"
CAP_MESSAGE_ONE = "Waiting: 1 job is already running"


def wait_reasons(jobs: Iterable[Job]) -> dict[int, str]:
    """Why each queued job of `jobs` has not started, by job id (job cards show it): its
    provider is paused, or the concurrency cap is reached. Jobs that are not waiting are left
    out. At most two queries for any number of cards, none when no job is queued."""
    jobs = list(jobs)
    # A running job whose object storage is failing says so (app.jobs.store_downloaded).
    reasons: dict[int, str] = {
        job.id: job.error_message or "Storage is failing"
        for job in jobs
        if job.status == JobStatus.RUNNING and job.error_code == "storage_unavailable"
    }
    queued = [job for job in jobs if job.status == JobStatus.QUEUED]
    if not queued:
        return reasons
    now = utcnow()
    pauses = {
        pause.provider: pause
        for pause in db.session.scalars(
            select(ProviderPause).where(
                ProviderPause.provider.in_({job.provider for job in queued}),
                ProviderPause.paused_until > now,
            )
        )
    }
    cap_reason: str | None = None
    cap = current_app.config["ATELIER_MAX_CONCURRENT_JOBS"]
    if cap and any(job.provider not in pauses for job in queued):
        running = running_jobs()
        if running >= cap:
            cap_reason = CAP_MESSAGE_ONE if running == 1 else CAP_MESSAGE.format(running=running)
    for job in queued:
        pause = pauses.get(job.provider)
        if pause is not None:
            service = "OpenAI" if "openai:" in job.provider else "Azure"
            until = pause.paused_until.strftime("%H:%M:%S")
            reasons[job.id] = PAUSE_MESSAGE.format(service=service, time=until)
        elif cap_reason is not None:
            reasons[job.id] = cap_reason
    return reasons
