"""Stored images: checked, content-addressed, written completely, with thumbnails, in the
backend ATELIER_STORAGE_URL names (app.blobstore: the data folder, Azure Blob Storage, S3).

The interface (`Storage`, `storage.current()`), the same on every backend. Objects are named by
their path relative to the library (the data folder, or the container/bucket's prefix):
    read(name) -> bytes               ObjectMissing (a FileNotFoundError) when absent
    stat(name) -> StoredObject|None   size and modification time; exists(name) -> bool
    write(name, data[, content_type]) complete and checked before it returns (see app.blobstore)
    delete(name), list(prefix) -> [StoredObject] sorted by name
    set_aside(name, archive)          verify --repair's stray: moved aside locally, deleted in
                                      an object store
    local_path(name) -> Path|None     only the local backend has paths (send_file, backups)
    store_image / store_prepared, write_sidecar / sidecars / read_sidecar / remove_sidecar,
    write_preview / remove_preview, remove_unused_files, spool / spooled / unspool
    root (the data folder), is_local, location (the folder or the storage URL, for reports)
Errors: StorageUnavailable (unreachable, 403, 5xx, timeout, a failed check: retry later),
StorageMoved (a StorageUnavailable: the library was moved elsewhere), ObjectMissing,
ImageRejected; init_app raises ConfigError naming the setting when the container/bucket or the
credentials are wrong (one cheap call at start-up), or when the database records that
`flask atelier storage migrate` moved the library somewhere other than ATELIER_STORAGE_URL.

Where the library lives: once `flask atelier storage migrate` has copied every object, the
database's `library_settings` row `storage_url` names the new place (`record_location`). Every
instance compares it with its own ATELIER_STORAGE_URL (`normalized_url`): at start-up
(ConfigError naming both), and in the very transaction that commits a row naming an object
(`check_location`, one primary-key read), so an instance still running with the old URL never
commits a row pointing into the old store after the switch. No row: never migrated.

Layout (the same names in every backend):
    images/<sha[:2]>/<sha256>.<ext>         the provider's image, exactly the bytes it delivered
                                            (so its sha256 is theirs, and any Content
                                            Credentials in it still validate)
    sidecars/<sha[:2]>/<sha256>/<job id>-<index>.json
                                            the job parameters of one image row with those
                                            bytes (app.pngmeta's metadata): what `flask atelier
                                            rebuild` reads. One per row, not per file: two
                                            jobs (or two owners) with identical bytes share the
                                            file and keep a sidecar each
    thumbs/<sha[:2]>/<sha256>-256.webp      WebP thumbnails, longest side 256 px and 512 px
    thumbs/<sha[:2]>/<sha256>-512.webp      (for the grid on ordinary and high-density screens)
    previews/<job id>.<ext>                 the latest partial frame of a streaming job, removed
                                            when the job ends or is deleted
Always in the local data folder, whatever the backend:
    .uploads/                               request bodies' files while they are received
    .spool/<job id>-<index>.bin             a downloaded image whose upload failed, kept until
                                            it succeeds (ATELIER_STORAGE_SPOOL_MB bounds it)
    the database, the setup token, the migration lock, the emulator's state, page-cache versions

An edit's input images and mask are stored in the same images/ and thumbs/ folders, exactly as
they were uploaded (nothing embedded, so the bytes sent upstream are the bytes the user gave):
a gallery image used as a reference is the very same object as the output it came from.

An object is written completely or not at all: a local file goes to a temporary name in its
final folder, is fsynced and renamed into place; an upload is sent with its MD5 and its size,
MD5 and sha256 read back (app.blobstore). The database row that points at an object commits
only after the object and its sidecar are stored, so a crash in between leaves an orphan
(`flask atelier verify --repair` sets it aside after the grace period), never a row without its
object. A sidecar goes with its row (`remove_unused_files` removes the sidecars no row and no
active job accounts for), an object only when no row of any owner names it.

Identical bytes are one object, whoever stored them: two owners' byte-identical images share
their original and thumbnails, and an output shares its object with every job that used it as
an input. So an object is removed only when no image row and no job input row of any owner
names it (`Storage.remove_unused_files`, `FILE_COLUMNS`), never because the viewer's own rows
no longer do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from PIL import Image as PILImage
from sqlalchemy import create_engine, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from app import blobstore, credentials, pngmeta
from app.auth import scoping
from app.blobstore import (  # noqa: F401  (re-exported: callers catch these through app.storage)
    ObjectMissing,
    StorageUnavailable,
    write_atomically,
)
from app.config import ConfigError
from app.models import Image, Job, JobInput, JobStatus, LibrarySetting, db, utcnow

log = logging.getLogger(__name__)

# Formats the image APIs produce; anything else is refused before it reaches the disk.
FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
}
# The only types a stored file is ever served as (by its extension): none a browser could run.
CONTENT_TYPES = {extension: content_type for extension, content_type in FORMATS.values()}
PREVIEWS = "previews"
SIDECARS = "sidecars"
SIDECAR_NAME = re.compile(r"(?P<job_id>[0-9]{1,18})-(?P<index>[0-9]{1,9})\.json")
ORIGINAL_NAME = re.compile(r"images/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})\.(?:png|jpg|webp)")
UPLOADS = ".uploads"  # request bodies being received (unnamed temporary files)
# The largest image any supported model produces is 1792x1024; 4096x4096 leaves room and stops
# decompression bombs long before Pillow's own (much higher) limit.
MAX_PIXELS = 4096 * 4096
THUMBNAIL_SIZE = 256
THUMBNAIL_LARGE_SIZE = 512
TEMP_PREFIX = blobstore.TEMP_PREFIX
SPOOL = ".spool"  # downloads waiting for the storage service (job-index.bin)
# Every column of an image or job input row that names a file under the data folder.
FILE_COLUMNS = (
    Image.file_name,
    Image.thumbnail_name,
    Image.thumbnail_large_name,
    JobInput.file_name,
    JobInput.thumbnail_name,
    JobInput.thumbnail_large_name,
)
# What `file_columns` copies between a StoredImage and an image or job input row.
FILE_FIELDS = (
    "sha256",
    "bytes",
    "width",
    "height",
    "content_type",
    "file_name",
    "thumbnail_name",
    "thumbnail_large_name",
)
# Names per IN (...) list: far below SQLite's and PostgreSQL's bound-parameter limits.
NAMES_PER_QUERY = 500
EXTENSION = "atelier_storage"  # the app.extensions key of the app's Storage


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; nothing was written."""


