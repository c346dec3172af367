"""What image generation costs, in US dollars: the price table and the two ways to use it.

`estimate()` prices a job before it runs (and jobs whose API reports no usage, such as DALL-E)
from the per-image table; `cost_from_usage()` prices a finished gpt-image job from the token
usage the provider reported. Both are pure functions of the job's parameters. `final_cost()`
applies them to a finishing job, inside the transaction that records its final status.

An edit also pays for its input images as image input tokens. Where the token table knows the
model, the estimate adds them (`input_image_tokens`, a GUESS at OpenAI's vision tiling); the
final cost from usage counts them as reported.

A model the table does not list (gpt-image-2 and its family, whose prices Atelier does not know
yet) has an unknown cost: shown as unknown, never as $0, and not counted against a budget.

Figures are OpenAI's published list prices as of 2025-12 (https://openai.com/api/pricing/ and
https://platform.openai.com/docs/pricing). Azure OpenAI's Global Standard prices for the same
models are the same or close, but vary by region and deployment type: treat every figure as an
estimate, not an invoice. Figures marked GUESS were not confirmed against a published table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from app.models import Image, ImageStatus, Job, JobStatus
from app.providers.catalog import Target
from app.validation import (
    ValidationError,
    find_target,
    form_size,
    parse_n,
    parse_options,
    parse_size,
)

CURRENCY = "USD"
PRICES_AS_OF = "2025-12"

# US dollars per image by model, quality and size. DALL-E 2 has no quality ("standard").
PER_IMAGE: dict[str, dict[tuple[str, str], float]] = {
    "dall-e-2": {
        ("standard", "256x256"): 0.016,
        ("standard", "512x512"): 0.018,
        ("standard", "1024x1024"): 0.020,
    },
    "dall-e-3": {
        ("standard", "1024x1024"): 0.040,
        ("standard", "1024x1792"): 0.080,
        ("standard", "1792x1024"): 0.080,
        ("hd", "1024x1024"): 0.080,
        ("hd", "1024x1792"): 0.120,
        ("hd", "1792x1024"): 0.120,
    },
    "gpt-image-1": {
        ("low", "1024x1024"): 0.011,
        ("low", "1024x1536"): 0.016,
        ("low", "1536x1024"): 0.016,
        ("medium", "1024x1024"): 0.042,
        ("medium", "1024x1536"): 0.063,
        ("medium", "1536x1024"): 0.063,
        ("high", "1024x1024"): 0.167,
        ("high", "1024x1536"): 0.250,
        ("high", "1536x1024"): 0.250,
    },
    # GUESS: OpenAI's gpt-image-1-mini figures as remembered, not checked against the page.
    "gpt-image-1-mini": {
        ("low", "1024x1024"): 0.005,
        ("low", "1024x1536"): 0.006,
        ("low", "1536x1024"): 0.006,
        ("medium", "1024x1024"): 0.011,
        ("medium", "1024x1536"): 0.015,
        ("medium", "1536x1024"): 0.015,
        ("high", "1024x1024"): 0.036,
        ("high", "1024x1536"): 0.052,
        ("high", "1536x1024"): 0.052,
    },
    # GUESS: gpt-image-1.5 announced as 20 % cheaper than gpt-image-1 for image tokens; these
    # are gpt-image-1's figures less 20 %, rounded.
    "gpt-image-1.5": {
        ("low", "1024x1024"): 0.009,
        ("low", "1024x1536"): 0.013,
        ("low", "1536x1024"): 0.013,
        ("medium", "1024x1024"): 0.034,
        ("medium", "1024x1536"): 0.050,
        ("medium", "1536x1024"): 0.050,
        ("high", "1024x1024"): 0.133,
        ("high", "1024x1536"): 0.200,
        ("high", "1536x1024"): 0.200,
    },
}


@dataclass(frozen=True)
class TokenPrices:
    """US dollars per million tokens."""

    text_input: float
    image_input: float
    image_output: float


PER_MILLION_TOKENS: dict[str, TokenPrices] = {
    "gpt-image-1": TokenPrices(text_input=5.00, image_input=10.00, image_output=40.00),
    "gpt-image-1-mini": TokenPrices(text_input=2.00, image_input=2.50, image_output=8.00),  # GUESS
    "gpt-image-1.5": TokenPrices(text_input=5.00, image_input=8.00, image_output=32.00),  # GUESS
}

# GUESS: how many input tokens one input image costs a gpt-image-1 family model. The model
# reads images like GPT-4o vision: scaled to fit 2048x2048, then its shorter side to 768, then
# counted in 512 px tiles at TILE_TOKENS each plus BASE_TOKENS. input_fidelity "high" adds the
# figures OpenAI's guide gives for a square and for a non-square first image. The mask is assumed
# not to be billed separately (it shapes the first image). The real figure replaces this estimate
# when the provider reports usage.
BASE_IMAGE_TOKENS = 65
TILE_TOKENS = 129
HIGH_FIDELITY_TOKENS = {"square": 4160, "other": 6240}

# GUESS: the models pick "auto" quality and size themselves, so the estimate assumes medium
# quality (what the emulator resolves "auto" to) and a square image. The real figure replaces
# the estimate when the provider reports token usage.
AUTO_QUALITY = "medium"
AUTO_SIZE = "1024x1024"
# DALL-E 3 without a quality option sent is priced as standard (its API default).
DEFAULT_QUALITY = {"dall-e-2": "standard", "dall-e-3": "standard"}


class UnknownPrice(ValueError):
    """The table has no price for this model, size and quality."""


def per_image(model: str, size: str, options: Mapping[str, Any] | None = None) -> float:
    """The table price of one image; raises UnknownPrice for a combination it does not list."""
    table = PER_IMAGE.get(model)
    if table is None:
        raise UnknownPrice(f"There is no price for the model {model!r}.")
    quality = (options or {}).get("quality") or DEFAULT_QUALITY.get(model, AUTO_QUALITY)
    if model == "dall-e-2":
        quality = "standard"
    if quality == "auto":
        quality = AUTO_QUALITY
    if size == "auto":
        size = AUTO_SIZE
    price = table.get((str(quality), size))
    if price is None:
        raise UnknownPrice(f"There is no price for {model} at {size}, quality {quality}.")
    return price


def estimate(
    model: str,
    size: str,
    n: int,
    options: Mapping[str, Any] | None = None,
    inputs: Sequence[Any] = (),
) -> float:
    """The table cost of `n` images, plus the input images of an edit (`inputs`: anything
    with `role`, `width` and `height`) where the token table prices them."""
    cost = per_image(model, size, options) * max(n, 0)
    prices = PER_MILLION_TOKENS.get(model)
    if prices is not None and inputs:
        fidelity = (options or {}).get("input_fidelity", "low")
        tokens = input_image_tokens(inputs, high_fidelity=fidelity == "high")
        cost += tokens * prices.image_input / 1_000_000
    return round(cost, 6)


def input_image_tokens(inputs: Sequence[Any], *, high_fidelity: bool = False) -> int:
    """The input tokens an edit's images cost (GUESS: see BASE_IMAGE_TOKENS)."""
    images = [item for item in inputs if item.role == "image"]
    tokens = sum(_image_tokens(item.width, item.height) for item in images)
    if high_fidelity and images:
        first = images[0]
        shape = "square" if first.width == first.height else "other"
        tokens += HIGH_FIDELITY_TOKENS[shape]
    return tokens


