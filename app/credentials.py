"""Content Credentials (C2PA): reading an image's manifest into a small summary Atelier stores.

`inspect(data, content_type)` runs the C2PA SDK (`c2pa-python`, whose native c2pa-rs library
does the parsing and validation) over a file's exact bytes and returns None when the file has no
manifest, else a JSON-serialisable summary:

    {"valid": bool, "trusted": bool, "generator": str|None, "signer": str|None,
     "software_agent": str|None, "ai_generated": bool, "signed_at": str|None,
     "signed_at_source": "timestamp"|"claimed"|None, "ingredients": [str], "issues": [str]}

- `valid` is the SDK's own verdict on the manifest's integrity: its claim signature verifies and
  its hard binding (the data hash over the file's bytes) matches. `trusted` says whether the
  signing certificate chains to a trust anchor. They are separate because trust is a policy, not
  a property of the file: the SDK checks trust by default (c2pa-rs 0.68 and later) and, finding
  no anchor, still reports the manifest `Valid` with a `signingCredential.untrusted` failure code;
  only `Trusted` means both. So an untrusted signer (the emulator's throwaway root, or any real
  provider whose root the deployment has not configured) is `valid: true, trusted: false`, and the
  untrusted code is not repeated in `issues`. Pass `trust_anchors` (PEM) to trust roots;
  without it, `inspect` uses the roots of the app's `ATELIER_C2PA_TRUST_ANCHORS` setting
  (`configured_trust_anchors`, read once at start-up by app.config) when called inside an app
  context, as the worker, `verify` and the CLI are.
- `signed_at` is the signing time a timestamp authority attested (`signed_at_source:
  "timestamp"`); failing that, the time the manifest's own created/opened action states
  (`"claimed"`: the signer's word, not attested).
- The reader never goes to the network: fetching remote manifests and OCSP responses is off, so a
  manifest stored only at a URL is reported, not fetched.

It never raises, and it has budgets, because it runs in the worker on provider bytes:
- a size budget: files above `MAX_FILE_BYTES` and manifests above `MAX_MANIFEST_BYTES` (measured
  from the PNG/JPEG/WebP container before the SDK sees them) are not parsed, and a file that
  carries a manifest is then recorded invalid with the reason;
- a time budget: the SDK runs in a daemon thread and `inspect` waits at most `TIME_BUDGET_SECONDS`,
  then records "took too long". A native call cannot be interrupted from Python, so that thread
  runs on until the SDK returns (its result is dropped); at most `MAX_STUCK_READS` such threads may
  be outstanding, after which further files are recorded as not checked instead of piling up.
A result that is not a verdict on the file (too long, too large, busy) says so in `issues`;
`verify` checks credentials again later.

`columns(summary)` gives the Image/JobInput column values for a summary.
"""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import threading
from typing import Any

from flask import current_app, has_app_context

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 80 * 1024 * 1024  # edits take inputs up to 50 MiB; outputs are far smaller
MAX_MANIFEST_BYTES = 8 * 1024 * 1024  # real manifests are kilobytes, a few hundred with thumbnails
TIME_BUDGET_SECONDS = 10.0
MAX_STUCK_READS = 4
MAX_TEXT = 200  # longest name kept from a manifest
MAX_ISSUES = 20

