"""Fault modes: prompt triggers that make the emulator misbehave the way a real Azure can.

Owns the async API's and the image URLs' fault triggers (`Fault`), which of them a prompt
asks for, the "first time only" memory (`FirstSightings`), the list of every prompt trigger
with a one-line description (`TRIGGERS`) and the route that serves it, `GET
/_emulator/faults`. The synchronous routes' triggers, `[garbage]` and `[submit-500]` among
them, are parsed in sync_triggers.py; the bodies the faults answer with are built in
fault_responses.py. The table of triggers is in the package docstring.

Like the outcome triggers, faults are case-insensitive substrings of the prompt, and with
several of one group the first listed wins. A fault is independent of the outcome triggers:
`[poll-500] [fail]` breaks the first poll, then the operation fails as `[fail]` says.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from enum import Enum

from flask import Blueprint, Response

from .errors import json_response

bp = Blueprint("emulator_faults", __name__, url_prefix="/_emulator")


class Fault(Enum):
    """A way the async API or an image URL misbehaves, named by its prompt trigger."""

    SUBMIT_429 = "[submit-429]"
    SUBMIT_500 = "[submit-500]"
    VANISH = "[vanish]"
    POLL_429 = "[poll-429]"
    POLL_500 = "[poll-500]"
    POLL_SLOW = "[poll-slow]"
    POLL_GARBAGE = "[poll-garbage]"
    IMAGE_403 = "[image-403]"
    IMAGE_404 = "[image-404]"
    IMAGE_TRUNCATED = "[image-truncated]"
    IMAGE_NOT_IMAGE = "[image-not-image]"
    IMAGE_BOMB = "[image-bomb]"
    IMAGE_OVERSIZED = "[image-oversized]"
    IMAGE_REDIRECT = "[image-redirect]"
    STREAM_SLOW = "[stream-slow]"
    STREAM_CUT = "[stream-cut]"
    STREAM_ERROR = "[stream-error]"
    C2PA_BROKEN = "[c2pa-broken]"


# Each group is checked in its order; the first fault a prompt contains is the one acted on.
SUBMIT_FAULTS = (Fault.SUBMIT_429, Fault.SUBMIT_500)
# Each acts on an operation's first poll only. [vanish] is not among them: it holds for every
# poll and delete, whatever else the prompt asks (`has_vanished`).
POLL_FAULTS = (Fault.POLL_429, Fault.POLL_500, Fault.POLL_SLOW, Fault.POLL_GARBAGE)
IMAGE_FAULTS = (
    Fault.IMAGE_403,
    Fault.IMAGE_404,
    Fault.IMAGE_TRUNCATED,
    Fault.IMAGE_NOT_IMAGE,
    Fault.IMAGE_BOMB,
    Fault.IMAGE_OVERSIZED,
    Fault.IMAGE_REDIRECT,
)
# Act on streamed answers (`stream: true`) only; a request without `stream` is answered as
# usual. [stream-slow] holds every time; the others only for the first stream of a prompt.
STREAM_FAULTS = (Fault.STREAM_CUT, Fault.STREAM_ERROR, Fault.STREAM_SLOW)


class FirstSightings:
    """Remembers (trigger, key) pairs already seen, so a fault fires only the first time.

    Keys are exact prompts for submits and generations, operation ids for polls. Kept in
    memory only: a restarted emulator fires every "first time" fault once more.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, Hashable]] = set()

    def first_time(self, trigger: str, key: Hashable) -> bool:
        """True the first time this (trigger, key) pair is passed in, False ever after."""
        with self._lock:
            if (trigger, key) in self._seen:
                return False
            self._seen.add((trigger, key))
            return True


def first_fault(prompt: str, group: tuple[Fault, ...]) -> Fault | None:
    """The first fault of `group` that `prompt` contains, matched case-insensitively."""
    lowered = prompt.lower()
    for fault in group:
        if fault.value in lowered:
            return fault
    return None


def submit_fault(memory: FirstSightings, prompt: str) -> Fault | None:
    """The fault this submit answers with: only for the first submit of this exact prompt."""
    fault = first_fault(prompt, SUBMIT_FAULTS)
    if fault is not None and memory.first_time(fault.value, prompt):
        return fault
    return None


def poll_fault(memory: FirstSightings, operation_id: str, prompt: str) -> Fault | None:
    """The fault this poll answers with, on the operation's first poll only ([vanish], which
    holds for every poll, is `has_vanished`)."""
    fault = first_fault(prompt, POLL_FAULTS)
    if fault is None:
        return None
    # Remembered before the answer is built: a client that gave up on a [poll-slow] poll and
    # polls again meanwhile gets a normal answer, as it would from a recovered service.
    if memory.first_time(fault.value, operation_id):
        return fault
    return None


def has_vanished(prompt: str) -> bool:
    """Whether the operation made from `prompt` is gone for every poll and delete."""
    return first_fault(prompt, (Fault.VANISH,)) is not None


