"""Database models and the SQLAlchemy setup they share.

Owns: the `db` extension, the declarative base with a constraint naming convention (so
migrations are stable), the SQLite connection settings, `write_transaction()`, and the tables:
`jobs` (one prompt sent to a provider), `job_inputs` (the images and mask an edit sends),
`images` (one slot of a job's result), collections, `data_versions` (the page caches'
versions on PostgreSQL, moved by app.coordination), `library_settings` (where the library's
objects live once `flask atelier storage migrate` has moved them), and the accounts side
(`users`, their sign-in sessions, API tokens, share links, login attempts).
Status changes happen only in `app.jobs`; accounts are managed by `app.auth`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)

# Execution option that makes the SQLite `begin` listener take the write lock up front.
WRITE_OPTION = "atelier_write"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores naive UTC (portable across SQLite and PostgreSQL), returns aware UTC datetimes."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use app.models.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class JobStatus:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ACTIVE = (QUEUED, RUNNING)
    FINAL = (SUCCEEDED, FAILED, CANCELED)
    ALL = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELED)


class JobPhase:
    """Where a running job is; recorded *before* the step it names is acted on."""

    SUBMITTING = "submitting"  # the request to the provider may be in flight
    POLLING = "polling"  # the provider accepted it; operation_url is set
    DOWNLOADING = "downloading"  # the provider finished; images are being fetched


class JobKind:
    GENERATE = "generate"  # a prompt alone
    EDIT = "edit"  # a prompt with input images (and maybe a mask): the provider's edits route


class InputRole:
    IMAGE = "image"
    MASK = "mask"


class ImageStatus:
    STORED = "stored"
    FILTERED = "filtered"
    FAILED = "failed"


class Job(db.Model):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_jobs_owner_id_created_at_id", "owner_id", "created_at", "id"),
        # The recent finished jobs of one provider and model (app.views.polling's expected
        # finish): without it, a model with little history scanned the whole table.
        Index("ix_jobs_provider_model_status_id", "provider", "model", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who asked for it; None for jobs made before sign-in existed (only admins see those).
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    phase: Mapped[str | None] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    size: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    # Prompt lineage: the job this one was made from, and how ("retry", "again", "reuse").
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    origin: Mapped[str | None] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16), default=JobKind.GENERATE)

    operation_url: Mapped[str | None] = mapped_column(Text)
    # Token usage as the provider reported it (gpt-image models), e.g. {"total_tokens": 1100}.
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What the job costs in US dollars: estimated from the price table when it is created,
    # replaced by the figure from token usage when the provider reports usage (app.pricing).
    cost_usd: Mapped[float | None] = mapped_column(Float)
    cost_source: Mapped[str | None] = mapped_column(String(16))  # "estimate" | "usage" | "table"
    # The models' revised prompts, joined, so search finds them (kept by app.search).
    revised_prompts: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # Worker bookkeeping: when the job is next due, who holds it and until when.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    submit_count: Mapped[int] = mapped_column(Integer, default=0)
    # The latest partial frame a streaming provider sent (a file under previews/, written under
    # the lease), and its partial_image_index; both cleared when the job ends (app.jobs).
    preview_name: Mapped[str | None] = mapped_column(String(128))
    preview_index: Mapped[int | None] = mapped_column(Integer)

    inputs: Mapped[list[JobInput]] = relationship(
        back_populates="job",
        order_by="JobInput.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )
    images: Mapped[list[Image]] = relationship(
        back_populates="job",
        order_by="Image.index",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    @property
    def is_final(self) -> bool:
        return self.status in JobStatus.FINAL

    @property
    def stored_images(self) -> list[Image]:
        return [image for image in self.images if image.status == ImageStatus.STORED]


class Image(db.Model):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("job_id", "index", name="uq_images_job_id_index"),
        Index("ix_images_status_created_at_id", "status", "created_at", "id"),
        Index("ix_images_favorite_created_at_id", "favorite", "created_at", "id"),
        Index("ix_images_owner_id_created_at_id", "owner_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The job's owner, copied so the gallery filters by owner without a join.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    bytes: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(32))
    file_name: Mapped[str | None] = mapped_column(String(128))
    thumbnail_name: Mapped[str | None] = mapped_column(String(128))  # 256 px WebP
    thumbnail_large_name: Mapped[str | None] = mapped_column(String(128))  # 512 px WebP
    # The image's average colour, shown while the thumbnail loads ("#rrggbb").
    placeholder: Mapped[str | None] = mapped_column(String(7))
    favorite: Mapped[bool] = mapped_column(default=False)
    # Set when the image is in the trash; purged after ATELIER_TRASH_DAYS.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revised_prompt: Mapped[str | None] = mapped_column(Text)
    # Azure's content_filter_results / prompt_filter_results for this image, as sent.
    filter_results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # The file's C2PA Content Credentials as app.credentials.inspect summarised them when it was
    # stored (None: no manifest); credentials_valid copies its verdict for the gallery's filter.
    content_credentials: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    credentials_valid: Mapped[bool | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")
    collections: Mapped[list[Collection]] = relationship(
        secondary="collection_images", back_populates="images", order_by="Collection.name"
    )


class JobInput(db.Model):
    """One file an edit sends: an input image or the mask, stored exactly as it was uploaded.

    The file lives in the same content-addressed `images/` folder as outputs, so a gallery image
    used as a reference is the very same file (app.storage counts these columns as users)."""

    __tablename__ = "job_inputs"
    __table_args__ = (UniqueConstraint("job_id", "position", name="uq_job_inputs_job_id_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    # The job's owner, copied (like images.owner_id) so scoping needs no join.
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    position: Mapped[int] = mapped_column(Integer)  # images first in order, then the mask
    role: Mapped[str] = mapped_column(String(8))  # InputRole
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(32))
    file_name: Mapped[str] = mapped_column(String(128))
    thumbnail_name: Mapped[str] = mapped_column(String(128))
    thumbnail_large_name: Mapped[str] = mapped_column(String(128))
    # The gallery image this input was taken from ("edited from"); None for an upload.
    source_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    # The input's Content Credentials, as on images (an edit's inputs are its ingredients).
    content_credentials: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    credentials_valid: Mapped[bool | None] = mapped_column()

    job: Mapped[Job] = relationship(back_populates="inputs")
    source_image: Mapped[Image | None] = relationship()


class Collection(db.Model):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_collections_owner_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    images: Mapped[list[Image]] = relationship(
        secondary="collection_images", back_populates="collections"
    )


class CollectionImage(db.Model):
    __tablename__ = "collection_images"

    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-case
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # Per-user limits; None means the site-wide default (ATELIER_DAILY_IMAGE_QUOTA, ...).
    daily_image_quota: Mapped[int | None] = mapped_column(Integer)
    monthly_budget_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserSession(db.Model):
    """One signed-in browser. The cookie holds the token; the row holds only its hash."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiToken(db.Model):
    """A bearer token for the JSON API; shown once when made, stored as a SHA-256 hash."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ShareLink(db.Model):
    """A public, revocable, optionally expiring link to one image or one collection."""

    __tablename__ = "share_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginAttempt(db.Model):
    """A failed sign-in, kept for the rate limit (shared by every process, unlike memory)."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_ip_at", "ip", "at"),
        Index("ix_login_attempts_username_at", "username", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ip: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProviderPause(db.Model):
    """A provider that answered with a burst of 429s: no new submissions to it until then."""

    __tablename__ = "provider_pauses"

    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    paused_until: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)


