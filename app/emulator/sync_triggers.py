"""Prompt triggers of the synchronous routes.

Owns `SyncTrigger` and `sync_trigger_for_prompt`. Both synchronous routes (Azure's deployment
route and OpenAI's) share them and differ only in the bodies they answer with; the memory of
the "first time only" triggers is faults.FirstSightings, and the table of triggers is in the
package docstring.
"""

from __future__ import annotations

from enum import Enum


class SyncTrigger(Enum):
    """What a prompt asks a synchronous route to do instead of generating."""

    RATE_LIMIT_ALWAYS = "[ratelimit-always]"
    # 429 only the first time this exact prompt is sent to this emulator instance.
    RATE_LIMIT_ONCE = "[ratelimit]"
    # 429 every time, with `x-should-retry: false`: the server says "do not retry this".
    NO_RETRY = "[no-retry]"
    # 500 only the first time this exact prompt is sent (the async submit shares the memory).
    SERVER_ERROR_ONCE = "[submit-500]"
    HANG = "[hang]"
    FAIL = "[fail]"
    REFUSE_LEGACY = "[refuse-legacy]"
    REFUSE = "[refuse]"
    FILTER_OUTPUT = "[filter]"
    # A 200 whose JSON body is cut off.
    GARBAGE = "[garbage]"


# Checked in this order, so a prompt with several triggers gets the first one listed: rate
# limits first, as Azure's gateway throttles before the model sees the prompt; `[garbage]`
# last, as it mangles an answer that was otherwise generated. (Neither "[refuse]" nor
# "[refuse-legacy]" contains the other, nor does "[poll-garbage]" contain "[garbage]"; the
# order only settles prompts with several.)
SYNC_TRIGGER_ORDER: tuple[SyncTrigger, ...] = (
    SyncTrigger.RATE_LIMIT_ALWAYS,
    SyncTrigger.RATE_LIMIT_ONCE,
    SyncTrigger.NO_RETRY,
    SyncTrigger.SERVER_ERROR_ONCE,
    SyncTrigger.HANG,
    SyncTrigger.FAIL,
    SyncTrigger.REFUSE_LEGACY,
    SyncTrigger.REFUSE,
    SyncTrigger.FILTER_OUTPUT,
    SyncTrigger.GARBAGE,
)


def sync_trigger_for_prompt(prompt: str) -> SyncTrigger | None:
    """The first trigger `prompt` contains, matched case-insensitively; None for none."""
    lowered = prompt.lower()
    for trigger in SYNC_TRIGGER_ORDER:
        if trigger.value in lowered:
            return trigger
    return None
