"""Repairs a library stored by earlier versions: originals back to the provider's bytes, and a
sidecar for every image row (`flask atelier repair-originals`, also run by `verify --repair`).

Earlier versions spliced an `atelier` iTXt chunk into every stored PNG, so the stored file was
not the provider's and its sha256 not theirs. The chunk was spliced in whole, every other chunk
copied byte for byte, so cutting it out (`pngmeta.strip`) gives back the provider's bytes
exactly. Such a file then moves to its new content address, and every row that names it follows.

One file at a time, in an order that a crash at any point cannot hurt (run it again, and it
finishes the job; nothing is lost, nothing is duplicated):

    1. write the stripped original at its new address, its thumbnails under the new names, and
       the sidecar of every image row that names the old file (each write atomic and durable;
       content addressing makes each one the same file on a rerun);
    2. one transaction: every images and job_inputs row naming the old file (of any owner) now
       names the new one: sha256, bytes, file_name, both thumbnail names;
    3. remove the old thumbnails, then the old original, each only once no row names it.

A rerun after 1 repeats 1 and goes on; after 2 the old file is named by no row while its new
address is, so only 3 is left to do; a file no row names whose new address is not in use either
is an orphan, left for `verify` (which reports it) and `rebuild` (which can read its chunk).
A file whose content no longer hashes to its name is damaged: left alone, `verify` reports it.

Share links name image ids, and pages build file URLs from the rows, so both follow the move.
Two owners' identical images had different files (the chunk named each one's job); they end as
one file with a sidecar per row.

Then `sync_sidecars` writes the sidecar of every stored image row that has none (a JPEG or WebP
from an earlier version never had its parameters anywhere but the database) or a stale one.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app import pngmeta, storage
from app.auth import scoping
from app.crashpoints import crash_point
from app.models import Image, ImageStatus, Job, JobInput, db, write_transaction

PROGRESS_EVERY = 100
ROWS_PER_BATCH = 500
PNG_TYPE = "image/png"

Progress = Callable[[str], None]


@dataclass
class RepairReport:
    """What `repair_originals` found and did (file names relative to the data folder)."""

    found: int = 0  # stored PNGs carrying the chunk
    repaired: dict[str, str] = field(default_factory=dict)  # old name -> new name
    image_rows: int = 0  # images rows moved to a new file
    input_rows: int = 0  # job_inputs rows moved to a new file
    finished: list[str] = field(default_factory=list)  # old files an interrupted run left
    left_alone: dict[str, str] = field(default_factory=dict)  # old name -> why
    sidecars: set[str] = field(default_factory=set)  # the sidecars written (or rewritten)

    @property
    def sidecars_written(self) -> int:
        return len(self.sidecars)

    def lines(self) -> list[str]:
        lines = []
        for old, new in self.repaired.items():
            lines.append(f"Original restored: {old} -> {new}.")
        for old in self.finished:
            lines.append(f"Finished an interrupted repair: removed {old}.")
        for old, why in self.left_alone.items():
            lines.append(f"Left alone: {old}: {why}")
        if self.repaired or self.finished:
            lines.append(
                f"Restored {len(self.repaired)} original(s) to the provider's bytes "
                f"({self.image_rows} image row(s), {self.input_rows} edit input row(s) updated)."
            )
        if self.sidecars_written:
            lines.append(f"Wrote {self.sidecars_written} sidecar(s).")
        if not (self.repaired or self.finished or self.left_alone or self.sidecars_written):
            lines.append("Every original is the provider's, and every image has its sidecar.")
        return lines


def repair_originals(
    files: storage.Storage, *, progress: Progress | None = None, every: int = PROGRESS_EVERY
) -> RepairReport:
    """Restore every stored PNG that carries the `atelier` chunk, then sync the sidecars."""
    report = RepairReport()
    spliced = find_spliced(files)
    report.found = len(spliced)
    for number, relative in enumerate(spliced, 1):
        _repair_one(files, relative, report)
        if progress is not None and (number % every == 0 or number == len(spliced)):
            progress(f"Repaired {number} of {len(spliced)} originals with embedded metadata.")
    sync_sidecars(files, report, progress=progress, every=every)
    return report


def find_spliced(files: storage.Storage) -> list[str]:
    """The PNGs under images/ that carry the `atelier` chunk (only their first chunks are read:
    the chunk always sat right after IHDR, before the image data)."""
    found = []
    for item in files.list("images/"):
        base = item.name.rsplit("/", 1)[-1]
        if item.name.count("/") != 2 or not base.endswith(".png"):
            continue
        if base.startswith(storage.TEMP_PREFIX):
            continue
        path = files.local_path(item.name)
        if path is not None:
            with path.open("rb") as handle:
                carries = pngmeta.file_carries_metadata(handle)
        else:  # an object store: the object is read whole (there are few such old PNGs)
            carries = pngmeta.file_carries_metadata(io.BytesIO(files.read(item.name)))
        if carries:
            found.append(item.name)
    return found


def _step(name: str) -> None:
    """A point between two steps of a file's repair (tests crash here: app.crashpoints)."""
    crash_point(f"repair_{name}")