def _image_tokens(width: int, height: int) -> int:
    if width <= 0 or height <= 0:
        return BASE_IMAGE_TOKENS
    scale = min(1.0, 2048 / max(width, height))
    width, height = width * scale, height * scale
    scale = min(1.0, 768 / min(width, height))
    width, height = width * scale, height * scale
    tiles = -(-int(width) // 512) * -(-int(height) // 512)
    return BASE_IMAGE_TOKENS + TILE_TOKENS * tiles


def cost_from_usage(model: str, usage: Mapping[str, Any] | None) -> float | None:
    """The cost from a gpt-image `usage` object, or None when it cannot be priced (a model
    billed per image, or usage without token counts)."""
    prices = PER_MILLION_TOKENS.get(model)
    if prices is None or not isinstance(usage, Mapping):
        return None
    input_tokens = _count(usage.get("input_tokens"))
    output_tokens = _count(usage.get("output_tokens"))
    if input_tokens is None or output_tokens is None:
        return None
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    image_tokens = _count(details.get("image_tokens")) or 0
    text_tokens = _count(details.get("text_tokens"))
    if text_tokens is None:  # no breakdown: whatever is not image input is text
        text_tokens = max(input_tokens - image_tokens, 0)
    dollars = (
        text_tokens * prices.text_input
        + image_tokens * prices.image_input
        + output_tokens * prices.image_output
    ) / 1_000_000
    return round(dollars, 6)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return int(value)


def format_usd(amount: float | None) -> str:
    """$0.04, $0.042, $1.27: cents always, a third decimal only when it says something."""
    if amount is None:
        return "–"
    if abs(amount) < 1 and round(amount, 3) != round(amount, 2):
        return f"${amount:.3f}"
    return f"${amount:.2f}"


@dataclass(frozen=True)
class EstimateRequest:
    target: Target
    size: str
    n: int
    options: dict[str, Any]

    @property
    def cost(self) -> float | None:
        """The table cost, or None when the table has no price for it (shown as unknown)."""
        return known_estimate(self.target.model.name, self.size, self.n, self.options)


def known_estimate(
    model: str,
    size: str,
    n: int,
    options: Mapping[str, Any] | None = None,
    inputs: Sequence[Any] = (),
) -> float | None:
    """`estimate()`, or None where the table has no price: an unknown cost, never $0."""
    try:
        return estimate(model, size, n, options, inputs)
    except UnknownPrice:
        return None


# --- what a finished job cost ------------------------------------------------------------------


# Failures after which the provider may have generated (and billed) the job without Atelier
# seeing the result (lost connection, stopped waiting, unreadable answer): the estimate stays.
# A stream that broke after it began is such a call too.
MAYBE_BILLED = {"interrupted", "deadline", "protocol_error", "stream_interrupted"}


def final_cost(session: Any, job_id: int, status: str, code: str | None) -> dict[str, Any]:
    """What a finishing job cost: from token usage when the provider reported it, else from
    the price table for the images the provider made.

    - succeeded: usage, else the table price of the images stored;
    - failed before anything was sent: 0;
    - failed after the provider generated images that could not be saved: usage, else the
      table price of the slots it generated (filtered slots are assumed not billed);
    - failed with an unknown outcome (MAYBE_BILLED: interrupted, the deadline passed while the
      provider worked, an unreadable answer): the estimate stays, as it may have been billed;
    - refused or failed by the provider before generating (content filter, 4xx, 5xx, rate
      limits): 0.
    """
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return {}
    from_usage = cost_from_usage(job.model, job.usage)
    if from_usage is not None:
        return {"cost_usd": from_usage, "cost_source": "usage"}
    statuses = list(session.scalars(select(Image.status).where(Image.job_id == job_id)))
    if status == JobStatus.SUCCEEDED:
        billed = statuses.count(ImageStatus.STORED)
    elif job.submit_count == 0:
        billed = 0
    elif code in MAYBE_BILLED:
        return {}
    else:
        billed = sum(1 for image_status in statuses if image_status != ImageStatus.FILTERED)
    cost = 0.0 if billed == 0 else known_estimate(job.model, job.size, billed, job.options or {})
    if cost is None:
        return {}
    return {"cost_usd": cost, "cost_source": "table"}


def parse_estimate_request(
    args: Mapping[str, Any], targets: Sequence[Target], *, from_form: bool = True
) -> EstimateRequest:
    """Validate provider, size, n and options the way a job request is validated (no prompt);
    raise ValidationError naming the field."""
    target = find_target(targets, args.get("provider"))
    model = target.model
    raw_options = args if from_form else (args.get("options") or {})
    if not isinstance(raw_options, Mapping):
        raise ValidationError("options", "Options must be a JSON object.")
    return EstimateRequest(
        target=target,
        size=parse_size(form_size(args) if from_form else args.get("size"), model),
        n=parse_n(args.get("n"), model, from_form=from_form),
        options=parse_options(raw_options, model, from_form=from_form),
    )
