"""What this process moved to and from image storage, for /metrics (app.metrics).

Process-wide counters, not tied to an app: the storage backends (app.blobstore) count from
worker threads, request threads and CLI commands alike. `count_bytes` records the bytes of each
completed upload ("written") or download ("read"); `count_error` records each call the storage
service failed (unreachable, timed out, refused, or a check that did not match), by operation
("put", "get", "stat", "delete", "list", "check", "sign"). Like app.metrics' other counters they
count since this process started; with several processes, scrape each one and sum.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

DIRECTIONS = ("read", "written")


@dataclass
class StorageStats:
    """Thread-safe counters of bytes moved and failed calls, by backend kind (file, az, s3)."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    bytes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def count_bytes(self, backend: str, direction: str, count: int) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
        with self._lock:
            self.bytes[(backend, direction)] += count

    def count_error(self, backend: str, operation: str) -> None:
        with self._lock:
            self.errors[(backend, operation)] += 1

    def snapshot(self) -> dict[str, dict[tuple[str, str], int]]:
        """{"bytes": {(backend, direction): n}, "errors": {(backend, operation): n}}."""
        with self._lock:
            return {"bytes": dict(self.bytes), "errors": dict(self.errors)}


STATS = StorageStats()


def count_bytes(backend: str, direction: str, count: int) -> None:
    STATS.count_bytes(backend, direction, count)


def count_error(backend: str, operation: str) -> None:
    STATS.count_error(backend, operation)


def snapshot() -> dict[str, dict[tuple[str, str], int]]:
    return STATS.snapshot()
