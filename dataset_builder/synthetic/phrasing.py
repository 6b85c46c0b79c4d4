"""Wording tools of the grounded teacher: phrasing choices, sentence shaping, sizes as a reader would quote them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .instrument import format_length
from .scene import IMAGE_WIDTH, SyntheticScene


class Phrasing:
    """Picks among equivalent phrasings with the image's own random stream (deterministic per image)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def pick(self, *options: str) -> str:
        return options[int(self.rng.integers(len(options)))]


def sentence(text: str) -> str:
    text = text.strip()
    return text[0].upper() + text[1:] + ("" if text.endswith(".") else ".")


def join_words(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def approximate_count(count: int) -> str:
    return str(count) if count <= 20 else f"about {float(f'{count:.2g}'):.0f}"


def extent(scene: SyntheticScene, low_px: float, high_px: float) -> str:
    """A size range in nm/µm from the printed scale, or as a share of the field width when no scale is shown."""
    if scene.data_bar is None:
        low, high = (100 * value / IMAGE_WIDTH for value in (low_px, high_px))
        if high < 1.15 * low:
            return f"about {float(f'{(low + high) / 2:.2g}'):g}% of the image width"
        return f"about {float(f'{low:.2g}'):g}-{float(f'{high:.2g}'):g}% of the image width"
    scale = scene.instrument.nm_per_pixel
    low, high = format_length(low_px * scale), format_length(high_px * scale)
    return f"about {low}" if low == high or high_px < 1.15 * low_px else f"about {low} to {high}"
