"""Sleep until a file is written, or until woken: Linux's inotify, through ctypes.

The job cards' watch (app.page_cache.VersionWatch) waits for SQLite's data version file to
change. Looking at it 40 times a second cost about 0.15 ms of CPU per look on a small VM (each
timed wake-up of a thread), 0.6 % of a core per process while anyone waits; told by the kernel,
the thread sleeps until a write. Python's standard library has no inotify and the libraries that
wrap it do much more than this (watchdog) or are unmaintained, so these few calls are written
here. Where there is no inotify (macOS, a libc without it, the per-user instance limit reached)
`FileWatch.open` returns None and the caller keeps looking on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import sys

log = logging.getLogger(__name__)

# <sys/inotify.h>
_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_IGNORED = 0x8000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_DELETE_SELF | _IN_MOVE_SELF
_EVENT_HEADER = 16  # int wd; uint32 mask, cookie, len; then len bytes of name


class FileWatch:
    """One watched file and a wake-up pipe; `wait` returns on a write to the file, a `wake`,
    or the timeout. Not thread-safe but for `wake`, which any thread may call."""

    def __init__(self, inotify_fd: int, wake_read: int, wake_write: int) -> None:
        self._fd = inotify_fd
        self._wake_read = wake_read
        self._wake_write = wake_write
        self.lost = False  # the file was deleted or moved: this watch sees no more writes

    @classmethod
    def open(cls, path: str) -> FileWatch | None:
        """A watch on `path` (which must exist), or None where inotify is not to be had."""
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            init, add = libc.inotify_init1, libc.inotify_add_watch
        except (OSError, AttributeError):
            return None
        add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        descriptor = init(_IN_NONBLOCK | _IN_CLOEXEC)
        if descriptor < 0:
            log.info("no inotify (%s): looking at %s", os.strerror(ctypes.get_errno()), path)
            return None
        if add(descriptor, os.fsencode(path), _MASK) < 0:
            log.info("cannot watch %s (%s)", path, os.strerror(ctypes.get_errno()))
            os.close(descriptor)
            return None
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        return cls(descriptor, wake_read, wake_write)

    def wait(self, timeout: float) -> bool:
        """Whether the file was written (or the watch woken) within `timeout` seconds."""
        ready, _, _ = select.select([self._fd, self._wake_read], [], [], max(0.0, timeout))
        if self._wake_read in ready:
            _drain(self._wake_read)
        if self._fd in ready:
            for mask in _masks(_drain(self._fd)):
                if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED):
                    self.lost = True
        return bool(ready)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe (BlockingIOError) is awake already
            os.write(self._wake_write, b"\0")

    def close(self) -> None:
        for descriptor in (self._fd, self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _drain(descriptor: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(descriptor, 4096)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def _masks(events: bytes) -> list[int]:
    masks, offset = [], 0
    while offset + _EVENT_HEADER <= len(events):
        mask = int.from_bytes(events[offset + 4 : offset + 8], sys.byteorder)
        length = int.from_bytes(events[offset + 12 : offset + 16], sys.byteorder)
        masks.append(mask)
        offset += _EVENT_HEADER + length
    return masks
