"""Painting helpers used by several drawers: substrate texture, stray debris, curving wires, counts in words."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import inside_field, wandering_paths


def paint_substrate(canvas: Canvas, rng) -> str:
    """Faint substrate texture; returns how it looks."""
    roughness = rng.uniform(0.0007, 0.004)
    canvas.add_relief(canvas.noise(rng, rng.uniform(8, 24), roughness))
    return "a smooth substrate" if roughness < 0.0025 else "a slightly grainy substrate"


def scatter_debris(canvas: Canvas, rng, probability=0.35) -> tuple[str, ...]:
    """A few stray particles (dust, residue) that a microscopist would call impurities."""
    if rng.random() > probability:
        return ()
    count = int(rng.integers(1, 5))
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    canvas.discs(centres, rng.uniform(4, 14, count), heights=1.2, dome=0.5)
    return (f"{count_words(count)} small stray debris particle{'s' if count > 1 else ''}",)


def count_words(count: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[count] if count < len(words) else str(count)


def paint_wires(canvas: Canvas, rng, count, diameter, length, curl, margin=0.0):
    """Gently curving wires; returns the paths, diameters and lengths of those that reach into the field."""
    starts = rng.uniform([-margin, -margin], [canvas.width + margin, canvas.height + margin], (count, 2))
    steps = 24
    lengths = length * rng.uniform(0.6, 1.4, count)
    paths = wandering_paths(rng, starts, rng.uniform(0, 2 * math.pi, count), steps, 1.0, curl)
    paths = starts[:, None, :] + (paths - starts[:, None, :]) * (lengths / steps)[:, None, None]
    diameters = diameter * np.clip(1 + 0.15 * rng.standard_normal(count), 0.6, 1.5)
    canvas.paths(paths, diameters, heights=rng.uniform(0.6, 1.1, count), dome=0.6)
    in_view = np.array([inside_field(path, canvas).any() for path in paths])
    return paths[in_view], diameters[in_view], lengths[in_view]
