"""ZIP archives written while they are sent: never built in memory or on disk.

`zipfile.ZipFile` writes into `_Sink`, a write-through buffer that only counts positions (it
cannot seek, so every member gets a data descriptor); after each piece of a member is written
the bytes waiting in the sink are handed to the response. Memory use is one read chunk plus one
member header, whatever the size of the archive.

An archive holds the originals (the provider's exact bytes) and `manifest.json`; asked for, it
also holds a copy of each image with Atelier's metadata embedded under `with-prompt/`, made as
that member is written (app.pngmeta.embed_copy). Such a copy is a modified file: its Content
Credentials no longer validate, and its name says so.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from app import pngmeta, storage
from app.models import Image

READ_CHUNK = 64 * 1024
MANIFEST_NAME = "manifest.json"
WITH_PROMPT_FOLDER = "with-prompt"


@dataclass(frozen=True)
class Member:
    """One file in the archive: from a path on disk, or from bytes made for the archive."""

    name: str
    modified: datetime
    path: Path | None = None
    data: bytes | None = None
    # Bytes made when the member is written (a copy with metadata): one in memory at a time.
    make: Callable[[], bytes] | None = None
    # Images are already compressed; deflating them again costs time and saves nothing.
    compress_type: int = zipfile.ZIP_STORED

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        if self.make is not None:
            yield self.make()
            return
        assert self.path is not None
        with self.path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk


class _Sink:
    """A file-like object that keeps what was written until `drain` takes it."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._position = 0

    def write(self, data: bytes) -> int:
        if data:
            self._pending.append(bytes(data))
            self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        if self._pending:
            chunk = b"".join(self._pending)
            self._pending.clear()
            yield chunk


def stream_zip(members: Iterable[Member]) -> Iterator[bytes]:
    """The bytes of a ZIP archive holding `members`, yielded as each piece is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:  # type: ignore[arg-type]
        for member in members:
            if member.make is not None:
                try:  # made before its header is written: a damaged file leaves no torn member
                    member = Member(member.name, member.modified, data=member.make())
                except (ValueError, FileNotFoundError):  # damaged, or removed meanwhile
                    continue
            info = zipfile.ZipInfo(member.name, date_time=_zip_time(member.modified))
            info.compress_type = member.compress_type
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as destination:
                for chunk in member.chunks():
                    destination.write(chunk)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()


def image_file_name(image: Image) -> str:
    """What a saved original is called: atelier-<job>-<number in the job>.<ext>."""
    return f"atelier-{image.job_id}-{image.index + 1}{Path(image.file_name or '').suffix}"


def with_prompt_file_name(image: Image) -> str:
    """What a copy with Atelier's metadata is called: labelled as a modified copy."""
    original = image_file_name(image)
    stem, dot, extension = original.rpartition(".")
    return f"{stem}-with-prompt{dot}{extension}"


def input_file_name(sha256: str, stored_name: str) -> str:
    """Where an edit's input is in an archive: `inputs/<sha256>.<ext>` (one copy however many
    images used it)."""
    return f"inputs/{sha256}{Path(stored_name).suffix}"


def image_archive(
    images: Sequence[Image], files: storage.Storage, *, with_prompt: bool = False
) -> Iterator[bytes]:
    """A streamed archive of these images' originals plus `manifest.json` describing each;
    `with_prompt` adds a copy of each with Atelier's metadata embedded, under `with-prompt/`.

    An edited image's inputs (its images and mask, as they were sent) are in the archive too,
    under `inputs/`, and its manifest entry lists them by role, SHA-256 and file; an input that
    is itself one of the archived images is not stored twice, its entry names that file.

    Everything is read from the rows here, before the first byte is sent, so the stream that
    follows reads stored objects only and needs no database session. Images whose file is gone
    are left out (of the manifest too), as are inputs whose file is gone (their entry says
    `file: null`).
    """
    members: list[Member] = []
    manifest: list[dict[str, Any]] = []
    # Archive names by SHA-256, so an input and an output with the same bytes are one file.
    archived: dict[str, str] = {}
    present = [
        image for image in images if image.file_name is not None and files.exists(image.file_name)
    ]
    for image in present:
        archived.setdefault(image.sha256 or "", image_file_name(image))
    for image in present:
        assert image.file_name is not None
        file_name = image.file_name
        name = image_file_name(image)
        job = image.job
        members.append(Member(name=name, modified=image.created_at, **_source(files, file_name)))
        copy_name = None
        if with_prompt:
            copy_name = f"{WITH_PROMPT_FOLDER}/{with_prompt_file_name(image)}"
            members.append(
                Member(
                    name=copy_name,
                    modified=image.created_at,
                    make=_copy_maker(files, file_name, pngmeta.row_metadata(job, image)),
                )
            )
        inputs = []
        for item in job.inputs:
            archive_name = archived.get(item.sha256)
            if archive_name is None and files.exists(item.file_name):
                archive_name = input_file_name(item.sha256, item.file_name)
                archived[item.sha256] = archive_name
                members.append(
                    Member(
                        name=archive_name,
                        modified=job.created_at,
                        **_source(files, item.file_name),
                    )
                )
            inputs.append(
                {
                    "role": item.role,
                    "sha256": item.sha256,
                    "file": archive_name,
                    "content_type": item.content_type,
                    "width": item.width,
                    "height": item.height,
                    "source_image_id": item.source_image_id,
                }
            )
        manifest.append(
            {
                "file": name,
                "image_id": image.id,
                "job_id": job.id,
                "index": image.index,
                "prompt": job.prompt,
                "revised_prompt": image.revised_prompt,
                "provider": job.provider,
                "model": job.model,
                "size": job.size,
                "options": job.options or {},
                "created_at": image.created_at.isoformat().replace("+00:00", "Z"),
                "sha256": image.sha256,
                "kind": job.kind,
                "inputs": inputs,
                **({"with_prompt_file": copy_name} if copy_name else {}),
            }
        )
    text = json.dumps({"files": manifest}, indent=2, ensure_ascii=False) + "\n"
    newest = max((image.created_at for image in images), default=datetime(1980, 1, 1))
    members.append(
        Member(
            name=MANIFEST_NAME,
            modified=newest,
            data=text.encode(),
            compress_type=zipfile.ZIP_DEFLATED,
        )
    )
    return stream_zip(members)


def _copy_maker(files: storage.Storage, name: str, metadata: dict[str, Any]) -> Callable[[], bytes]:
    return lambda: pngmeta.embed_copy(files.read(name), metadata)


def _source(files: storage.Storage, name: str) -> dict[str, Any]:
    """Where a member's bytes come from: the file, read in chunks (the data folder), or the
    object, read when the member is written (one in memory at a time)."""
    path = files.local_path(name)
    if path is not None:
        return {"path": path}
    return {"make": lambda: files.read(name)}


def _zip_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    # ZIP timestamps start in 1980 and have no time zone; Atelier's are UTC.
    clamped = max(moment.replace(tzinfo=None), datetime(1980, 1, 1))
    return (
        clamped.year,
        clamped.month,
        clamped.day,
        clamped.hour,
        clamped.minute,
        clamped.second,
    )
