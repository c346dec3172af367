"""Image-generation operations: what was asked, and what state each one is in now.

Owns the `Operation` record, the prompt triggers that decide how an operation ends, and the
`OperationStore` (an in-memory dict behind a lock, optionally saved to a JSON state file).

Status is computed from the time elapsed since the operation was created, never advanced by a
background thread: a poll simply asks "what would Azure say now?". That keeps the emulator
free of threads and makes a restarted emulator (same state file) answer exactly as before.

The synchronous routes store their `url` answers here too, as `synchronous` operations that
are finished when created: that way their images are served (and survive a restart) exactly
like the async ones. They are never pollable, and their prompt triggers were already acted on
by the route that made them.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

# Operations and their images expire a day after creation (`expires` = created + 86400 in the spec
# and docs examples, azure-image-apis.md §2.4).
RETENTION_SECONDS = 86_400
# Share of the latency an operation spends queued before it reports `running`.
QUEUED_SHARE = 0.2
STATE_FILE_VERSION = 1

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "deleted"})


class Outcome(Enum):
    """How an operation ends, chosen by a trigger in its prompt."""

    SUCCEED = "succeed"
    FILTER_LAST_IMAGE = "filter"
    REFUSE = "refuse"
    FAIL = "fail"
    CANCEL = "cancel"
    HANG = "hang"


# Checked in this order, so a prompt with several triggers gets the first one listed here.
PROMPT_TRIGGERS: tuple[tuple[str, Outcome], ...] = (
    ("[hang]", Outcome.HANG),
    ("[refuse]", Outcome.REFUSE),
    ("[fail]", Outcome.FAIL),
    ("[cancel]", Outcome.CANCEL),
    ("[filter]", Outcome.FILTER_LAST_IMAGE),
)


def outcome_for_prompt(prompt: str) -> Outcome:
    """The outcome a prompt asks for: the first trigger it contains, matched case-insensitively."""
    lowered = prompt.lower()
    for trigger, outcome in PROMPT_TRIGGERS:
        if trigger in lowered:
            return outcome
    return Outcome.SUCCEED


@dataclass(frozen=True)
class Operation:
    """One submitted generation. Immutable: deleting returns a copy with `deleted_at` set."""

    id: str
    created_at: float
    prompt: str
    n: int
    size: str
    response_format: str
    # Saved per operation so restarting with another latency does not rewrite old timelines.
    latency: float
    deleted_at: float | None = None
    # The fields below came with the synchronous routes; their defaults describe every
    # operation saved before them (all async DALL-E 2 operations with a day's retention).
    model: str = "dall-e-2"
    synchronous: bool = False
    retention_seconds: int = RETENTION_SECONDS

    @property
    def created(self) -> int:
        return int(self.created_at)

    @property
    def expires(self) -> int:
        return self.created + self.retention_seconds

    @property
    def finished(self) -> int:
        """Unix second the operation reached (or will reach) its terminal state."""
        return int(self.created_at + self.latency)

    @property
    def outcome(self) -> Outcome:
        if self.synchronous:
            # The route answered the prompt's trigger itself; what got stored succeeded.
            return Outcome.SUCCEED
        return outcome_for_prompt(self.prompt)

    def status_at(self, now: float) -> str:
        """The Azure status string this operation reports at time `now`."""
        if self.deleted_at is not None:
            return "deleted"
        elapsed = now - self.created_at
        if elapsed < QUEUED_SHARE * self.latency:
            return "notRunning"
        if elapsed < self.latency or self.outcome is Outcome.HANG:
            return "running"
        return {
            Outcome.SUCCEED: "succeeded",
            Outcome.FILTER_LAST_IMAGE: "succeeded",
            Outcome.REFUSE: "failed",
            Outcome.FAIL: "failed",
            Outcome.CANCEL: "canceled",
        }[self.outcome]

    def is_expired(self, now: float) -> bool:
        return now >= self.expires

    def is_filtered(self, index: int) -> bool:
        """Whether image slot `index` holds a content-filter error instead of an image."""
        return self.outcome is Outcome.FILTER_LAST_IMAGE and index == self.n - 1

    def has_image(self, index: int, now: float) -> bool:
        """Whether slot `index` has a downloadable image at time `now`."""
        return (
            0 <= index < self.n
            and not self.is_expired(now)
            and self.status_at(now) == "succeeded"
            and not self.is_filtered(index)
        )


class OperationStore:
    """All operations of one emulator, shared by its request threads.

    With a `state_file`, the file is loaded here and rewritten atomically after every create
    and delete. The signing secret is saved alongside so image URLs survive a restart too.
    One emulator per state file: two processes writing the same file would lose each other's
    operations.
    """

    def __init__(
        self, state_file: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._state_file = Path(state_file) if state_file else None
        self._lock = threading.Lock()
        self._operations: dict[str, Operation] = {}
        self._signing_secret: str | None = None
        if self._state_file is not None and self._state_file.exists():
            self._load(self._state_file)

    @property
    def signing_secret(self) -> str | None:
        """The image-URL signing secret loaded from, or to be saved in, the state file."""
        with self._lock:
            return self._signing_secret

    def set_signing_secret(self, secret: str) -> None:
        """Remember the secret in use, so the next save persists it."""
        with self._lock:
            self._signing_secret = secret

    def create(
        self,
        prompt: str,
        n: int,
        size: str,
        response_format: str,
        latency: float,
        *,
        model: str = "dall-e-2",
        synchronous: bool = False,
        retention_seconds: int = RETENTION_SECONDS,
    ) -> Operation:
        operation = Operation(
            id=str(uuid.uuid4()),
            created_at=self.clock(),
            prompt=prompt,
            n=n,
            size=size,
            response_format=response_format,
            latency=latency,
            model=model,
            synchronous=synchronous,
            retention_seconds=retention_seconds,
        )
        with self._lock:
            self._operations[operation.id] = operation
            self._save()
        return operation

    def get(self, operation_id: str) -> Operation | None:
        """The operation, or None when unknown or past its expiry."""
        with self._lock:
            operation = self._operations.get(operation_id)
        if operation is None or operation.is_expired(self.clock()):
            return None
        return operation

    def mark_deleted(self, operation_id: str) -> Operation | None:
        """Keep a tombstone so polls still answer `deleted`; None when unknown."""
        with self._lock:
            operation = self._operations.get(operation_id)
            if operation is None:
                return None
            if operation.deleted_at is None:
                operation = replace(operation, deleted_at=self.clock())
                self._operations[operation_id] = operation
                self._save()
            return operation

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != STATE_FILE_VERSION:
                raise ValueError(f"unsupported version {data.get('version')!r}")
            operations = [Operation(**fields) for fields in data["operations"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Refuse to start rather than silently forget (and then overwrite) saved operations.
            raise ValueError(f"cannot read emulator state file {path}: {exc}") from exc
        self._operations = {operation.id: operation for operation in operations}
        self._signing_secret = data.get("signing_secret")

    def _save(self) -> None:
        """Rewrite the state file atomically. Called with the lock held.

        Holding the lock across the write keeps saves in order: a slower, older snapshot can
        never replace a newer one. The emulator's write rate makes the cost irrelevant.
        """
        if self._state_file is None:
            return
        now = self.clock()
        # Expired operations would be answered with 404 anyway; dropping them bounds the file.
        self._operations = {
            key: operation
            for key, operation in self._operations.items()
            if not operation.is_expired(now)
        }
        payload = {
            "version": STATE_FILE_VERSION,
            "signing_secret": self._signing_secret,
            "operations": [asdict(operation) for operation in self._operations.values()],
        }
        directory = self._state_file.parent
        directory.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory so os.replace is an atomic rename on one file system.
        fd, temp_name = tempfile.mkstemp(
            prefix=f".{self._state_file.name}.", suffix=".tmp", dir=directory
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, self._state_file)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not possible (nor needed) on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