class DataVersions(db.Model):
    """One row (id 1): the counters that key every process's page caches on PostgreSQL (see
    app.coordination; SQLite keeps them in files in the data folder). Only ever incremented."""

    __tablename__ = "data_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    library_version: Mapped[int] = mapped_column(BigInteger, default=0)
    data_version: Mapped[int] = mapped_column(BigInteger, default=0)


class LibrarySetting(db.Model):
    """A setting of the library itself, kept in the database so every instance sees one value.

    `storage_url`: where the library's objects live once `flask atelier storage migrate` has
    moved them (app.storage checks it at start-up and app.jobs before an image row commits);
    no row, or NULL, means never migrated: the configured ATELIER_STORAGE_URL is trusted."""

    __tablename__ = "library_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def configure_engine(engine: Engine) -> None:
    """Apply Atelier's connection settings; SQLite gets WAL and explicit transaction control."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the `begin` listener below emit BEGIN itself (pysqlite's implicit BEGIN
        # cannot take the write lock up front).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_on_begin(connection: Any) -> None:
        # A transaction that will write takes the lock at BEGIN, so it waits on busy_timeout
        # instead of failing with "database is locked" when it upgrades from a read.
        immediate = connection.get_execution_options().get(WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction() -> Iterator[Any]:
    """One short write transaction on the request's/thread's session, committed on exit.

    Callers never keep unflushed changes in the session, so ending an open read-only
    transaction first loses nothing.
    """
    session = db.session()
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={WRITE_OPTION: True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