AI_SOURCE_TYPES = {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"}
UNTRUSTED_CODES = {"signingCredential.untrusted"}

# Claim generators by a lower-case fragment of their name, first match wins.
# Guess: OpenAI's API names itself "OpenAI API" and Azure's names "Azure OpenAI" or (on images
# from its DALL-E years) "Microsoft_Responsible_AI"; neither is confirmed by Azure's docs.
KNOWN_GENERATORS: tuple[tuple[str, str], ...] = (
    ("atelier azure openai emulator", "Atelier Azure OpenAI emulator"),
    ("azure openai", "Azure OpenAI"),
    ("azure_openai", "Azure OpenAI"),
    ("microsoft_responsible_ai", "Azure OpenAI"),
    ("openai api", "OpenAI API"),
    ("openai-api", "OpenAI API"),
    ("openai_api", "OpenAI API"),
    ("chatgpt", "ChatGPT"),
    ("dall-e", "OpenAI DALL-E"),
    ("openai", "OpenAI"),
    ("adobe firefly", "Adobe Firefly"),
)

# Readable words for the validation codes people meet; others are shown with the SDK's wording.
ISSUE_TEXT = {
    "assertion.dataHash.mismatch": (
        "the file's bytes changed after signing: the data hash does not match"
    ),
    "claimSignature.mismatch": "the claim signature does not verify",
    "signingCredential.expired": "the signing certificate had expired",
    "signingCredential.revoked": "the signing certificate was revoked",
    "signingCredential.invalid": "the signing certificate is not valid for C2PA",
}

# Bytes every embedded manifest store carries (a JUMBF box labelled c2pa); a file with neither
# cannot hold an embedded manifest, and is answered without starting the SDK.
_MARKERS = (b"jumb", b"c2pa")

_stuck = threading.BoundedSemaphore(MAX_STUCK_READS)
_contexts: dict[str | None, Any] = {}
_contexts_lock = threading.Lock()
_fork_hook_registered = False


class _Unreadable(Exception):
    """The manifest is there but cannot be read; the message says why."""


def inspect(
    data: bytes,
    content_type: str,
    *,
    trust_anchors: str | None = None,
    timeout: float | None = None,
) -> dict[str, Any] | None:
    """The Content Credentials summary of a file's bytes, or None if it carries no manifest.

    `trust_anchors`: PEM root certificates to trust; None means the configured ones."""
    try:
        if trust_anchors is None:
            trust_anchors = configured_trust_anchors()
        if not any(marker in data for marker in _MARKERS):
            return None
        if len(data) > MAX_FILE_BYTES:
            return _invalid(
                f"the file is too large to check ({_mib(len(data))} > {_mib(MAX_FILE_BYTES)})"
            )
        manifest_bytes = manifest_size(data, content_type)
        if manifest_bytes is not None and manifest_bytes > MAX_MANIFEST_BYTES:
            return _invalid(
                f"the manifest is too large to check "
                f"({_mib(manifest_bytes)} > {_mib(MAX_MANIFEST_BYTES)})"
            )
        store = _read_with_budget(
            data, content_type, trust_anchors, TIME_BUDGET_SECONDS if timeout is None else timeout
        )
        if store is None:
            return None
        return summarise(store)
    except _Unreadable as error:
        return _invalid(str(error))
    except Exception as error:  # never fail a job over its credentials
        log.warning("content credentials could not be read: %s", error)
        return _invalid(f"the manifest could not be read: {_short(str(error))}")


def configured_trust_anchors() -> str | None:
    """The PEM text of `ATELIER_C2PA_TRUST_ANCHORS` in the current app, or None (none set, or
    no app context)."""
    if not has_app_context():
        return None
    return current_app.config.get("ATELIER_C2PA_TRUST_ANCHORS_PEM") or None


def columns(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The values of the `content_credentials` and `credentials_valid` columns for a summary."""
    if summary is None:
        return {"content_credentials": None, "credentials_valid": None}
    return {"content_credentials": summary, "credentials_valid": bool(summary.get("valid"))}


def api_view(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON API's `content_credentials` object for a stored summary (None stays None)."""
    if summary is None:
        return None
    return {
        "valid": bool(summary.get("valid")),
        "trusted": bool(summary.get("trusted")),
        "generator": summary.get("generator"),
        "signer": summary.get("signer"),
        "software_agent": summary.get("software_agent"),
        "ai_generated": bool(summary.get("ai_generated")),
        "signed_at": summary.get("signed_at"),
        "ingredients": list(summary.get("ingredients") or []),
        "issues": list(summary.get("issues") or []),
    }


def summarise(store: dict[str, Any]) -> dict[str, Any]:
    """The summary of a manifest store as the SDK reports it (`Reader.json()`, parsed)."""
    state = store.get("validation_state")
    manifests = store.get("manifests") or {}
    manifest = manifests.get(store.get("active_manifest")) or {}
    signature = manifest.get("signature_info") or {}
    actions = list(_creation_actions(manifest))
    signed_at, signed_at_source = _signing_time(signature, actions)
    issues = _issues(store)
    valid = state in ("Valid", "Trusted")
    if not manifest:
        valid = False
        issues.append("the manifest store names no active manifest")
    return {
        "valid": valid,
        "trusted": state == "Trusted",
        "generator": _generator(manifest),
        "signer": _text(signature.get("issuer") or signature.get("common_name")),
        "software_agent": _software_agent(actions),
        "ai_generated": any(_is_ai(action) for action in actions),
        "signed_at": signed_at,
        "signed_at_source": signed_at_source,
        "ingredients": _ingredients(manifest),
        "issues": issues[:MAX_ISSUES],
    }


def manifest_size(data: bytes, content_type: str) -> int | None:
    """Bytes of embedded manifest in a PNG, JPEG or WebP, from its container; None if unknown.

    Walks chunk and segment headers only (no decoding), so an enormous manifest is measured
    without being read."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png_manifest_size(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_manifest_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_manifest_size(data)
    return None


def _png_manifest_size(data: bytes) -> int:
    return _chunks_total(data, 8, b"caBX", riff=False)


def _jpeg_manifest_size(data: bytes) -> int:
    total, offset = 0, 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xDA or marker == 0xD9:  # start of scan: no more metadata segments
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01 or marker == 0xFF:
            offset += 1 if marker == 0xFF else 2
            continue
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        if marker == 0xEB:  # APP11: JUMBF
            total += length
        offset += 2 + length
    return total


def _webp_manifest_size(data: bytes) -> int:
    return _chunks_total(data, 12, b"C2PA", riff=True)


def _chunks_total(data: bytes, offset: int, wanted: bytes, *, riff: bool) -> int:
    """Bytes in the `wanted` chunks from `offset` on: PNG chunks (big-endian length, type, data,
    a 4-byte CRC; IEND ends them) or RIFF chunks (type, little-endian length, data padded to an
    even size)."""
    total = 0
    while offset + 8 <= len(data):
        if riff:
            kind, length = struct.unpack("<4sI", data[offset : offset + 8])
            step = 8 + length + (length & 1)
        else:
            length, kind = struct.unpack(">I4s", data[offset : offset + 8])
            step = 12 + length
        if kind == wanted:
            total += length
        if kind == b"IEND":
            break
        offset += step
    return total


def _read_with_budget(
    data: bytes, content_type: str, trust_anchors: str | None, timeout: float
) -> dict[str, Any] | None:
    """Run the SDK in a daemon thread and wait for it at most `timeout` seconds."""
    stuck = _stuck  # the one released, even if a fork replaces the module's
    if not stuck.acquire(blocking=False):
        raise _Unreadable("not checked: earlier checks are still running past their time budget")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["store"] = _read_manifest_store(data, content_type, trust_anchors)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error
        finally:
            stuck.release()

    thread = threading.Thread(target=run, name="c2pa-read", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # The native call cannot be interrupted: the thread finishes on its own and its result
        # is dropped; the semaphore it holds bounds how many such threads can exist.
        raise _Unreadable(f"not checked: reading the manifest took too long (over {timeout:g} s)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("store")


def _read_manifest_store(
    data: bytes, content_type: str, trust_anchors: str | None
) -> dict[str, Any] | None:
    """The SDK's report of the manifest store, or None when it finds no manifest."""
    import c2pa  # the native library loads on first use, not at import

    try:
        reader = c2pa.Reader.try_create(
            content_type or None, io.BytesIO(data), None, _context(trust_anchors)
        )
    except c2pa.C2paError.RemoteManifest as error:
        raise _Unreadable(
            f"the manifest is stored remotely and was not fetched: {_short(str(error))}"
        ) from error
    except c2pa.C2paError as error:
        raise _Unreadable(f"the manifest could not be parsed: {_short(str(error))}") from error
    if reader is None:
        return None
    with reader:
        try:
            return json.loads(reader.json())
        except (c2pa.C2paError, ValueError) as error:
            raise _Unreadable(f"the manifest could not be parsed: {_short(str(error))}") from error


def _context(trust_anchors: str | None) -> Any:
    """One SDK context per set of trust anchors, made on first use and shared between threads."""
    import c2pa

    global _fork_hook_registered
    with _contexts_lock:
        if not _fork_hook_registered:
            os.register_at_fork(after_in_child=_forget_in_child)
            _fork_hook_registered = True
        context = _contexts.get(trust_anchors)
        if context is None:
            settings: dict[str, Any] = {
                # Reading provider bytes must not make network requests of its own.
                "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            }
            if trust_anchors:
                settings["trust"] = {"user_anchors": trust_anchors}
            context = c2pa.Context.from_dict(settings)
            _contexts[trust_anchors] = context
        return context


def _forget_in_child() -> None:
    """After a fork (gunicorn's workers): the parent's contexts and stuck reads are not ours."""
    global _stuck, _contexts_lock
    _contexts.clear()
    _contexts_lock = threading.Lock()
    _stuck = threading.BoundedSemaphore(MAX_STUCK_READS)


def _invalid(reason: str) -> dict[str, Any]:
    return {
        "valid": False,
        "trusted": False,
        "generator": None,
        "signer": None,
        "software_agent": None,
        "ai_generated": False,
        "signed_at": None,
        "signed_at_source": None,
        "ingredients": [],
        "issues": [reason],
    }


def _issues(store: dict[str, Any]) -> list[str]:
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = results.get("failure")
    if failures is None:
        failures = store.get("validation_status") or []
    issues: list[str] = []
    for failure in failures:
        code = failure.get("code") or ""
        if code in UNTRUSTED_CODES:
            continue  # shown as trusted: false, not as a fault of the file
        text = ISSUE_TEXT.get(code) or _short(failure.get("explanation") or code)
        line = f"{text} ({code})" if code and code not in text else text
        if line not in issues:
            issues.append(line)
    for failure in (store.get("validation_results") or {}).get("ingredientDeltas") or []:
        for item in (failure.get("validationDeltas") or {}).get("failure") or []:
            code = item.get("code") or ""
            if code in UNTRUSTED_CODES:
                continue
            line = (
                f"an ingredient: {ISSUE_TEXT.get(code) or _short(item.get('explanation') or code)}"
            )
            if line not in issues:
                issues.append(line)
    return issues


def _generator(manifest: dict[str, Any]) -> str | None:
    names = [
        info.get("name")
        for info in manifest.get("claim_generator_info") or []
        if isinstance(info, dict) and info.get("name")
    ]
    if manifest.get("claim_generator"):
        names.append(manifest["claim_generator"])
    for name in names:
        lowered = str(name).lower()
        for fragment, readable in KNOWN_GENERATORS:
            if fragment in lowered:
                return readable
    return _text(names[0]) if names else None


def _creation_actions(manifest: dict[str, Any]):
    for assertion in manifest.get("assertions") or []:
        label = str(assertion.get("label") or "")
        if not label.startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions") or []:
            if isinstance(action, dict) and action.get("action") in ("c2pa.created", "c2pa.opened"):
                yield action


def _is_ai(action: dict[str, Any]) -> bool:
    source_type = str(action.get("digitalSourceType") or "")
    return source_type.rstrip("/").rsplit("/", 1)[-1] in AI_SOURCE_TYPES


def _software_agent(actions: list[dict[str, Any]]) -> str | None:
    for action in actions:
        agent = action.get("softwareAgent")
        if isinstance(agent, dict):
            agent = " ".join(str(agent[key]) for key in ("name", "version") if agent.get(key))
        if agent:
            return _text(agent)
    return None


def _signing_time(
    signature: dict[str, Any], actions: list[dict[str, Any]]
) -> tuple[str | None, str | None]:
    if signature.get("time"):
        return _text(signature["time"]), "timestamp"
    for action in actions:
        if action.get("when"):
            return _text(action["when"]), "claimed"
    return None, None


def _ingredients(manifest: dict[str, Any]) -> list[str]:
    names = []
    for ingredient in manifest.get("ingredients") or []:
        if isinstance(ingredient, dict):
            name = ingredient.get("title") or ingredient.get("instance_id") or "untitled"
            names.append(_text(name))
    return names[:MAX_ISSUES]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:MAX_TEXT] if text else None


def _short(text: str) -> str:
    return text.strip()[:300]


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"
