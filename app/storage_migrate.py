"""`flask atelier storage migrate --to URL`: copy the library's objects to another backend,
verifying each, then record the new location (the switch).

What is copied: every object under images/ (originals and edit inputs), thumbs/ and
sidecars/ of the current store (ATELIER_STORAGE_URL), never previews (a running job's
passing frame) or the local spool. The source is never deleted.

Resumable: an object already in the target with the same size and sha256 is skipped, so a
run interrupted anywhere (even kill -9) continues where it stopped, with at most the object
in flight copied again. Verifying: the target's `put` checks what was stored (app.blobstore);
an original's bytes must also hash to the sha256 in its name, or it is reported as damaged
and not copied, and the migration does not switch.

The switch, in three passes: (1) every object the source lists; (2) the objects named by rows
that committed meanwhile, repeated while there are any; (3) in one write transaction that
locks the `storage_url` row (PostgreSQL FOR UPDATE; SQLite serializes writes), the rows'
objects that are still missing, then the new URL is recorded and committed. An image row
commits only after reading that row FOR SHARE in its own transaction (app.storage
`check_location`), so every row committed before the switch has its objects copied by pass
3, and none that names the old store commits after it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select

from app import blobstore, storage
from app.auth import scoping
from app.config import ConfigError
from app.crashpoints import crash_point
from app.models import Image, ImageStatus, LibrarySetting, db, write_transaction

# The library's objects (storage's layout); previews and the spool are not the library.
PREFIXES = ("images/", "thumbs/", "sidecars/")
PROGRESS_EVERY = 100
# The test crash point `migrate_copy` fires after this many objects were copied.
CRASH_AFTER_COPIES = 3
# Unlocked catch-up passes before the locked one: each copies what committed meanwhile, so
# the pass under the lock (which holds other instances' writes back) has little left to do.
CATCH_UP_PASSES = 5
CONTENT_ADDRESSED = re.compile(r"images/[0-9a-f]{2}/(?P<sha>[0-9a-f]{64})\.[a-z]+")


class MigrationRefused(Exception):
    """Nothing can be migrated (same place, a target that is not usable); nothing changed."""


@dataclass
class MigrationReport:
    source: str  # normalized URLs
    target: str
    source_location: str = ""  # the data folder's path, or the source URL
    copied: int = 0
    already_there: int = 0
    bytes_copied: int = 0
    damaged: list[str] = field(default_factory=list)  # the bytes do not match the name
    missing: list[str] = field(default_factory=list)  # a row names it, the source lacks it
    failed: list[str] = field(default_factory=list)  # "name: why" (storage errors)
    switched: bool = False

    @property
    def clean(self) -> bool:
        return not (self.damaged or self.missing or self.failed)

    def lines(self) -> list[str]:
        found = [
            f"Copied {self.copied} object(s) ({_size(self.bytes_copied)}), "
            f"{self.already_there} already there, {len(self.damaged)} damaged, "
            f"{len(self.missing)} missing, {len(self.failed)} failed: "
            f"{self.source} -> {self.target}."
        ]
        found += [f"Damaged in the source (not copied): {name}" for name in self.damaged]
        found += [f"Missing in the source (a row names it): {name}" for name in self.missing]
        found += [f"Failed: {line}" for line in self.failed]
        if self.switched:
            found.append(
                f"Switched: the database now records {self.target} as the library's storage. "
                f"Set ATELIER_STORAGE_URL={self.target} on every instance and restart them; an "
                "instance still running with the old URL stores nothing until then."
            )
        else:
            found.append(
                f"Not switched: the library still lives in {self.source}. Fix what is listed "
                "(`flask atelier verify` names the images concerned: restore their files from "
                "a backup, or delete those images) and run the same command again; it "
                "continues where it stopped."
            )
        found.append(
            f"The source ({self.source_location}) was not changed or deleted. Once every "
            "instance runs with the new URL and `flask atelier verify` is clean, remove its "
            "images/, thumbs/ and sidecars/ yourself (the folders, or the objects under the "
            "container's/bucket's prefix) when you no longer want a copy to go back to."
            if self.switched
            else f"The source ({self.source_location}) was not changed or deleted."
        )
        return found


def open_target(url: str, root: Path, settings: Any) -> blobstore.BlobStore:
    """The target store, checked with one cheap call; MigrationRefused naming --to otherwise."""
    try:
        target = blobstore.open_store(url, root, settings)
        target.check()
    except ConfigError as error:
        # The backends name the setting they read the URL from; here it came from --to.
        message = str(error).replace("ATELIER_STORAGE_URL", "--to")
        raise MigrationRefused(f"The target {url} cannot be used: {message}") from None
    return target


def migrate(
    files: storage.Storage,
    target_url: str,
    *,
    progress: Callable[[str], None] | None = None,
) -> MigrationReport:
    """Copy the library from `files` to `target_url`, then switch (if nothing was damaged,
    missing or failed). MigrationRefused when there is nothing to do or the target is unusable;
    then nothing changed."""
    config = current_app.config
    source_url = storage.normalized_url(config.get("ATELIER_STORAGE_URL"))
    target_norm = storage.normalized_url(target_url)
    if target_norm == source_url:
        raise MigrationRefused(
            f"The library already lives in {source_url} (ATELIER_STORAGE_URL): there is "
            "nothing to migrate. Name another place with --to."
        )
    target = open_target(target_url, files.root, config)
    _ensure_location_row()
    report = MigrationReport(source_url, target_norm, files.location)
    copier = _Copier(files.blobs, target, report, progress)
    if progress is not None:
        progress(f"Copying the library from {files.location} to {target_norm} ...")

    # Pass 1: everything the source holds.
    for prefix in PREFIXES:
        for item in files.blobs.list(prefix):
            if not Path(item.name).name.startswith(blobstore.TEMP_PREFIX):
                copier.copy(item.name, item.size)
    # Pass 2: what rows committed meanwhile name, while there is any.
    for _ in range(CATCH_UP_PASSES):
        if not copier.copy_all(_names_in_rows()):
            break
    # Pass 3: under the lock, the rest, then the switch.
    with write_transaction() as session:
        recorded = storage.recorded_location(session, lock="update")
        if recorded is not None and recorded[0] != source_url:
            raise MigrationRefused(
                f"Another migration moved the library to {recorded[0]} meanwhile; nothing "
                "was recorded."
            )
        copier.copy_all(_names_in_rows())
        if report.clean:
            storage.record_location(session, target_norm)
            report.switched = True
    return report


class _Copier:
    def __init__(
        self,
        source: blobstore.BlobStore,
        target: blobstore.BlobStore,
        report: MigrationReport,
        progress: Callable[[str], None] | None,
    ) -> None:
        self.source, self.target, self.report = source, target, report
        self.progress = progress
        self.seen: set[str] = set()
        self.looked_at = 0

    def copy_all(self, names: Iterable[str]) -> int:
        """Copy those of `names` (named by rows) not seen yet; return how many were new."""
        new = sorted(set(names) - self.seen)
        for name in new:
            self.copy(name)
        return len(new)

    def copy(self, name: str, size: int | None = None) -> None:
        """Copy one object unless the target has it already (same size and sha256)."""
        if name in self.seen:
            return
        self.seen.add(name)
        try:
            self._copy(name, size)
        except blobstore.StorageUnavailable as error:
            self.report.failed.append(f"{name}: {error}")
        self.looked_at += 1
        if self.progress is not None and self.looked_at % PROGRESS_EVERY == 0:
            report = self.report
            self.progress(
                f"{self.looked_at} object(s) looked at: {report.copied} copied "
                f"({_size(report.bytes_copied)}), {report.already_there} already there, "
                f"{len(report.damaged)} damaged, {len(report.failed)} failed"
            )

    def _copy(self, name: str, size: int | None) -> None:
        report = self.report
        if size is None:
            found = self.source.stat(name)
            if found is None:
                self._missing(name)
                return
            size = found.size
        match = CONTENT_ADDRESSED.fullmatch(name)
        expected = match["sha"] if match is not None else None
        in_target = _stored_sha256(self.target, name, size)
        # Already there: compare with what the name promises (originals) or the source's own
        # sha256 (thumbnails, sidecars), without reading the source's bytes when it can.
        if in_target is not None and in_target == (
            expected or _stored_sha256(self.source, name, size)
        ):
            report.already_there += 1
            return
        try:
            data = self.source.get(name)
        except blobstore.ObjectMissing:
            self._missing(name)
            return
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            report.damaged.append(name)
            return
        self.target.put(name, data, storage._content_type_of(name))
        report.copied += 1
        report.bytes_copied += len(data)
        if report.copied == CRASH_AFTER_COPIES:
            crash_point("migrate_copy")

    def _missing(self, name: str) -> None:
        """Gone from the source: a problem only if a row still names it (an object deleted
        with its rows meanwhile is not). A missing sidecar is not one: `verify --repair`
        writes it again from the row."""
        if not name.startswith(storage.SIDECARS + "/") and storage.files_in_use([name]):
            self.report.missing.append(name)


def _stored_sha256(store: blobstore.BlobStore, name: str, size: int) -> str | None:
    """The sha256 of the object `name` in `store` if it is `size` bytes long, else None.

    The object backends keep the sha256 `put` checked as metadata (`stat`: one HEAD); an object
    without it (not written by Atelier) is read and hashed. A local file is hashed."""
    found = store.stat(name)
    if found is None or found.size != size:
        return None
    if found.sha256:
        return found.sha256
    try:
        return hashlib.sha256(store.get(name)).hexdigest()
    except blobstore.ObjectMissing:
        return None


def _ensure_location_row() -> None:
    """The `storage_url` row exists (NULL: never migrated), so the switch can lock it."""
    with write_transaction() as session:
        if session.get(LibrarySetting, storage.STORAGE_URL_KEY) is None:
            session.add(LibrarySetting(key=storage.STORAGE_URL_KEY, value=None))


def _names_in_rows() -> set[str]:
    """Every object a row names: image and input files and thumbnails, and stored images'
    sidecars (of every owner)."""
    names: set[str] = set()
    for column in storage.FILE_COLUMNS:
        statement = select(column).where(column.is_not(None))
        names |= set(db.session.scalars(statement.execution_options(**scoping.ALL_OWNERS)))
    rows = db.session.execute(
        select(Image.sha256, Image.job_id, Image.index)
        .where(Image.status == ImageStatus.STORED, Image.sha256.is_not(None))
        .execution_options(**scoping.ALL_OWNERS)
    )
    names |= {storage.sidecar_name(sha, job_id, index) for sha, job_id, index in rows}
    names.discard("")
    return names


def _size(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB"
