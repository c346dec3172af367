"""Where a request's uploaded file parts are kept while it is handled: in memory up to a size,
then in an unnamed temporary file in a folder the request class names.

Owns `SpoolingRequest`, the Flask request class both the app (`AtelierRequest`: the data
folder's `.uploads/`) and the emulator (beside its state file) build on, so people's images
never land in the system's temporary folder. The spooled files are unnamed (unlinked at once,
0600 under the private umask): they vanish with the request, or with the process if it dies.
"""

from __future__ import annotations

from pathlib import Path
from tempfile import SpooledTemporaryFile
from typing import IO

from flask import Request


class SpoolingRequest(Request):
    """A request whose file parts stay in memory up to `spool_memory_bytes`, then spool to a
    file in `spool_folder()` (None: Python's temporary folder)."""

    spool_memory_bytes = 1024 * 1024

    def spool_folder(self) -> Path | None:
        return None

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        stream = SpooledTemporaryFile(  # noqa: SIM115
            max_size=self.spool_memory_bytes, dir=self.spool_folder()
        )
        # Closed with the request even when parsing stopped half-way (413): `files` is then
        # never set, so werkzeug's own close() would not see it.
        self.__dict__.setdefault("_spooled_uploads", []).append(stream)
        return stream  # type: ignore[return-value]

    def close(self) -> None:
        super().close()
        for stream in self.__dict__.pop("_spooled_uploads", []):
            stream.close()
