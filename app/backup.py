"""Backups of a SQLite installation, and restoring them (`flask atelier backup|restore`).

A backup folder holds:
    atelier.db       a consistent snapshot taken with SQLite's online backup API, so the app
                     and its workers may keep running while it is taken
    images/ thumbs/  the image files and the sidecars beside the originals (their job
    sidecars/        parameters), hard-linked where the backup is on the same file system
                     (stored files are never changed in place, only replaced by a rename, so a
                     link is a true snapshot), copied otherwise
    manifest.json    written last, so a backup without it is incomplete: the time, the schema
                     revision and the counts

The snapshot is taken before the files are collected, and a file is only ever written before
the row that points at it, so every file the snapshot's rows name is there, unless the image
was deleted in between (the manifest lists such files as `missing`).

Hard links share the disk with the data folder: copy the backup folder elsewhere (or pass
`--copy`) to survive a lost disk. The secret key and the emulator's state are not included.

PostgreSQL is backed up with its own tools (`pg_dump`), plus a copy of images/, thumbs/ and
sidecars/. With object storage (ATELIER_STORAGE_URL) the objects are downloaded into the backup
folder (never linked), and a restore uploads them again, each checked.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from flask import current_app
from sqlalchemy.engine import make_url

from app import storage
from app.models import db, utcnow

DATABASE_FILE = "atelier.db"
MANIFEST_FILE = "manifest.json"
FOLDERS = ("images", "thumbs", storage.SIDECARS)
FORMAT = 1
# A backup holds every user's work: readable by the service user alone.
PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700
POSTGRESQL_HINT = (
    "The database is PostgreSQL: back it up with pg_dump (for example "
    '`pg_dump --format=custom --file=atelier.dump "$DATABASE_URL"`, restored with pg_restore), '
    "and copy the images/, thumbs/ and sidecars/ folders of ATELIER_DATA_DIR after the dump "
    "finishes. "
    "`flask atelier backup` and `restore` handle SQLite only."
)


class BackupError(Exception):
    """The backup or restore cannot be done; the message says why and what to do instead."""


@dataclass(frozen=True)
class RestoreResult:
    manifest: dict[str, Any]
    files_restored: int
    current_revision: str | None


def sqlite_path(database_url: str) -> Path:
    """The SQLite file behind `database_url`; BackupError for PostgreSQL or in-memory."""
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        raise BackupError(POSTGRESQL_HINT)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise BackupError(f"Only SQLite files can be backed up, not {url.get_backend_name()}.")
    return Path(url.database)


def create_backup(dest: Path, *, link: bool = True) -> dict[str, Any]:
    """Write a backup of the configured database and image folder into `dest`; its manifest."""
    config = current_app.config
    source_db = sqlite_path(config["SQLALCHEMY_DATABASE_URI"])
    files = storage.current()
    data_dir = files.root
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; back up into a new or empty folder.")
    dest.mkdir(parents=True, exist_ok=True)
    # Private whatever the umask or the folder's history (a backup holds every user's work).
    dest.chmod(PRIVATE_FOLDER)

    partial = dest / f"{DATABASE_FILE}.partial"
    with (
        closing(sqlite3.connect(source_db, timeout=30)) as source,
        closing(sqlite3.connect(partial)) as target,
    ):
        source.backup(target)  # one step: a read transaction over the whole copy
        # A self-contained file (no -wal beside it), readable on a read-only medium.
        target.execute("PRAGMA journal_mode=DELETE")
        counts, revision, referenced = _describe(target)
    partial.chmod(PRIVATE_FILE)
    os.replace(partial, dest / DATABASE_FILE)

    linked = copied = 0
    if not files.is_local:  # an object store: each object downloaded into the backup
        link = False
    names = _stored_files(data_dir) if files.is_local else _stored_objects(files)
    for relative in names:
        target_path = dest / relative
        target_path.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        if not files.is_local:
            storage.write_atomically(target_path, files.read(relative))
            copied += 1
            continue
        if link:
            try:
                os.link(data_dir / relative, target_path)
                linked += 1
                continue
            except OSError:
                link = False  # another file system (or no links): copy from now on
        shutil.copy2(data_dir / relative, target_path)
        target_path.chmod(PRIVATE_FILE)  # copy2 copies the mode: an old file may be 0644
        copied += 1
    missing = sorted(name for name in referenced if not (dest / name).is_file())
    manifest = {
        "format": FORMAT,
        "created_at": utcnow().isoformat().replace("+00:00", "Z"),
        "schema_revision": revision,
        "counts": {**counts, "files": linked + copied},
        "files_linked": linked,
        "files_copied": copied,
        "missing": missing,
    }
    storage.write_atomically(dest / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
    return manifest


def restore_backup(src: Path, *, force: bool = False) -> RestoreResult:
    """Bring a backup back into the configured data folder and database.

    Files are written first (each atomically), then the database is replaced in one
    transaction through the backup API, so rows never point at files not yet there.
    Stop the app and its workers first.
    """
    config = current_app.config
    target_db = sqlite_path(config["SQLALCHEMY_DATABASE_URI"])
    manifest = read_manifest(src)
    jobs_present = _job_count(target_db)
    if jobs_present and not force:
        raise BackupError(
            f"The database already has {jobs_present} job(s); restoring would replace them. "
            "Use --force to replace them anyway."
        )
    files = storage.current()
    restored = 0
    for relative in _stored_files(src):
        data = (src / relative).read_bytes()
        found = files.stat(relative)
        if relative.startswith(f"{storage.SIDECARS}/"):
            if found is not None and files.read(relative) == data:
                continue  # a sidecar is not content-addressed: compared whole (it is small)
        elif found is not None and found.size == len(data):
            continue  # content-addressed: same name and size is the same file
        files.write(relative, data)
        restored += 1

    db.engine.dispose()  # no pooled connection keeps the old database's pages
    source_uri = f"{(src / DATABASE_FILE).resolve().as_uri()}?mode=ro"
    with (
        closing(sqlite3.connect(source_uri, uri=True)) as source,
        closing(sqlite3.connect(target_db, timeout=30)) as target,
    ):
        source.backup(target)
    return RestoreResult(manifest, restored, _head_revision())


def read_manifest(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / MANIFEST_FILE).read_text())
    except FileNotFoundError:
        raise BackupError(
            f"{src} has no {MANIFEST_FILE}: it is not a backup, or the backup did not finish."
        ) from None
    if manifest.get("format") != FORMAT or not (src / DATABASE_FILE).is_file():
        raise BackupError(f"{src} is not an Atelier backup this version can restore.")
    return manifest


def _describe(connection: sqlite3.Connection) -> tuple[dict[str, int], str | None, set[str]]:
    """(row counts, schema revision, file names the image rows reference) of a snapshot."""

    def count(sql: str) -> int:
        return connection.execute(sql).fetchone()[0]

    counts = {
        "jobs": count("SELECT count(*) FROM jobs"),
        "images": count("SELECT count(*) FROM images"),
        "stored_images": count("SELECT count(*) FROM images WHERE status = 'stored'"),
    }
    row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    names = connection.execute(
        "SELECT file_name, thumbnail_name, thumbnail_large_name FROM images WHERE status = 'stored'"
    ).fetchall()
    referenced = {name for triple in names for name in triple if name}
    return counts, (row[0] if row else None), referenced


def _stored_files(root: Path) -> list[str]:
    """Relative names of the files under images/, thumbs/ and sidecars/, temporary files left
    out."""
    found = []
    for folder in FOLDERS:
        for directory, _subdirs, files in os.walk(root / folder):
            for name in files:
                if not name.startswith(storage.TEMP_PREFIX):
                    found.append((Path(directory) / name).relative_to(root).as_posix())
    return sorted(found)


def _stored_objects(files: storage.Storage) -> list[str]:
    """The names of the objects under images/, thumbs/ and sidecars/ of an object store."""
    return sorted(item.name for folder in FOLDERS for item in files.list(f"{folder}/"))


def _job_count(database: Path) -> int:
    if not database.exists():
        return 0
    with closing(sqlite3.connect(database, timeout=30)) as connection:
        try:
            return connection.execute("SELECT count(*) FROM jobs").fetchone()[0]
        except sqlite3.OperationalError:  # no jobs table: a database never migrated
            return 0


def _head_revision() -> str | None:
    """The schema revision this version of Atelier migrates to."""
    config = Config()
    config.set_main_option("script_location", current_app.extensions["migrate"].directory)
    return ScriptDirectory.from_config(config).get_current_head()