class StorageMoved(StorageUnavailable):
    """`flask atelier storage migrate` moved the library's objects elsewhere: this instance's
    ATELIER_STORAGE_URL is out of date. Nothing was committed; it waits (as during an outage)
    until it is restarted with the new URL."""


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    bytes: int
    width: int
    height: int
    content_type: str
    file_name: str
    thumbnail_name: str
    thumbnail_large_name: str
    placeholder: str
    # The Content Credentials columns of an image row (app.credentials), read at store time.
    credentials: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedImage:
    """An image checked and decoded (its thumbnails made), not yet written: validating a
    request's every input before storing any of them leaves nothing behind on refusal."""

    data: bytes
    format: str  # a FORMATS key
    width: int
    height: int
    thumbnails: Thumbnails
    sha256: str

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][1]

    @property
    def file_name(self) -> str:
        """The name it is stored under (content-addressed)."""
        return original_name(self.sha256, self.format)


def prepare_image(data: bytes) -> PreparedImage:
    """Check the header, then decode every pixel (making the thumbnails); ImageRejected if
    either fails. Decoding is the real check: verify() reads only chunk checksums."""
    image_format, width, height = inspect_image(data)
    try:
        thumbnails = make_thumbnails(data)
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as error:
        raise ImageRejected(f"The image data does not decode ({error}).") from None
    return PreparedImage(
        data, image_format, width, height, thumbnails, hashlib.sha256(data).hexdigest()
    )


