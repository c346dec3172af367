"""Checks that the database and the image folder agree, repairs what is safe, rebuilds from files.

`verify` compares image rows with the files under images/, thumbs/ and sidecars/: rows whose
original or either thumbnail (256 and 512 px) is missing, or whose original no longer hashes to
the recorded sha256 (reported, never "fixed": the row keeps the sha256 the provider's bytes had),
originals that still carry the `atelier` chunk an earlier version spliced in, rows without their
sidecar, files and sidecars no row accounts for, and leftover `.tmp-*` files from interrupted
writes. It also reads each original's Content Credentials again (app.credentials) and reports
rows whose recorded columns differ, and files under previews/ that no running job names (a
crash between a streamed frame's write and the job's end leaves one). With `repair=True` it
first runs `repair.repair_originals` (originals back to the provider's bytes, sidecars
written), then removes those stale previews (transient copies of a frame, never the only copy
of anything), moves other stray files aside into `orphans/<UTC timestamp>/` (nothing else is
ever deleted) and regenerates missing thumbnails from intact originals; a row is only changed
by that repair of originals.

The spool: a download whose upload to the object store failed waits in the data folder's
`.spool/<job id>-<index>.bin` until the upload succeeds. One whose job is still queued or
running is normal (the worker uploads it when storage answers again). Any other is a leftover:
its image row is already stored, or its job is final (the upload kept failing until the
deadline) or gone. A repair removes a leftover only when its bytes are safe elsewhere: the
object at its content address exists, hashes to the same sha256, and some row names it (an
object no row names is an orphan that the same repair sets aside). The others stay, named with
how to recover them: they may be the only copy of an image the provider was paid for.

"No row references" means no row of any owner: files are content-addressed, so two owners'
identical images share files, and every read here sees all owners' rows (`scoping.ALL_OWNERS`)
even if it ever runs inside a signed-in request.

An edit's inputs (job_inputs rows) name files in the same folders: they count as references,
and each input's original is checked the same way (missing, hash mismatch, missing thumbnails,
which a repair regenerates).

`rebuild` recreates jobs and image rows from the sidecars beside the originals no row references
(a lost or older database): one image row per sidecar, so two jobs (or owners) that share a file
both come back. An original without sidecars from an earlier version is read from the `atelier`
chunk inside it. An edit's metadata names its inputs by role and SHA-256; those whose files are
in the data folder become the rebuilt job's inputs again.

`verify` leaves files younger than the grace period alone: they may belong to a write still in
flight (the worker writes a file first and commits its row after). `rebuild` needs no grace
period: a file being written names a job that exists, and such files are left alone.

Both run inside an app context. Database reads end before any file is touched, and writes are
short transactions made after the file work is done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import time
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select, text

from app import pngmeta, search, storage
from app import repair as repair_module
from app.auth import scoping
from app.blobstore import StoredObject
from app.models import (
    Image,
    ImageStatus,
    Job,
    JobInput,
    JobKind,
    JobStatus,
    db,
    utcnow,
    write_transaction,
)

SCANNED_FOLDERS = ("images", "thumbs")
ORPHANS_FOLDER = "orphans"
# What app.storage.Storage.spool names a waiting download: <job id>-<index>.bin.
SPOOL_NAME = re.compile(r"(?P<job_id>[0-9]{1,18})-(?P<index>[0-9]{1,9})\.bin")
# What app.storage.Storage.set_spool_aside renames a deleted job's waiting download to.
SPOOL_ASIDE_NAME = re.compile(r"(?P<job_id>[0-9]{1,18})-(?P<index>[0-9]{1,9})\.deleted-[0-9]+\.bin")
DEFAULT_GRACE_SECONDS = 900
METADATA_VERSION = 1
# What a rebuilt job takes from its first image's metadata, besides its times.
JOB_FIELDS = ("prompt", "provider", "model", "size", "n", "options")
# What Pillow raises for bytes it cannot decode (as caught in app.storage).
THUMBNAIL_ERRORS = (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError)


# --- verify -----------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """What `verify` found (image ids or paths relative to the data folder) and what it did."""

    data_dir: str  # the folder checked, for the report's first line
    repair: bool
    grace_seconds: int
    rows_checked: int = 0
    files_checked: int = 0
    missing_originals: list[int] = field(default_factory=list)
    missing_thumbnails: list[int] = field(default_factory=list)
    hash_mismatches: list[int] = field(default_factory=list)
    orphan_files: list[str] = field(default_factory=list)
    stale_temp_files: list[str] = field(default_factory=list)
    # Stored by an earlier version: the original still carries the `atelier` chunk.
    spliced_originals: list[int] = field(default_factory=list)
    missing_sidecars: list[int] = field(default_factory=list)
    orphan_sidecars: list[str] = field(default_factory=list)  # no stored row accounts for them
    # Files under previews/ that no running job names (a crash between a frame's write and the
    # job's end), and those a repair removed.
    stale_previews: list[str] = field(default_factory=list)
    removed_previews: list[str] = field(default_factory=list)
    sidecars_checked: int = 0
    # image id -> the credential columns whose recorded value differs from a fresh reading.
    credential_mismatches: dict[int, str] = field(default_factory=dict)
    originals_repair: repair_module.RepairReport | None = None  # with repair=True
    # Younger than the grace period: possibly being written right now, so not touched.
    recent_files: list[str] = field(default_factory=list)
    # Repairs made (only with repair=True).
    archive_dir: str | None = None
    moved: list[str] = field(default_factory=list)
    regenerated_thumbnails: list[int] = field(default_factory=list)
    thumbnail_errors: dict[int, str] = field(default_factory=dict)
    # An edit's inputs whose files are missing or damaged, as readable lines (input id -> line),
    # and those whose missing thumbnails a repair regenerated.
    input_problems: dict[int, str] = field(default_factory=dict)
    regenerated_input_thumbnails: list[int] = field(default_factory=list)
    # The spool (names relative to the data folder, ".spool/12-0.bin"): downloads whose job is
    # still waiting for their upload (normal), leftovers (name -> why), and with repair=True
    # those removed (name -> the object that holds their bytes) or kept (name -> why).
    spool_waiting: list[str] = field(default_factory=list)
    spool_leftovers: dict[str, str] = field(default_factory=dict)
    spool_removed: dict[str, str] = field(default_factory=dict)
    spool_kept: dict[str, str] = field(default_factory=dict)
    spool_extensions: dict[str, str] = field(default_factory=dict, repr=False)  # images' formats
    # image id -> (file_name, the missing thumbnails' names), for readable lines.
    file_names: dict[int, tuple[str | None, str | None]] = field(default_factory=dict, repr=False)

    @property
    def remaining_problems(self) -> int:
        """Problems still present after this run (repairs made are subtracted)."""
        unresolved_thumbnails = set(self.missing_thumbnails) - set(self.regenerated_thumbnails)
        unmoved = set(self.orphan_files + self.stale_temp_files + self.orphan_sidecars) - set(
            self.moved
        )
        unresolved_inputs = set(self.input_problems) - set(self.regenerated_input_thumbnails)
        return (
            len(self.missing_originals)
            + len(self.hash_mismatches)
            + len(unresolved_thumbnails)
            + len(unmoved)
            + len(unresolved_inputs)
            + len(self.spliced_originals)
            + len(self.missing_sidecars)
            + len(self.credential_mismatches)
            + len(set(self.stale_previews) - set(self.removed_previews))
            + len(set(self.spool_leftovers) - set(self.spool_removed))
        )

    @property
    def clean(self) -> bool:
        """True when no problem remains: none was found, or every one found was repaired."""
        return self.remaining_problems == 0

    def lines(self) -> list[str]:
        lines = self.originals_repair.lines() if self.originals_repair is not None else []
        lines.append(
            f"Checked {self.rows_checked} stored image rows and {self.files_checked} files "
            f"in {self.data_dir}."
        )
        for image_id in self.missing_originals:
            lines.append(f"Missing original: image {image_id} ({self._file(image_id)}).")
        for image_id in self.hash_mismatches:
            lines.append(
                f"Hash mismatch: image {image_id} ({self._file(image_id)}) "
                "no longer matches its recorded sha256."
            )
        for image_id in self.spliced_originals:
            lines.append(
                f"Original with embedded metadata from an earlier version: image {image_id} "
                f"({self._file(image_id)}); --repair restores the provider's bytes."
            )
        for image_id in self.missing_sidecars:
            lines.append(
                f"Missing sidecar: image {image_id} ({self._file(image_id)}); --repair writes it."
            )
        for image_id, columns in self.credential_mismatches.items():
            lines.append(
                f"Content Credentials differ from what image {image_id} "
                f"({self._file(image_id)}) recorded: {columns}."
            )
        for image_id in self.missing_thumbnails:
            line = f"Missing thumbnail: image {image_id} ({self._thumbnail(image_id)})"
            if image_id in self.regenerated_thumbnails:
                line += ": regenerated"
            elif image_id in self.thumbnail_errors:
                line += f": could not regenerate ({self.thumbnail_errors[image_id]})"
            elif self.repair:
                line += ": not regenerated, the original is missing or damaged"
            lines.append(line + ".")
        for input_id, line in self.input_problems.items():
            done = ": regenerated" if input_id in self.regenerated_input_thumbnails else ""
            lines.append(f"{line}{done}.")
        for label, paths in (
            ("File without a row", self.orphan_files),
            ("Sidecar without a row", self.orphan_sidecars),
            ("Stale temporary file", self.stale_temp_files),
        ):
            for path in paths:
                if path in self.moved:
                    where = (
                        f"moved to {self.archive_dir}/{path}"
                        if self.archive_dir
                        else "deleted from the object store"
                    )
                    lines.append(f"{label}: {path}: {where}.")
                else:
                    lines.append(f"{label}: {path}.")
        for path in self.stale_previews:
            done = ": removed" if path in self.removed_previews else ""
            lines.append(f"Preview of a job that is not running with it: {path}{done}.")
        lines += self._spool_lines()
        for path in self.recent_files:
            lines.append(
                f"Left alone (younger than {self.grace_seconds} s, may be a write in progress): "
                f"{path}."
            )
        if self.missing_originals or self.hash_mismatches:
            lines.append(
                "Rows whose original is missing or damaged are only reported: restore the file "
                "from a backup, or delete the job."
            )
        if self.clean:
            lines.append("Consistent." if not self.moved else "Consistent after repair.")
        else:
            hint = "" if self.repair else " Run with --repair to fix what can be fixed."
            lines.append(f"{self.remaining_problems} problem(s) remain.{hint}")
        return lines

    def _spool_lines(self) -> list[str]:
        lines = [
            f"Waiting for its upload (normal while storage fails; the worker uploads it): {path}."
            for path in self.spool_waiting
        ]
        for path, why in self.spool_leftovers.items():
            if path in self.spool_removed:
                lines.append(
                    f"Spool leftover: {path} ({why}): removed, its bytes are stored as "
                    f"{self.spool_removed[path]}."
                )
            elif path in self.spool_kept:
                lines.append(f"Spool leftover: {path} ({why}): kept, {self.spool_kept[path]}.")
            else:
                lines.append(f"Spool leftover: {path} ({why}).")
        kept = [path for path in self.spool_leftovers if path not in self.spool_removed]
        if not kept:
            return lines
        line = (
            "A spool leftover is a downloaded image exactly as the provider delivered it "
            "(PNG, JPEG or WebP). "
        )
        if not self.repair:
            line += (
                "--repair removes those whose bytes are stored and named by a row, and keeps "
                "the others."
            )
        else:
            example = next((path for path in kept if path in self.spool_extensions), kept[0])
            extension = self.spool_extensions.get(example, "png")
            stem = example.rsplit("/", 1)[-1].removesuffix(".bin")
            line += (
                "Those kept may be the only copy: copy each out of the data folder under a name "
                f"with its format's extension (e.g. `cp DATA/{example} image-{stem}.{extension}`), "
                "then delete it from .spool/."
            )
        lines.append(line)
        return lines

    def _file(self, image_id: int) -> str | None:
        return self.file_names.get(image_id, (None, None))[0]

    def _thumbnail(self, image_id: int) -> str | None:
        return self.file_names.get(image_id, (None, None))[1]


@dataclass(frozen=True)
class _StoredRow:
    id: int
    job_id: int
    index: int
    content_type: str | None
    sha256: str | None
    file_name: str | None
    thumbnail_name: str | None
    thumbnail_large_name: str | None

    def thumbnails(self) -> list[tuple[str, int]]:
        """(file name, longest side) of each thumbnail the row names."""
        sizes = (
            (self.thumbnail_name, storage.THUMBNAIL_SIZE),
            (self.thumbnail_large_name, storage.THUMBNAIL_LARGE_SIZE),
        )
        return [(name, size) for name, size in sizes if name]


def verify(
    files: storage.Storage,
    *,
    repair: bool = False,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
    progress: repair_module.Progress | None = None,
) -> VerifyReport:
    """Compare image rows with the files in the data folder; with `repair`, fix what is safe
    (originals stored by earlier versions first: `repair.repair_originals`)."""
    report = VerifyReport(data_dir=files.location, repair=repair, grace_seconds=grace_seconds)
    if repair:
        report.originals_repair = repair_module.repair_originals(files, progress=progress)
    rows, referenced = _read_image_rows()
    input_rows = _read_input_rows()
    referenced |= {name for row in input_rows for name in row[3:] if name}
    report.rows_checked = len(rows)

    intact_originals: dict[int, str] = {}
    digests: dict[str, str] = {}  # content-addressed files may be shared by several rows
    for row in rows:
        missing_thumbnails = [
            name for name, _ in row.thumbnails() if _existing_file(files, name) is None
        ]
        report.file_names[row.id] = (row.file_name, ", ".join(missing_thumbnails) or None)
        original = _existing_file(files, row.file_name)
        if original is None:
            report.missing_originals.append(row.id)
        else:
            if original not in digests:
                digests[original] = _sha256_of(files, original)
            if digests[original] != row.sha256:
                report.hash_mismatches.append(row.id)
            else:
                intact_originals[row.id] = original
                if _carries_metadata(files, original):
                    report.spliced_originals.append(row.id)
        if missing_thumbnails:
            report.missing_thumbnails.append(row.id)

    threshold = time.time() - grace_seconds
    for found in _scan(files):
        report.files_checked += 1
        _sort_file(found, referenced, threshold, report, report.orphan_files)

    _check_inputs(files, input_rows, digests, report)
    _check_sidecars(files, rows, threshold, report)
    _check_previews(files, threshold, report)
    _check_spool(files, report)
    _check_credentials(files, rows, intact_originals, report)
    if repair:
        _repair_spool(files, report)
        _move_aside(files, report)
        _remove_stale_previews(files, threshold, report)
        _regenerate_thumbnails(files, rows, intact_originals, report)
    return report


def _read_input_rows() -> list[Any]:
    """Every job input: (id, job id, sha256, file, thumbnail, large thumbnail)."""
    rows = db.session.execute(
        select(
            JobInput.id,
            JobInput.job_id,
            JobInput.sha256,
            JobInput.file_name,
            JobInput.thumbnail_name,
            JobInput.thumbnail_large_name,
        )
        .order_by(JobInput.id)
        .execution_options(**scoping.ALL_OWNERS)
    ).all()
    db.session.commit()
    return list(rows)


def _check_inputs(
    files: storage.Storage, rows: list[Any], digests: dict[str, str], report: VerifyReport
) -> None:
    """Each input's original must be there and hash to its sha256; a missing thumbnail of an
    intact original is regenerated by a repair."""
    for input_id, job_id, digest, file_name, *thumbnail_names in rows:
        what = f"input {input_id} of job {job_id}"
        original = _existing_file(files, file_name)
        if original is None:
            report.input_problems[input_id] = f"Missing input original: {what} ({file_name})"
            continue
        if original not in digests:
            digests[original] = _sha256_of(files, original)
        if digests[original] != digest:
            report.input_problems[input_id] = (
                f"Hash mismatch: {what} ({file_name}) no longer matches its recorded sha256"
            )
            continue
        missing = [name for name in thumbnail_names if _existing_file(files, name) is None]
        if not missing:
            continue
        report.input_problems[input_id] = f"Missing input thumbnail: {what} ({', '.join(missing)})"
        if report.repair:
            try:
                thumbnails = storage.make_thumbnails(files.read(original))
            except THUMBNAIL_ERRORS:
                continue
            by_name = dict(zip(thumbnail_names, (thumbnails.small, thumbnails.large), strict=True))
            for name in missing:
                files.write(name, by_name[name])
            report.regenerated_input_thumbnails.append(input_id)


def _read_image_rows() -> tuple[list[_StoredRow], set[str]]:
    """Stored rows, and every file name any row (of any owner) references; the read ends
    before file I/O."""
    statement = select(
        Image.id,
        Image.job_id,
        Image.index,
        Image.content_type,
        Image.status,
        Image.sha256,
        Image.file_name,
        Image.thumbnail_name,
        Image.thumbnail_large_name,
    )
    result = db.session.execute(statement.execution_options(**scoping.ALL_OWNERS)).all()
    db.session.commit()
    referenced = {
        name
        for row in result
        for name in (row.file_name, row.thumbnail_name, row.thumbnail_large_name)
        if name
    }
    rows = [
        _StoredRow(
            row.id,
            row.job_id,
            row.index,
            row.content_type,
            row.sha256,
            row.file_name,
            row.thumbnail_name,
            row.thumbnail_large_name,
        )
        for row in result
        if row.status == ImageStatus.STORED
    ]
    return rows, referenced


def _carries_metadata(files: storage.Storage, name: str) -> bool:
    if not name.endswith(".png"):
        return False
    return pngmeta.file_carries_metadata(io.BytesIO(files.read(name)))


def _check_sidecars(
    files: storage.Storage, rows: list[_StoredRow], threshold: float, report: VerifyReport
) -> None:
    """Every stored row has its sidecar; every sidecar belongs to a stored row (a young one
    may be a worker's, written just before its row commits)."""
    expected = {
        storage.sidecar_name(row.sha256, row.job_id, row.index): row.id
        for row in rows
        if row.sha256 is not None
    }
    found = set()
    for item in _scan(files, (storage.SIDECARS,)):
        report.sidecars_checked += 1
        found.add(item.name)
        _sort_file(item, expected, threshold, report, report.orphan_sidecars)
    report.missing_sidecars = sorted(
        image_id for name, image_id in expected.items() if name not in found
    )


def _live_previews() -> set[str]:
    """The preview files running jobs (of any owner) name."""
    names = set(
        db.session.scalars(
            select(Job.preview_name)
            .where(Job.status == JobStatus.RUNNING, Job.preview_name.is_not(None))
            .execution_options(**scoping.ALL_OWNERS)
        )
    )
    db.session.commit()
    return names


def _check_previews(files: storage.Storage, threshold: float, report: VerifyReport) -> None:
    """Every file under previews/ is the frame its running job names. A young one may be a
    worker's, written just before it records the name; a temporary one is an interrupted
    write."""
    previews = _scan(files, (storage.PREVIEWS,))
    live = _live_previews() if previews else set()
    for item in previews:
        report.files_checked += 1
        _sort_file(item, live, threshold, report, report.stale_previews)


def _check_spool(files: storage.Storage, report: VerifyReport) -> None:
    """Sort the spooled downloads: waiting (the job is queued or running and has no stored row
    at that index) or leftovers (stored already, or the job is final or gone)."""
    spooled: dict[str, tuple[int, int] | None] = {}
    for base in files.spool_files():
        match = SPOOL_NAME.fullmatch(base)
        spooled[f"{storage.SPOOL}/{base}"] = (
            (int(match["job_id"]), int(match["index"])) if match is not None else None
        )
    if not spooled:
        return
    job_ids = {found[0] for found in spooled.values() if found is not None}
    statuses = dict(
        db.session.execute(
            select(Job.id, Job.status)
            .where(Job.id.in_(job_ids))
            .execution_options(**scoping.ALL_OWNERS)
        ).all()
    )
    stored = {
        (row.job_id, row.index): row.id
        for row in db.session.execute(
            select(Image.id, Image.job_id, Image.index)
            .where(Image.job_id.in_(job_ids), Image.status == ImageStatus.STORED)
            .execution_options(**scoping.ALL_OWNERS)
        )
    }
    db.session.commit()
    for path, found in spooled.items():
        if found is None:
            aside = SPOOL_ASIDE_NAME.fullmatch(path.rsplit("/", 1)[-1])
            report.spool_leftovers[path] = (
                f"job {aside['job_id']} was deleted while image {aside['index']} waited"
                if aside is not None
                else "not a name the worker spools under"
            )
            continue
        job_id, index = found
        if found in stored:
            report.spool_leftovers[path] = f"image {stored[found]} of job {job_id} is stored"
        elif job_id not in statuses:
            report.spool_leftovers[path] = f"job {job_id} is gone"
        elif statuses[job_id] in JobStatus.FINAL:
            report.spool_leftovers[path] = (
                f"job {job_id} {statuses[job_id]} without storing image {index}"
            )
        else:
            report.spool_waiting.append(path)


def _repair_spool(files: storage.Storage, report: VerifyReport) -> None:
    """Remove each spool leftover whose bytes are stored at their content address (same
    sha256) and named by a row, so no verify will set that object aside; keep the others,
    saying why."""
    safe: dict[str, str] = {}  # spool path -> the object holding its bytes
    for path in list(report.spool_leftovers):
        try:
            data = (files.root / path).read_bytes()
        except FileNotFoundError:  # removed since the scan: nothing left to decide
            del report.spool_leftovers[path]
            continue
        digest = hashlib.sha256(data).hexdigest()
        try:
            image_format, _, _ = storage.inspect_image(data)
        except storage.ImageRejected as error:
            report.spool_kept[path] = f"it is not an image Atelier stores ({error})"
            continue
        name = storage.original_name(digest, image_format)
        report.spool_extensions[path] = storage.FORMATS[image_format][0]
        if _existing_file(files, name) is None:
            report.spool_kept[path] = (
                f"no stored object holds its bytes (a {image_format} image, sha256 {digest})"
            )
        elif _sha256_of(files, name) != digest:
            report.spool_kept[path] = f"the object at {name} no longer holds these bytes"
        else:
            safe[path] = name
    named = _referenced_among(list(safe.values()))
    for path, name in safe.items():
        if name not in named:
            report.spool_kept[path] = (
                f"its bytes are stored as {name}, but no row names that object (an orphan, "
                "set aside by --repair)"
            )
            continue
        (files.root / path).unlink(missing_ok=True)
        report.spool_removed[path] = name


def _sort_file(
    item: StoredObject,
    accounted: Container[str],
    threshold: float,
    report: VerifyReport,
    strays: list[str],
) -> None:
    """Sort a scanned file: accounted for (nothing to say), younger than the grace period (left
    alone: possibly a write in flight), a stale temporary file, or else one of the `strays`."""
    relative = item.name
    is_temp = relative.rsplit("/", 1)[-1].startswith(storage.TEMP_PREFIX)
    if not is_temp and relative in accounted:
        return
    if item.modified > threshold:
        report.recent_files.append(relative)
    elif is_temp:
        report.stale_temp_files.append(relative)
    else:
        strays.append(relative)


def _remove_stale_previews(files: storage.Storage, threshold: float, report: VerifyReport) -> None:
    """Remove the stale previews (a preview is a transient copy of a frame, never the only copy
    of anything), unless a job took one up since the scan (a resumed stream writing anew)."""
    if not report.stale_previews:
        return
    live = _live_previews()
    taken_up = set()
    for relative in report.stale_previews:
        found = files.stat(relative)
        if found is not None and (relative in live or found.modified > threshold):
            taken_up.add(relative)
            continue
        if found is not None:
            files.delete(relative)
        report.removed_previews.append(relative)
    report.stale_previews = [path for path in report.stale_previews if path not in taken_up]


def _check_credentials(
    files: storage.Storage, rows: list[_StoredRow], intact: dict[int, str], report: VerifyReport
) -> None:
    """Read each intact original's Content Credentials again (app.credentials) and report rows
    whose recorded columns differ; nothing is changed."""
    for row in rows:
        if row.id not in intact or row.content_type is None:
            continue
        fresh = storage.credential_columns(files.read(intact[row.id]), row.content_type)
        if not fresh:
            continue
        recorded = db.session.execute(
            select(*(getattr(Image, column) for column in fresh))
            .where(Image.id == row.id)
            .execution_options(**scoping.ALL_OWNERS)
        ).one()
        db.session.commit()
        differing = [
            column for column, value in zip(fresh, recorded, strict=True) if fresh[column] != value
        ]
        if differing:
            report.credential_mismatches[row.id] = ", ".join(differing)


def _referenced_among(names: list[str]) -> set[str]:
    found = storage.files_in_use(names)
    db.session.commit()
    return found


def _existing_file(files: storage.Storage, name: str | None) -> str | None:
    """The name, when an object is stored under it (a name escaping the data folder points at
    nothing of ours)."""
    return name if name and files.exists(name) else None


def _sha256_of(files: storage.Storage, name: str) -> str:
    path = files.local_path(name)
    if path is not None:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    return hashlib.sha256(files.read(name)).hexdigest()


def _scan(files: storage.Storage, folders: tuple[str, ...] = SCANNED_FOLDERS) -> list[StoredObject]:
    """Every object under these folders (images/ and thumbs/ unless told), by name; in the
    data folder links are passed over."""
    found = []
    for folder in folders:
        found += files.list(f"{folder}/")
    return found


def _move_aside(files: storage.Storage, report: VerifyReport) -> None:
    candidates = report.orphan_files + report.stale_temp_files + report.orphan_sidecars
    if not candidates:
        return
    # A row committed since the scan (a file stored again by a retried download) wins.
    now_referenced = _referenced_among(report.orphan_files)
    report.orphan_files = [path for path in report.orphan_files if path not in now_referenced]
    report.orphan_sidecars = [path for path in report.orphan_sidecars if not _sidecar_has_row(path)]
    archive = f"{ORPHANS_FOLDER}/{utcnow().strftime('%Y%m%dT%H%M%SZ')}"
    # An object store has no folder to move into: an unreferenced object older than the grace
    # period is an upload whose row never committed, and is deleted.
    report.archive_dir = archive if files.is_local else None
    vanished = set()
    for relative in report.orphan_files + report.stale_temp_files + report.orphan_sidecars:
        if not files.set_aside(relative, archive):  # gone meanwhile: nothing left to move
            vanished.add(relative)
            continue
        report.moved.append(relative)
    report.orphan_files = [path for path in report.orphan_files if path not in vanished]
    report.stale_temp_files = [path for path in report.stale_temp_files if path not in vanished]
    report.orphan_sidecars = [path for path in report.orphan_sidecars if path not in vanished]


def _sidecar_has_row(relative: str) -> bool:
    """Whether a stored image row now accounts for this sidecar (committed since the scan)."""
    parts = relative.split("/")
    match = storage.SIDECAR_NAME.fullmatch(parts[-1])
    if len(parts) != 4 or match is None:
        return False
    found = db.session.scalar(
        select(Image.id)
        .where(
            Image.sha256 == parts[2],
            Image.job_id == int(match["job_id"]),
            Image.index == int(match["index"]),
            Image.status == ImageStatus.STORED,
        )
        .execution_options(**scoping.ALL_OWNERS)
    )
    db.session.commit()
    return found is not None


def _regenerate_thumbnails(
    files: storage.Storage, rows: list[_StoredRow], intact: dict[int, str], report: VerifyReport
) -> None:
    """Write each missing thumbnail (either size) of a row whose original is intact; rows
    sharing files share the work. Existing thumbnails are never rewritten."""
    missing = set(report.missing_thumbnails)
    for row in rows:
        if row.id not in missing or row.id not in intact:
            continue
        wanted = [
            (name, size) for name, size in row.thumbnails() if _existing_file(files, name) is None
        ]
        try:
            if wanted:
                thumbnails = storage.make_thumbnails(files.read(intact[row.id]))
                by_size = {
                    storage.THUMBNAIL_SIZE: thumbnails.small,
                    storage.THUMBNAIL_LARGE_SIZE: thumbnails.large,
                }
                for name, size in wanted:
                    files.write(name, by_size[size])
        except THUMBNAIL_ERRORS as error:
            report.thumbnail_errors[row.id] = str(error)
            continue
        report.regenerated_thumbnails.append(row.id)


# --- rebuild ----------------------------------------------------------------------------------


@dataclass
class RebuildReport:
    """What `rebuild` recreated, and which files it could not use (paths relative to data)."""

    created_jobs: list[int] = field(default_factory=list)
    created_images: dict[str, int] = field(default_factory=dict)  # file name -> job id
    regenerated_thumbnails: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # no sidecar, no Atelier metadata inside
    rejected: dict[str, str] = field(default_factory=dict)  # file name -> why it was not used
    used_inputs: list[str] = field(default_factory=list)  # files linked again as edit inputs
    missing_inputs: list[str] = field(default_factory=list)  # named by metadata, not on disk
    sidecars_written: int = 0  # for the rebuilt rows

    def lines(self) -> list[str]:
        lines = []
        for job_id in self.created_jobs:
            names = [name for name, owner in self.created_images.items() if owner == job_id]
            lines.append(f"Recreated job {job_id} with {len(names)} image(s): {', '.join(names)}.")
        for name in self.regenerated_thumbnails:
            lines.append(f"Regenerated thumbnail {name}.")
        for name in self.used_inputs:
            lines.append(f"Linked again as an edit's input: {name}.")
        for what in self.missing_inputs:
            lines.append(f"Input not found (its job is rebuilt without it): {what}.")
        for name in self.unknown:
            lines.append(f"Unknown (no Atelier metadata, left as is): {name}.")
        for name, reason in self.rejected.items():
            lines.append(f"Not used: {name}: {reason}")
        if not self.created_jobs:
            lines.append("Nothing to rebuild.")
        return lines


@dataclass(frozen=True)
class _Candidate:
    """One unreferenced image file with usable metadata, ready to become a row."""

    file_name: str
    thumbnail_name: str
    thumbnail_large_name: str
    sha256: str
    bytes: int
    width: int
    height: int
    content_type: str
    job_id: int | None  # None when the metadata names no usable id
    index: int
    prompt: str
    revised_prompt: str | None
    provider: str
    model: str
    size: str
    n: int
    options: dict[str, Any]
    created_at: datetime
    placeholder: str | None = None  # filled in when the thumbnails are made
    inputs: tuple[tuple[str, str], ...] = ()  # an edit's (role, sha256), in order
    credentials: dict[str, Any] = field(default_factory=dict)  # the Content Credentials columns


def rebuild(files: storage.Storage) -> RebuildReport:
    """Recreate jobs and image rows from the metadata inside unreferenced stored PNGs.

    A file's job is recreated under its recorded id when that id is free; when the id belongs to
    a job with a different prompt, a new job is created. A job that exists with the same prompt
    is left alone (its unreferenced files are listed as not used). Files already referenced are
    skipped, so a second run creates nothing.
    """
    report = RebuildReport()
    referenced = set(
        db.session.scalars(
            select(Image.file_name)
            .where(Image.file_name.is_not(None))
            .execution_options(**scoping.ALL_OWNERS)
        )
    )
    referenced |= set(
        db.session.scalars(select(JobInput.file_name).execution_options(**scoping.ALL_OWNERS))
    )
    db.session.commit()

    groups: dict[tuple[int | None, str, datetime], list[_Candidate]] = {}
    for item in _scan(files, ("images",)):
        relative = item.name
        if relative.rsplit("/", 1)[-1].startswith(storage.TEMP_PREFIX):
            continue
        if relative in referenced:
            continue
        for candidate in _read_candidates(files, relative, report):
            key = (candidate.job_id, candidate.prompt, candidate.created_at)
            groups.setdefault(key, []).append(candidate)

    ids = [job_id for job_id, _, _ in groups if job_id is not None]
    existing = dict(
        db.session.execute(
            select(Job.id, Job.prompt)
            .where(Job.id.in_(ids))
            .execution_options(**scoping.ALL_OWNERS)
        ).all()
    )
    db.session.commit()

    for key in sorted(groups, key=lambda k: (k[2], k[0] or 0, k[1])):
        job_id, prompt, _ = key
        group = _one_file_per_index(groups[key], report)
        if job_id in existing and existing[job_id] == prompt:
            _reject_all(group, job_id, report)
            continue
        group = [made for c in group if (made := _with_thumbnails(files, c, report))]
        if group:
            _recreate_job(group, _input_rows(files, group[0], report), report)
    if report.created_jobs:
        # The rebuilt rows' sidecars (a job that took a new id, or one read from a PNG's chunk,
        # has none yet); written after the commit, as verify --repair would.
        written = repair_module.RepairReport()
        repair_module.sync_sidecars(files, written)
        report.sidecars_written = written.sidecars_written
    # Input files (no metadata of their own) that a rebuilt job uses again are not unknown.
    used = set(report.used_inputs)
    report.unknown = [name for name in report.unknown if name not in used]
    return report


def _input_rows(
    files: storage.Storage, candidate: _Candidate, report: RebuildReport
) -> list[JobInput]:
    """The rebuilt job's inputs: those its metadata names whose files are in the data folder
    (thumbnails made where missing), in order. File work only; rows not yet added."""
    rows = []
    for position, (role, digest) in enumerate(candidate.inputs):
        for extension in storage.CONTENT_TYPES:
            name = f"images/{digest[:2]}/{digest}.{extension}"
            if files.exists(name):
                break
        else:
            report.missing_inputs.append(f"{role} {digest} of {candidate.file_name}")
            continue
        try:
            prepared = storage.prepare_image(files.read(name))
        except storage.ImageRejected as error:
            report.rejected[name] = str(error)
            continue
        if prepared.sha256 != digest:
            report.rejected[name] = f"its content no longer hashes to {digest}."
            continue
        stored = files.store_prepared(prepared)  # the file is there; writes missing thumbnails
        rows.append(JobInput(position=position, role=role, **storage.file_columns(stored)))
        report.used_inputs.append(name)
    return rows


def _read_candidates(
    files: storage.Storage, relative: str, report: RebuildReport
) -> list[_Candidate]:
    """Check one file and read what describes it: its sidecars (one candidate each), else the
    chunk an earlier version spliced into it. Unusable ones are recorded with the reason."""
    data = files.read(relative)
    named = storage.ORIGINAL_NAME.fullmatch(relative)
    sources: list[tuple[str, dict[str, Any]]] = []  # (where it was read, metadata)
    sidecars = files.sidecars(named["sha"]) if named is not None else []
    for name, _, _ in sidecars:
        try:
            sources.append((name, files.read_sidecar(name)))
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            report.rejected[name] = str(error)
    if not sidecars:
        try:
            metadata = pngmeta.read(data)
        except ValueError as error:
            report.rejected[relative] = str(error)
            return []
        if metadata is None:
            report.unknown.append(relative)
            return []
        sources.append((relative, metadata))
    if not sources:
        return []
    try:
        image_format, width, height = storage.inspect_image(data)
    except storage.ImageRejected as error:
        report.rejected[relative] = str(error)
        return []
    stored = storage.described(
        hashlib.sha256(data).hexdigest(), len(data), image_format, width, height
    )
    digest = stored.sha256
    if relative != stored.file_name:
        report.rejected[relative] = (
            f"its content hashes to {digest}, so it is not where the content-addressed "
            "layout puts it (damaged or renamed)."
        )
        return []
    credentials = storage.credential_columns(data, stored.content_type)
    candidates = []
    for where, metadata in sources:
        try:
            fields = _parse_metadata(metadata)
        except ValueError as error:
            report.rejected[where] = str(error)
            continue
        candidates.append(
            _Candidate(**storage.file_columns(stored), credentials=credentials, **fields)
        )
    return candidates


def _parse_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The job fields from embedded metadata, or ValueError saying what is wrong."""
    if metadata.get("atelier") != METADATA_VERSION:
        raise ValueError(f"unsupported metadata version {metadata.get('atelier')!r}.")

    def required(name: str, kind: type) -> Any:
        value = metadata.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"the metadata has no valid {name!r}.")
        return value

    job_id = metadata.get("job_id")
    revised_prompt = metadata.get("revised_prompt")
    options = metadata.get("options") or {}
    if not isinstance(options, dict):
        raise ValueError("the metadata's 'options' is not an object.")
    try:
        created_at = datetime.fromisoformat(required("created_at", str))
    except ValueError:
        raise ValueError("the metadata's 'created_at' is not an ISO 8601 time.") from None
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    usable_id = isinstance(job_id, int) and not isinstance(job_id, bool) and job_id > 0
    inputs = metadata.get("inputs") or []
    if not isinstance(inputs, list) or not all(
        isinstance(item, dict)
        and item.get("role") in ("image", "mask")
        and isinstance(item.get("sha256"), str)
        and len(item["sha256"]) == 64
        and all(char in "0123456789abcdef" for char in item["sha256"])
        for item in inputs
    ):
        raise ValueError("the metadata's 'inputs' is not a list of roles and SHA-256 digests.")
    return {
        "job_id": job_id if usable_id else None,
        "index": required("index", int),
        "prompt": required("prompt", str),
        "revised_prompt": revised_prompt if isinstance(revised_prompt, str) else None,
        "provider": required("provider", str),
        "model": required("model", str),
        "size": required("size", str),
        "n": required("n", int),
        "options": options,
        "created_at": created_at.astimezone(UTC),
        "inputs": tuple((item["role"], item["sha256"]) for item in inputs),
    }


def _one_file_per_index(group: list[_Candidate], report: RebuildReport) -> list[_Candidate]:
    kept: dict[int, _Candidate] = {}
    for candidate in sorted(group, key=lambda c: (c.index, c.file_name)):
        if candidate.index in kept:
            report.rejected[candidate.file_name] = (
                f"{kept[candidate.index].file_name} already holds index {candidate.index} "
                "of the same job."
            )
        else:
            kept[candidate.index] = candidate
    return list(kept.values())


def _reject_all(group: list[_Candidate], job_id: int | None, report: RebuildReport) -> None:
    for candidate in group:
        report.rejected[candidate.file_name] = (
            f"job {job_id} exists with this prompt, but none of its rows references this file."
        )


def _with_thumbnails(
    files: storage.Storage, candidate: _Candidate, report: RebuildReport
) -> _Candidate | None:
    """Write missing thumbnails (files are durable before the row that names them) and return
    the candidate with its placeholder colour; None when the image cannot be decoded."""
    try:
        thumbnails = storage.make_thumbnails(files.read(candidate.file_name))
        for name, data in (
            (candidate.thumbnail_name, thumbnails.small),
            (candidate.thumbnail_large_name, thumbnails.large),
        ):
            if not files.exists(name):
                files.write(name, data, "image/webp")
                report.regenerated_thumbnails.append(name)
    except THUMBNAIL_ERRORS as error:
        report.rejected[candidate.file_name] = f"no thumbnail could be made ({error})."
        return None
    return dataclasses.replace(candidate, placeholder=thumbnails.placeholder)


def _recreate_job(group: list[_Candidate], inputs: list[JobInput], report: RebuildReport) -> None:
    """One short transaction: the job (under its recorded id when free) and its image rows."""
    first = group[0]
    with write_transaction() as session:
        # Checked again under the write lock: another run may have recreated these images.
        # (The same file as another job's image is fine: two jobs may share identical bytes.)
        taken = {
            tuple(row)
            for row in session.execute(
                select(Image.file_name, Image.index)
                .join(Job, Job.id == Image.job_id)
                .where(
                    Image.file_name.in_([c.file_name for c in group]),
                    Job.prompt == first.prompt,
                    Job.created_at == first.created_at,
                )
                .execution_options(**scoping.ALL_OWNERS)
            )
        }
        group = [c for c in group if (c.file_name, c.index) not in taken]
        holder = (
            session.get(Job, first.job_id, execution_options=scoping.ALL_OWNERS)
            if first.job_id is not None
            else None
        )
        if holder is not None and holder.prompt == first.prompt:
            _reject_all(group, first.job_id, report)
            return
        if not group:
            return
        keep_id = first.job_id is not None and holder is None
        job = _job_row(first, job_id=first.job_id if keep_id else None)
        job.images = [_image_row(candidate) for candidate in group]
        job.inputs = inputs
        job.kind = JobKind.EDIT if inputs else JobKind.GENERATE
        job.revised_prompts = " ".join(c.revised_prompt for c in group if c.revised_prompt) or None
        session.add(job)
        session.flush()
        search.index_job(session, job.id, job.prompt, job.revised_prompts)
        if keep_id:
            _advance_id_sequence(session)
        report.created_jobs.append(job.id)
        for candidate in group:
            report.created_images[candidate.file_name] = job.id


def _job_row(candidate: _Candidate, *, job_id: int | None) -> Job:
    created_at = candidate.created_at
    return Job(
        id=job_id,
        status=JobStatus.SUCCEEDED,
        **{name: getattr(candidate, name) for name in JOB_FIELDS},
        created_at=created_at,
        finished_at=created_at,
        deadline_at=created_at,
        next_attempt_at=created_at,
    )


def _image_row(candidate: _Candidate) -> Image:
    return Image(
        index=candidate.index,
        status=ImageStatus.STORED,
        **storage.file_columns(candidate),
        placeholder=candidate.placeholder,
        revised_prompt=candidate.revised_prompt,
        created_at=candidate.created_at,
        **candidate.credentials,
    )


def _advance_id_sequence(session: Any) -> None:
    """PostgreSQL's id sequence does not see explicit ids; move it past them (SQLite needs
    nothing: a new row takes max(id) + 1)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT setval(pg_get_serial_sequence('jobs', 'id'), (SELECT max(id) FROM jobs))")
        )
