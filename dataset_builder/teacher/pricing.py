"""What the teacher costs: list prices, OpenAI's token arithmetic for images and text, and the estimate
of a run made from image headers alone, before anything is spent."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..images import BadImageError, SkippedImage
from ..question_families import QuestionFamily
from .jobs import TeacherKey, pending_jobs, read_image_size, scan_teacher_images
from .protocol import TeacherSettings, Usage, estimated_text_tokens, scaled_size, text_token_bound

PRICES_AS_OF = "November 2026"
BATCH_PRICE_FACTOR = 0.5
JSON_TOKENS_PER_ANSWER = 8  # `"answer_1": "...",` around each answer


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens, and how the model counts an image: OpenAI's tile formula, base + tile x tiles."""

    input_usd_per_1m: float
    output_usd_per_1m: float
    image_base_tokens: int = 85
    image_tile_tokens: int = 170

    def cost_usd(self, usage: Usage, batch: bool = False) -> float:
        usd = (usage.input_tokens * self.input_usd_per_1m + usage.output_tokens * self.output_usd_per_1m) / 1e6
        return usd * BATCH_PRICE_FACTOR if batch else usd


# OpenAI list prices assumed as of PRICES_AS_OF (standard tier, no cached-input discount); check
# https://openai.com/api/pricing before a large run and pass --input-usd-per-1m/--output-usd-per-1m.
# gpt-4o-mini bills images as ~33x more tokens at a lower price per token.
KNOWN_PRICES: dict[str, ModelPrice] = {
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, image_base_tokens=2833, image_tile_tokens=5667),
}


def resolve_price(
    model: str, input_usd_per_1m: float | None = None, output_usd_per_1m: float | None = None
) -> ModelPrice:
    """The price table entry for `model` (dated snapshots like `gpt-4.1-2025-04-14` included), with overrides."""
    snapshot_of = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model)
    known = KNOWN_PRICES.get(model) or KNOWN_PRICES.get(snapshot_of)
    if known is None and (input_usd_per_1m is None or output_usd_per_1m is None):
        raise ValueError(
            f"no price known for model {model!r} (known: {', '.join(KNOWN_PRICES)}); pass --input-usd-per-1m and "
            "--output-usd-per-1m (0 and 0 for a self-hosted server)"
        )
    known = known or ModelPrice(0.0, 0.0)
    return ModelPrice(
        known.input_usd_per_1m if input_usd_per_1m is None else input_usd_per_1m,
        known.output_usd_per_1m if output_usd_per_1m is None else output_usd_per_1m,
        known.image_base_tokens,
        known.image_tile_tokens,
    )


def image_tokens(width: int, height: int, detail: str, price: ModelPrice) -> int:
    """OpenAI's published formula for gpt-4o-class models: the image is fitted into 2048x2048, then its
    short side is brought down to 768 px, and each 512 px tile costs `image_tile_tokens` on top of the
    base. Low detail is the base alone; "auto" is counted as high (an upper bound)."""
    if detail == "low":
        return price.image_base_tokens
    if max(width, height) > 2048:
        width, height = int(width * 2048 / max(width, height)), int(height * 2048 / max(width, height))
    if min(width, height) > 768:
        width, height = int(width * 768 / min(width, height)), int(height * 768 / min(width, height))
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return price.image_base_tokens + price.image_tile_tokens * tiles


@dataclass
class TeacherEstimate:
    """Tokens and dollars for the requests a run would still make, before anything is spent."""

    teacher: str
    detail: str
    max_side: int
    images: int
    skipped_images: list[SkippedImage]
    duplicates: int
    families: int
    requests: int
    cached_requests: int
    image_tokens: int
    text_tokens: int
    expected_output_tokens: int
    max_output_tokens: int
    price: ModelPrice

    @property
    def input_tokens(self) -> int:
        return self.image_tokens + self.text_tokens

    def cost_usd(self, *, worst_case: bool = False, batch: bool = False) -> float:
        output_tokens = self.max_output_tokens if worst_case else self.expected_output_tokens
        return self.price.cost_usd(Usage(self.input_tokens, output_tokens), batch=batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{key: value for key, value in asdict(self).items() if key != "skipped_images"},
            "skipped_images": [asdict(skipped) for skipped in self.skipped_images],
            "input_tokens": self.input_tokens,
            "prices_as_of": PRICES_AS_OF,
            "expected_usd": self.cost_usd(),
            "worst_case_usd": self.cost_usd(worst_case=True),
            "batch_expected_usd": self.cost_usd(batch=True),
            "batch_worst_case_usd": self.cost_usd(worst_case=True, batch=True),
        }


def estimate(
    image_root: str | Path,
    settings: TeacherSettings,
    price: ModelPrice,
    families: Sequence[QuestionFamily],
    done: AbstractSet[TeacherKey] = frozenset(),
    expected_answer_tokens: int = 70,
) -> TeacherEstimate:
    """Count requests and tokens from image headers alone (fast: nothing is decoded or sent)."""
    scan = scan_teacher_images(image_root)
    skipped = list(scan.skipped)
    jobs = pending_jobs(scan.images, families, settings.teacher_id, done)
    sizes: dict[Path, tuple[int, int] | None] = {}
    totals = dict(requests=0, image_tokens=0, text_tokens=0, expected_output_tokens=0)
    for job in jobs:
        path = job.image.path
        if path not in sizes:
            try:
                sizes[path] = scaled_size(*read_image_size(path), settings.max_side)
            except BadImageError as error:
                sizes[path] = None
                skipped.append(SkippedImage(job.image.image_path, error.reason))
        if sizes[path] is None:
            continue
        totals["requests"] += 1
        totals["image_tokens"] += image_tokens(*sizes[path], settings.detail, price)
        totals["text_tokens"] += estimated_text_tokens(job.family, job.image.category)
        totals["expected_output_tokens"] += len(job.family.questions) * (
            expected_answer_tokens + JSON_TOKENS_PER_ANSWER
        )
    return TeacherEstimate(
        teacher=settings.teacher_id,
        detail=settings.detail,
        max_side=settings.max_side,
        images=len(scan.images),
        skipped_images=skipped,
        duplicates=scan.duplicates,
        families=len(families),
        cached_requests=len(scan.images) * len(families) - len(jobs),
        max_output_tokens=totals["requests"] * settings.generation.max_output_tokens,
        price=price,
        **totals,
    )


def worst_case_usd(
    settings: TeacherSettings,
    price: ModelPrice,
    family: QuestionFamily,
    category: str,
    size: tuple[int, int],
    *,
    batch: bool = False,
) -> float:
    """The most one request can cost: an upper bound on its input tokens and every output token used."""
    input_tokens = image_tokens(*size, settings.detail, price) + text_token_bound(family, category)
    return price.cost_usd(Usage(input_tokens, settings.generation.max_output_tokens), batch=batch)