@dataclass(frozen=True)
class Storage:
    """The stored objects (originals, thumbnails, edit inputs, sidecars, previews) in the
    configured backend (`blobs`: app.blobstore), and the data folder (`root`) for what always
    stays local: the database, the setup token, the migration lock, the emulator's state, upload
    spools, page-cache version files and the spool of downloads waiting for their upload.

    One per app (`init_app`, `current`). Everything that reads or writes a stored object asks
    it by name (`read`, `stat`, `exists`, `write`, `delete`, `list`); only the local backend
    has paths (`local_path`, for send_file and the backup).
    """

    root: Path
    blobs: blobstore.BlobStore = None  # type: ignore[assignment]  # None: the data folder
    spool_limit_bytes: int = 0

    def __post_init__(self) -> None:
        if self.blobs is None:
            object.__setattr__(self, "blobs", blobstore.LocalStore(self.root))

    def path(self, name: str) -> Path:
        """The absolute path of a stored name in the data folder (refusing names that escape
        it). Only the local backend has paths: TypeError on an object store."""
        if not isinstance(self.blobs, blobstore.LocalStore):
            raise TypeError(f"{self.blobs.url} keeps objects, not files: read them by name")
        return self.blobs.path(name)

    @property
    def is_local(self) -> bool:
        return self.blobs.local

    @property
    def location(self) -> str:
        """The data folder, or the container/bucket URL (reports' first lines)."""
        return self.blobs.url

    # --- objects by name --------------------------------------------------------------------

    def local_path(self, name: str) -> Path | None:
        """The file behind a name on the local backend (None on an object store, or when the
        name escapes the data folder)."""
        if not isinstance(self.blobs, blobstore.LocalStore):
            return None
        try:
            return self.blobs.path(name)
        except ValueError:
            return None

    def write(self, name: str, data: bytes, content_type: str | None = None) -> None:
        """Store `name` completely and checked (app.blobstore: atomic file, or a verified
        upload) before returning."""
        self.blobs.put(name, data, content_type or _content_type_of(name))

    def read(self, name: str) -> bytes:
        """The bytes of a stored object; ObjectMissing (a FileNotFoundError) when absent."""
        return self.blobs.get(name)

    def stat(self, name: str | None) -> blobstore.StoredObject | None:
        """Size and time of a stored object, or None when there is none."""
        if not name:
            return None
        return self.blobs.stat(name)

    def exists(self, name: str | None) -> bool:
        return self.stat(name) is not None

    def delete(self, name: str) -> None:
        self.blobs.delete(name)

    def list(self, prefix: str) -> list[blobstore.StoredObject]:
        """Every object under the folder `prefix` (e.g. "images/"), sorted by name."""
        return list(self.blobs.list(prefix))

    def set_aside(self, name: str, archive: str) -> bool:
        """Take a stray object out of the library: in the data folder it moves under
        `archive` (nothing is deleted there); in an object store it is deleted (an object no
        row names and older than verify's grace period is an upload whose row never
        committed). False when it was gone already."""
        path = self.local_path(name)
        if path is None:
            if self.blobs.stat(name) is None:
                return False
            self.blobs.delete(name)
            return True
        target = self.root / archive / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except FileNotFoundError:
            return False
        return True

    # --- images -----------------------------------------------------------------------------

    def store_image(self, data: bytes) -> StoredImage:
        """Check a provider's image, write it exactly as delivered with its thumbnails, read
        its Content Credentials; return what was stored. ImageRejected if it is not an image.

        Nothing is embedded: the job's parameters go into a sidecar (`write_sidecar`)."""
        stored = self.store_prepared(prepare_image(data))
        return replace(stored, credentials=credential_columns(data, stored.content_type))

    def store_prepared(self, prepared: PreparedImage) -> StoredImage:
        """Write a checked image exactly as it is, with its thumbnails (an edit's input: the
        bytes stored are the bytes that were uploaded and will be sent)."""
        data, digest = prepared.data, prepared.sha256
        thumbnail_name, thumbnail_large_name = thumbnail_names(digest)
        # Content addressing makes a repeated store (a retried download) a no-op: a name that
        # exists holds these bytes. One request per object on an object store, no HEAD first.
        self.blobs.put(prepared.file_name, data, prepared.content_type, if_absent=True)
        for name, thumbnail_data in (
            (thumbnail_name, prepared.thumbnails.small),
            (thumbnail_large_name, prepared.thumbnails.large),
        ):
            self.blobs.put(name, thumbnail_data, "image/webp", if_absent=True)
        return described(
            digest,
            len(data),
            prepared.format,
            prepared.width,
            prepared.height,
            placeholder=prepared.thumbnails.placeholder,
        )

    def upload_folder(self) -> Path:
        """Where a request's uploaded files are spooled while it is handled (made 0700)."""
        folder = self.root / UPLOADS
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def write_preview(self, job_id: int, data: bytes) -> str:
        """Write a streaming job's latest partial frame; return its name.

        Only a PNG, JPEG or WebP (checked by its header) is written, under a name whose
        extension says which, so it is only ever served as that type. ImageRejected otherwise."""
        image_format, _, _ = inspect_image(data)
        extension, content_type = FORMATS[image_format]
        name = f"{PREVIEWS}/{job_id}.{extension}"
        # Same job, another format (never expected): leave no stale frame of the other type.
        self.remove_preview(job_id, keep=name)
        self.write(name, data, content_type)
        return name

    def remove_preview(self, job_id: int, keep: str | None = None) -> None:
        """Remove a job's preview files (every format), except `keep`."""
        for extension in CONTENT_TYPES:
            name = f"{PREVIEWS}/{job_id}.{extension}"
            if name != keep:
                self.delete(name)

    def remove_files(self, names: Iterable[str]) -> None:
        for name in names:
            self.delete(name)

    def remove_unused_files(self, names: Iterable[str]) -> None:
        """Remove those of these files that no image or job input row uses any more, and the
        sidecars of the originals among them whose rows are gone (call it after the rows that
        named them are deleted and committed)."""
        candidates = {name for name in names if name}
        self.remove_files(candidates - files_in_use(candidates))
        digests = {m["sha"] for name in candidates if (m := ORIGINAL_NAME.fullmatch(name))}
        self.remove_stale_sidecars(digests)

    # --- the spool: downloads waiting for the storage service -------------------------------

    def _spool_path(self, job_id: int, index: int) -> Path:
        return self.root / SPOOL / f"{job_id}-{index}.bin"

    def spool(self, job_id: int, index: int, data: bytes) -> bool:
        """Keep a downloaded image in the local spool while its upload fails (durably, 0600).
        False when the spool (ATELIER_STORAGE_SPOOL_MB) has no room for it."""
        path = self._spool_path(job_id, index)
        if path.is_file():
            return True
        folder = path.parent
        used = sum(p.stat().st_size for p in folder.glob("*.bin")) if folder.is_dir() else 0
        if used + len(data) > self.spool_limit_bytes:
            return False
        blobstore.write_atomically(path, data)
        return True

    def spooled(self, job_id: int, index: int) -> bytes | None:
        """The spooled download of image `index` of a job, if one waits."""
        try:
            return self._spool_path(job_id, index).read_bytes()
        except FileNotFoundError:
            return None

    def unspool(self, job_id: int, index: int) -> None:
        self._spool_path(job_id, index).unlink(missing_ok=True)

    def set_spool_aside(self, job_id: int) -> list[str]:
        """Rename a deleted job's spooled downloads out of the way (`<id>-<i>.deleted-<ns>.bin`):
        on SQLite a new job may get the same id, and must not take them for its own. They stay
        (they may be the only copy of an image) as leftovers `verify` reports."""
        folder = self.root / SPOOL
        moved = []
        for path in sorted(folder.glob(f"{job_id}-*.bin")) if folder.is_dir() else []:
            if not re.fullmatch(rf"{job_id}-\d+\.bin", path.name):
                continue
            target = path.with_name(f"{path.stem}.deleted-{time.time_ns()}.bin")
            path.rename(target)
            moved.append(target.name)
        return moved

    def spool_files(self) -> list[str]:
        folder = self.root / SPOOL
        return sorted(p.name for p in folder.glob("*.bin")) if folder.is_dir() else []

    # --- sidecars: the job parameters beside each original ---------------------------------

    def write_sidecar(self, sha256: str, job_id: int, index: int, metadata: dict[str, Any]) -> bool:
        """Write (completely, durably) the sidecar of image `index` of job `job_id`, whose
        original has this sha256. The same content is not written again: False then."""
        name = sidecar_name(sha256, job_id, index)
        data = (pngmeta.dumps(metadata) + "\n").encode("utf-8")
        # A new image's sidecar is new: one conditional write; only an existing one is read.
        if self.blobs.put(name, data, "application/json", if_absent=True):
            return True
        if self.read(name) == data:
            return False
        self.write(name, data, "application/json")
        return True

    def sidecars(self, sha256: str) -> list[tuple[str, int, int]]:
        """(name, job id, index) of every sidecar of the original with this sha256."""
        folder = sidecar_folder(sha256)
        found = []
        for item in self.list(f"{folder}/"):
            base = item.name[len(folder) + 1 :]
            match = SIDECAR_NAME.fullmatch(base)
            if match is not None:
                found.append((item.name, int(match["job_id"]), int(match["index"])))
        return found

    def read_sidecar(self, name: str) -> dict[str, Any]:
        """A sidecar's metadata; ValueError when it is not a JSON object."""
        try:
            value = json.loads(self.read(name).decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"The sidecar is not UTF-8 ({error}).") from None
        if not isinstance(value, dict):
            raise ValueError("The sidecar does not hold a JSON object.")
        return value

    def remove_sidecar(self, name: str) -> None:
        self.delete(name)
        path = self.local_path(name)
        if path is not None:
            with contextlib.suppress(OSError):  # not empty: other rows' sidecars are there
                path.parent.rmdir()  # the original's folder, once its last sidecar is gone

    def remove_stale_sidecars(self, digests: Iterable[str]) -> None:
        """Remove the sidecars of these originals that no stored image row accounts for.

        A sidecar of a job still queued or running stays: the worker writes it before it
        commits the row. Rows of every owner count (content addressing shares the folder)."""
        for digest in sorted(set(digests)):
            found = self.sidecars(digest)
            if not found:
                continue
            keep = {
                tuple(row)
                for row in db.session.execute(
                    select(Image.job_id, Image.index)
                    .where(Image.sha256 == digest)
                    .execution_options(**scoping.ALL_OWNERS)
                )
            }
            active = set(
                db.session.scalars(
                    select(Job.id)
                    .where(Job.id.in_({job_id for _, job_id, _ in found}))
                    .where(Job.status.in_(JobStatus.ACTIVE))
                    .execution_options(**scoping.ALL_OWNERS)
                )
            )
            db.session.commit()
            for name, job_id, index in found:
                if (job_id, index) not in keep and job_id not in active:
                    self.remove_sidecar(name)


