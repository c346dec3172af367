"""Prompt triggers of the synchronous routes, and the memory `[ratelimit]` needs.

Owns `SyncTrigger`, `sync_trigger_for_prompt` and `FirstSightings`. Both synchronous routes
(Azure's deployment route and OpenAI's) share them and differ only in the bodies they answer
with; the table of triggers is in the package docstring.
"""

from __future__ import annotations

import threading
from enum import Enum


class SyncTrigger(Enum):
    """What a prompt asks a synchronous route to do instead of generating."""

    RATE_LIMIT_ALWAYS = "[ratelimit-always]"
    # 429 only the first time this exact prompt is sent to this emulator instance.
    RATE_LIMIT_ONCE = "[ratelimit]"
    HANG = "[hang]"
    FAIL = "[fail]"
    REFUSE_LEGACY = "[refuse-legacy]"
    REFUSE = "[refuse]"
    FILTER_OUTPUT = "[filter]"


# Checked in this order, so a prompt with several triggers gets the first one listed: rate
# limits first, as Azure's gateway throttles before the model sees the prompt. (Neither
# "[refuse]" nor "[refuse-legacy]" contains the other; their order only settles prompts with both.)
SYNC_TRIGGER_ORDER: tuple[SyncTrigger, ...] = (
    SyncTrigger.RATE_LIMIT_ALWAYS,
    SyncTrigger.RATE_LIMIT_ONCE,
    SyncTrigger.HANG,
    SyncTrigger.FAIL,
    SyncTrigger.REFUSE_LEGACY,
    SyncTrigger.REFUSE,
    SyncTrigger.FILTER_OUTPUT,
)


def sync_trigger_for_prompt(prompt: str) -> SyncTrigger | None:
    """The first trigger `prompt` contains, matched case-insensitively; None for none."""
    lowered = prompt.lower()
    for trigger in SYNC_TRIGGER_ORDER:
        if trigger.value in lowered:
            return trigger
    return None


class FirstSightings:
    """Remembers texts already seen, so `[ratelimit]` throttles only the first attempt."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def first_time(self, text: str) -> bool:
        """True the first time `text` is passed in, False ever after."""
        with self._lock:
            if text in self._seen:
                return False
            self._seen.add(text)
            return True