def _repair_one(files: storage.Storage, relative: str, report: RepairReport) -> None:
    data = files.read(relative)
    named = storage.ORIGINAL_NAME.fullmatch(relative)
    old_sha = hashlib.sha256(data).hexdigest()
    if named is None or named["sha"] != old_sha:
        report.left_alone[relative] = (
            "its content does not hash to its name (damaged or renamed); verify reports it."
        )
        return
    try:
        original = pngmeta.strip(data)
    except ValueError as error:
        report.left_alone[relative] = f"{error}"
        return
    if original is None:  # changed since it was found
        return
    new_sha = hashlib.sha256(original).hexdigest()
    new_name = f"images/{new_sha[:2]}/{new_sha}.png"
    old_thumbnails = storage.thumbnail_names(old_sha)
    new_thumbnails = storage.thumbnail_names(new_sha)

    sidecars, input_rows = _rows_naming(relative, old_sha, new_sha)
    if not sidecars and not input_rows:
        if storage.files_in_use([new_name]):
            # An earlier run committed the move and stopped before removing the old file.
            _remove_old(files, relative, old_thumbnails)
            report.finished.append(relative)
        else:
            report.left_alone[relative] = (
                "no row names it (an orphan: verify reports it, rebuild can still read it)."
            )
        db.session.commit()
        return
    db.session.commit()

    # 1. The new files, then the sidecars, all durable before any row names them.
    found = files.stat(new_name)
    if found is None or found.size != len(original):
        files.write(new_name, original, PNG_TYPE)
    _write_thumbnails(files, original, old_thumbnails, new_thumbnails)
    for job_id, index, metadata in sidecars:
        if files.write_sidecar(new_sha, job_id, index, metadata):
            report.sidecars.add(storage.sidecar_name(new_sha, job_id, index))
    _step("written")

    # 2. Every row that names the old file, in one transaction.
    values: dict[str, Any] = {
        "sha256": new_sha,
        "bytes": len(original),
        "file_name": new_name,
        "thumbnail_name": new_thumbnails[0],
        "thumbnail_large_name": new_thumbnails[1],
    }
    credentials = storage.credential_columns(original, PNG_TYPE)
    options = {**scoping.ALL_OWNERS, "synchronize_session": False}
    with write_transaction() as session:
        moved_images = session.execute(
            update(Image)
            .where(Image.file_name == relative, Image.sha256 == old_sha)
            .values(**values, **credentials)
            .execution_options(**options)
        ).rowcount
        moved_inputs = session.execute(
            update(JobInput)
            .where(JobInput.file_name == relative, JobInput.sha256 == old_sha)
            .values(**values)
            .execution_options(**options)
        ).rowcount
    _step("committed")

    # 3. The old files, once no row names them.
    _remove_old(files, relative, old_thumbnails)
    report.repaired[relative] = new_name
    report.image_rows += moved_images
    report.input_rows += moved_inputs


def _rows_naming(
    relative: str, old_sha: str, new_sha: str
) -> tuple[list[tuple[int, int, dict[str, Any]]], int]:
    """The sidecars (job id, index, metadata) of the image rows that name the old file, as they
    will be once it has moved, and how many job_inputs rows name it. Plain values only."""
    images = db.session.scalars(
        select(Image)
        .where(Image.file_name == relative, Image.sha256 == old_sha)
        .options(selectinload(Image.job).selectinload(Job.inputs))
        .execution_options(**scoping.ALL_OWNERS)
    ).all()
    sidecars = []
    for image in images:
        metadata = pngmeta.row_metadata(image.job, image)
        for item in metadata.get("inputs", []):
            if item["sha256"] == old_sha:  # an edit of this very image (an input of itself)
                item["sha256"] = new_sha
        sidecars.append((image.job_id, image.index, metadata))
    inputs = db.session.scalars(
        select(JobInput.id)
        .where(JobInput.file_name == relative, JobInput.sha256 == old_sha)
        .execution_options(**scoping.ALL_OWNERS)
    ).all()
    return sidecars, len(inputs)


def _write_thumbnails(
    files: storage.Storage, original: bytes, old: tuple[str, str], new: tuple[str, str]
) -> None:
    """The new thumbnails: the old ones' bytes (the pixels did not change), made again when an
    old one is missing."""
    missing = [name for name in new if not files.exists(name)]
    if not missing:
        return
    if all(files.exists(name) for name in old):
        by_new = {n: files.read(o) for o, n in zip(old, new, strict=True)}
    else:
        thumbnails = storage.make_thumbnails(original)
        by_new = dict(zip(new, (thumbnails.small, thumbnails.large), strict=True))
    for name in missing:
        files.write(name, by_new[name])


def _remove_old(files: storage.Storage, relative: str, old_thumbnails: tuple[str, str]) -> None:
    # Thumbnails first: a crash in between leaves the old original, which a rerun finds.
    files.remove_unused_files(old_thumbnails)
    _step("thumbnails_removed")
    files.remove_unused_files([relative])


def sync_sidecars(
    files: storage.Storage,
    report: RepairReport,
    *,
    progress: Progress | None = None,
    every: int = PROGRESS_EVERY,
) -> None:
    """Write the sidecar of every stored image row that lacks it or whose sidecar says something
    else than its rows (rows are read in batches; files are written between them)."""
    last_id = 0
    checked = 0
    while True:
        batch = db.session.scalars(
            select(Image)
            .where(Image.id > last_id, Image.status == ImageStatus.STORED)
            .where(Image.sha256.is_not(None))
            .options(selectinload(Image.job).selectinload(Job.inputs))
            .order_by(Image.id)
            .limit(ROWS_PER_BATCH)
            .execution_options(**scoping.ALL_OWNERS)
        ).all()
        wanted = [
            (image.sha256, image.job_id, image.index, pngmeta.row_metadata(image.job, image))
            for image in batch
        ]
        db.session.commit()
        if not batch:
            return
        last_id = batch[-1].id
        for digest, job_id, index, metadata in wanted:
            assert digest is not None
            if files.write_sidecar(digest, job_id, index, metadata):
                report.sidecars.add(storage.sidecar_name(digest, job_id, index))
            checked += 1
            if progress is not None and checked % (every * 10) == 0:
                progress(f"Checked the sidecars of {checked} images.")