def init_app(app: Flask) -> None:
    """Make the app's Storage: the data folder (ATELIER_DATA_DIR, created) and the backend
    ATELIER_STORAGE_URL names, checked with one cheap call (ConfigError naming the setting),
    after checking that the database does not record the library as moved elsewhere."""
    root = Path(app.config["ATELIER_DATA_DIR"])
    root.mkdir(parents=True, exist_ok=True)
    configured = app.config.get("ATELIER_STORAGE_URL")
    recorded = _recorded_at_start_up(app.config.get("DATABASE_URL"))
    if recorded is not None and recorded[0] != normalized_url(configured):
        raise ConfigError(moved_message(recorded[0], recorded[1], configured))
    blobs = blobstore.open_store(configured, root, app.config)
    blobs.check()
    spool_mb = app.config.get("ATELIER_STORAGE_SPOOL_MB") or 0
    app.extensions[EXTENSION] = Storage(root, blobs, int(spool_mb * 1024 * 1024))


# --- where the library lives (flask atelier storage migrate) --------------------------------

STORAGE_URL_KEY = "storage_url"  # the library_settings row migrate writes


def normalized_url(url: str | None) -> str:
    """A storage URL in one spelling: "file:" for the data folder (unset, file:, file://),
    else scheme://NAME or scheme://NAME/PREFIX without stray slashes."""
    if not url or url.strip() in ("file:", "file://"):
        return "file:"
    scheme, _, rest = url.strip().partition("://")
    name, _, prefix = rest.strip("/").partition("/")
    prefix = prefix.strip("/")
    return f"{scheme.lower()}://{name}/{prefix}" if prefix else f"{scheme.lower()}://{name}"


