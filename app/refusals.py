"""The refusal ledger: prompts the safety system stopped, as entries a person can read.

A *prompt* refusal is a job that failed with `contentFilter` and has no filtered image (the
provider rejected the prompt itself); an *image* verdict is a job with images the provider
filtered out (k of n; when all n were, the job failed too). Each entry keeps the provider's
exact message and the categories it flagged, from the refusal message ("flagged: sexual") or
the images' content-filter annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app import library
from app.models import ImageStatus, Job

FLAGGED = re.compile(r"\(flagged: ([^)]*)\)")
VERDICTS = library.REFUSAL_VERDICTS


@dataclass(frozen=True)
class Refusal:
    job: Job
    verdict: str  # "prompt" or "image"
    filtered: int  # images filtered (image verdict)
    reasons: list[str]  # the exact messages, job's first, without repeats
    categories: list[str]

    @property
    def title(self) -> str:
        if self.verdict == "prompt":
            return "Prompt refused"
        return f"{self.filtered} of {self.job.n} image{'s' if self.job.n != 1 else ''} filtered"


def ledger_page(
    *, verdict: str | None, q: str | None, limit: int, after: str | None, before: str | None
) -> library.Page:
    page = library.refusal_page(verdict=verdict, q=q, limit=limit, after=after, before=before)
    return library.Page(
        items=[describe(job) for job in page.items],
        next_cursor=page.next_cursor,
        prev_cursor=page.prev_cursor,
    )


def describe(job: Job) -> Refusal:
    filtered = [image for image in job.images if image.status == ImageStatus.FILTERED]
    reasons: list[str] = []
    for message in [job.error_message, *(image.error_message for image in filtered)]:
        if message and message not in reasons:
            reasons.append(message)
    categories: set[str] = set()
    for message in reasons:
        for match in FLAGGED.finditer(message):
            categories.update(name.strip() for name in match.group(1).split(",") if name.strip())
    for image in job.images:
        categories.update(flagged_categories(image.filter_results))
    return Refusal(
        job=job,
        verdict="image" if filtered else "prompt",
        filtered=len(filtered),
        reasons=reasons,
        categories=sorted(name.replace("_", " ") for name in categories),
    )


def flagged_categories(filter_results: dict[str, Any] | None) -> set[str]:
    """Category names Azure marked filtered (or, like jailbreak, detected) in its annotations."""
    flagged: set[str] = set()
    for key in ("content_filter_results", "prompt_filter_results"):
        results = (filter_results or {}).get(key)
        if not isinstance(results, dict):
            continue
        for name, verdict in results.items():
            if isinstance(verdict, dict) and (verdict.get("filtered") or verdict.get("detected")):
                flagged.add(name)
    return flagged