def stream_fault(memory: FirstSightings, prompt: str) -> Fault | None:
    """The fault a streamed answer to `prompt` shows: [stream-cut] and [stream-error] only on
    the first stream of this exact prompt (so a client's Retry gets a whole stream, as from a
    recovered service), [stream-slow] on every one."""
    fault = first_fault(prompt, STREAM_FAULTS)
    if fault is Fault.STREAM_SLOW or fault is None:
        return fault
    if memory.first_time(fault.value, prompt):
        return fault
    return None


def breaks_credentials(prompt: str) -> bool:
    """Whether every image made from `prompt` comes with a broken Content Credentials manifest
    (signed, then changed: its data hash no longer matches)."""
    return first_fault(prompt, (Fault.C2PA_BROKEN,)) is not None


def image_fault(prompt: str) -> Fault | None:
    """The fault every image URL of an operation made from `prompt` answers with."""
    return first_fault(prompt, IMAGE_FAULTS)


@dataclass(frozen=True)
class TriggerInfo:
    """One prompt trigger as `GET /_emulator/faults` lists it."""

    trigger: str
    # Which requests it acts on: "async submit", "async poll", "image URLs", "sync routes",
    # "streams".
    applies_to: str
    description: str


def _triggers(applies_to: str, *described: tuple[str, str]) -> tuple[TriggerInfo, ...]:
    """(trigger, description) pairs that all act on the requests `applies_to` names."""
    return tuple(TriggerInfo(trigger, applies_to, text) for trigger, text in described)


# Every prompt trigger the emulator knows, old outcome triggers included, so a person can
# discover them in one place, in runs that act on the same requests. Keep in step with the
# package docstring (a test checks).
TRIGGERS: tuple[TriggerInfo, ...] = (
    *_triggers(
        "async poll",
        ("[hang]", "Never finishes: the operation stays running forever."),
        ("[refuse]", "Ends failed with error contentFilter (prompt refused)."),
        ("[fail]", "Ends failed with error internalFailure."),
        ("[cancel]", "Ends canceled (Azure's 'task has timed out')."),
        ("[filter]", "Succeeds, but the last image slot is a filter error."),
    ),
    *_triggers(
        "async submit",
        ("[submit-429]", "First submit of this exact prompt: 429 with retry headers."),
    ),
    *_triggers(
        "async submit, sync routes",
        (
            "[submit-500]",
            "First request with this exact prompt: 500 InternalServerError; later ones succeed.",
        ),
    ),
    *_triggers(
        "async poll, delete",
        ("[vanish]", "Submit succeeds; every poll and delete is 404."),
    ),
    *_triggers(
        "async poll",
        ("[poll-429]", "The operation's first poll: 429 with retry headers."),
        ("[poll-500]", "The operation's first poll: 500 InternalServerError."),
        ("[poll-slow]", "The operation's first poll answers after slow_seconds."),
        (
            "[poll-garbage]",
            "The operation's first poll: 200 application/json with truncated, invalid JSON.",
        ),
    ),
    *_triggers(
        "image URLs",
        ("[image-403]", "403 AuthenticationFailed (Azure Storage XML)."),
        ("[image-404]", "404 BlobNotFound (Azure Storage XML)."),
        (
            "[image-truncated]",
            "200 image/png announcing the full length; half is sent, then the connection closes.",
        ),
        ("[image-not-image]", "200 with Content-Type image/png but an HTML body."),
        (
            "[image-bomb]",
            "200 image/png: a ~50 KB valid PNG declaring 20000x20000 pixels (decompression bomb).",
        ),
        (
            "[image-oversized]",
            "200 image/png, chunked, no Content-Length, more than oversized_bytes long.",
        ),
        (
            "[image-redirect]",
            "302 to http://images.elsewhere.invalid/generated_NN.png (another host).",
        ),
    ),
    *_triggers(
        "sync routes",
        ("[ratelimit-always]", "429 every time, with retry headers."),
        ("[ratelimit]", "429 for the first request with this exact prompt only."),
        ("[no-retry]", "429 every time, with x-should-retry: false (do not retry)."),
        ("[hang]", "Sleeps hang_seconds, then answers 500."),
        ("[fail]", "500 server error."),
        ("[refuse-legacy]", "400 contentFilter (older refusal shape)."),
        ("[refuse]", "400 content_policy_violation (prompt refused)."),
        ("[filter]", "After latency, 400: the generated image was filtered."),
        ("[garbage]", "After latency, 200 application/json with truncated JSON."),
    ),
    *_triggers(
        "streams",
        (
            "[stream-slow]",
            "Every stream: waits slow_seconds before each event after the first.",
        ),
        (
            "[stream-cut]",
            "First stream of this prompt: the connection closes after the first partial "
            "frame, no completed event.",
        ),
        (
            "[stream-error]",
            "First stream of this prompt: an error event (server_error) after the first "
            "partial frame, no completed event.",
        ),
    ),
    *_triggers(
        "every image",
        (
            "[c2pa-broken]",
            "Every image is signed, then changed after signing: its C2PA data hash fails.",
        ),
    ),
)


@bp.get("/faults")
def list_faults() -> Response:
    """Every prompt trigger with what it does; no key needed (a loopback test double)."""
    return json_response({"faults": [asdict(info) for info in TRIGGERS]})