def moved_message(recorded: str, when: Any, configured: str | None) -> str:
    """What an instance configured with `configured` is told when the library is elsewhere."""
    date = f" on {when:%Y-%m-%d %H:%M} UTC" if when is not None else ""
    return (
        f"The library's images were moved to {recorded} by `flask atelier storage migrate`"
        f"{date}, but ATELIER_STORAGE_URL is {normalized_url(configured)}; set "
        f"ATELIER_STORAGE_URL={recorded} (with that storage's credentials) on every instance."
    )


def recorded_location(session: Any, *, lock: str | None = None) -> tuple[str, Any] | None:
    """(normalized URL, when) that migrate recorded, or None when the library never moved.

    `lock`: "share" (a row about to commit, PostgreSQL FOR SHARE: migrate's switch waits for
    it, and it waits for the switch) or "update" (the switch itself). SQLite has no row locks:
    its writes are serialized, which gives the same order."""
    statement = select(LibrarySetting.value, LibrarySetting.updated_at).where(
        LibrarySetting.key == STORAGE_URL_KEY
    )
    if lock == "share":
        statement = statement.with_for_update(read=True)
    elif lock == "update":
        statement = statement.with_for_update()
    row = session.execute(statement).first()
    if row is None or not row.value:
        return None
    return row.value, row.updated_at


def check_location(session: Any, configured: str | None = None, *, lock: bool = True) -> None:
    """Raise StorageMoved unless the library's objects live where this app writes them.

    Call it inside the write transaction that commits a row naming an object (one primary-key
    read, FOR SHARE on PostgreSQL): a switch committed before it is seen, one that is not yet
    committed waits until this transaction ends, and then copies the row's objects too.
    `lock=False`: a plain read, for an early look before the upload is final."""
    if configured is None:
        configured = current_app.config.get("ATELIER_STORAGE_URL")
    recorded = recorded_location(session, lock="share" if lock else None)
    if recorded is not None and recorded[0] != normalized_url(configured):
        raise StorageMoved(moved_message(recorded[0], recorded[1], configured))


def record_location(session: Any, url: str) -> None:
    """Record (in the caller's transaction) that the library's objects now live at `url`."""
    row = session.get(LibrarySetting, STORAGE_URL_KEY)
    if row is None:
        session.add(
            LibrarySetting(key=STORAGE_URL_KEY, value=normalized_url(url), updated_at=utcnow())
        )
    else:
        row.value, row.updated_at = normalized_url(url), utcnow()


def _recorded_at_start_up(database_url: str | None) -> tuple[str, Any] | None:
    """The recorded location, read before the app's own engine exists (storage starts first).

    A database that does not exist yet, or has no library_settings table (not migrated yet),
    has recorded nothing. One that cannot be reached is not checked here (a log line): the
    check before every commit (`check_location`) still keeps rows out of the wrong store."""
    if not database_url:
        return None
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and (
        not url.database or url.database == ":memory:" or not Path(url.database).is_file()
    ):
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(LibrarySetting.__tablename__):
                return None
            return recorded_location(connection)
    except SQLAlchemyError as error:
        log.warning(
            "the database could not be read at start-up to check the library's location (%s)",
            str(error).splitlines()[0],
        )
        return None
    finally:
        engine.dispose()


def current(app: Flask | None = None) -> Storage:
    """The Storage of `app`, else of the current app."""
    return (app if app is not None else current_app).extensions[EXTENSION]


def _content_type_of(name: str) -> str | None:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1]) if "." in name else None


def inspect_image(data: bytes) -> tuple[str, int, int]:
    """Return (Pillow format, width, height) or raise ImageRejected."""
    try:
        with warnings.catch_warnings():
            # MAX_PIXELS below is far stricter than Pillow's own warning threshold.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data), formats=list(FORMATS)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageRejected(
                        f"The image is {width}x{height} pixels, larger than allowed."
                    )
                image.verify()
                return image.format, width, height
    except ImageRejected:
        raise
    except PILImage.DecompressionBombError:
        raise ImageRejected(
            "The image declares far more pixels than any model makes, larger than allowed "
            "(a decompression bomb)."
        ) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageRejected(
            f"The download is not a valid PNG, JPEG or WebP image ({error})."
        ) from None


def sidecar_folder(digest: str) -> str:
    return f"{SIDECARS}/{digest[:2]}/{digest}"


def sidecar_name(digest: str, job_id: int, index: int) -> str:
    """The sidecar of image `index` of job `job_id`, whose original has this SHA-256."""
    return f"{sidecar_folder(digest)}/{job_id}-{index}.json"


def credential_columns(data: bytes, content_type: str) -> dict[str, Any]:
    """The Content Credentials columns of an image row for these original bytes
    (app.credentials: `inspect` never raises and has its own size and time budgets)."""
    return credentials.columns(credentials.inspect(data, content_type))


def original_name(digest: str, image_format: str) -> str:
    """The content-addressed name of an original with this SHA-256 and Pillow format."""
    return f"images/{digest[:2]}/{digest}.{FORMATS[image_format][0]}"


def described(
    digest: str, size: int, image_format: str, width: int, height: int, *, placeholder: str = ""
) -> StoredImage:
    """What an image with this SHA-256, size in bytes, format and dimensions is stored as:
    its content-addressed original and thumbnail names."""
    thumbnail_name, thumbnail_large_name = thumbnail_names(digest)
    return StoredImage(
        sha256=digest,
        bytes=size,
        width=width,
        height=height,
        content_type=FORMATS[image_format][1],
        file_name=original_name(digest, image_format),
        thumbnail_name=thumbnail_name,
        thumbnail_large_name=thumbnail_large_name,
        placeholder=placeholder,
    )


def file_columns(stored: StoredImage | Any) -> dict[str, Any]:
    """The file columns an image or job input row takes from a stored file (or from anything
    with the same attributes): its hash, size, dimensions, type, original and thumbnails."""
    return {name: getattr(stored, name) for name in FILE_FIELDS}


def stored_from_row(row: Image | JobInput) -> StoredImage:
    """A stored image or job input row's file as a StoredImage, for a job that uses it again
    (an image row's empty columns become empty values; it has no large thumbnail before the
    512 px size existed, so its small one stands in)."""
    return StoredImage(
        sha256=row.sha256 or "",
        bytes=row.bytes or 0,
        width=row.width or 0,
        height=row.height or 0,
        content_type=row.content_type or "",
        file_name=row.file_name or "",
        thumbnail_name=row.thumbnail_name or "",
        thumbnail_large_name=row.thumbnail_large_name or row.thumbnail_name or "",
        placeholder=getattr(row, "placeholder", None) or "",
    )


def thumbnail_names(digest: str) -> tuple[str, str]:
    """The small and large thumbnail file names of an image with this SHA-256."""
    folder = f"thumbs/{digest[:2]}/{digest}"
    return f"{folder}-{THUMBNAIL_SIZE}.webp", f"{folder}-{THUMBNAIL_LARGE_SIZE}.webp"


@dataclass(frozen=True)
class Thumbnails:
    small: bytes  # WebP, longest side THUMBNAIL_SIZE
    large: bytes  # WebP, longest side THUMBNAIL_LARGE_SIZE
    placeholder: str  # the average colour, "#rrggbb"


def make_thumbnails(data: bytes) -> Thumbnails:
    """Both thumbnails and the placeholder colour, decoding the image once."""
    with PILImage.open(io.BytesIO(data), formats=list(FORMATS)) as image:
        # A JPEG can decode straight at a reduced scale, much faster than full size.
        image.draft("RGB", (THUMBNAIL_LARGE_SIZE, THUMBNAIL_LARGE_SIZE))
        mode = "RGBA" if image.mode in ("RGBA", "LA", "P", "PA") else "RGB"
        if image.mode not in ("RGB", "RGBA", "L", "LA"):  # resampling a palette is NEAREST
            image = image.convert(mode)
        # Reduced in place before anything copies the full-size pixels: a convert() and a
        # copy() of a 1024x1024 image cost as much as the reduction (issue #18, bench.pipeline).
        # reducing_gap: a cheap box reduction first, then LANCZOS (half the time, same look).
        image.thumbnail(
            (THUMBNAIL_LARGE_SIZE, THUMBNAIL_LARGE_SIZE),
            PILImage.Resampling.LANCZOS,
            reducing_gap=1.0,
        )
        large = image.convert(mode)  # a copy that outlives the file
    small = large.copy()
    small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), PILImage.Resampling.LANCZOS)
    red, green, blue = small.convert("RGB").resize((1, 1), PILImage.Resampling.BOX).getpixel((0, 0))
    return Thumbnails(
        small=_webp(small), large=_webp(large), placeholder=f"#{red:02x}{green:02x}{blue:02x}"
    )


def _webp(image: PILImage.Image) -> bytes:
    out = io.BytesIO()
    # method 2 encodes about 3x faster than 4 for a few percent more bytes (bench/images.py).
    image.save(out, "WEBP", quality=80, method=2)
    return out.getvalue()


def files_in_use(names: Iterable[str]) -> set[str]:
    """Which of these stored file names some image or job input row (of any owner, trashed or
    not) names.

    Deliberately not narrowed to the viewer: during a request every ORM query is scoped to the
    signed-in owner (app.auth), and a count that saw only the viewer's rows would call another
    owner's copy of the same bytes unused, so deleting one's own image would delete theirs.
    """
    wanted = sorted({name for name in names if name})
    used: set[str] = set()
    for start in range(0, len(wanted), NAMES_PER_QUERY):
        chunk = wanted[start : start + NAMES_PER_QUERY]
        for column in FILE_COLUMNS:
            statement = select(column).where(column.in_(chunk))
            used |= set(db.session.scalars(statement.execution_options(**scoping.ALL_OWNERS)))
    return used
