"""Drawing one synthetic scene: sub-type and instrument draws, the specimen, the look, the data bar."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .canvas import Canvas
from .imaging import sample_look, specimen_pixels
from .instrument import DATA_BAR_SHARE, render_data_bar, sample_data_bar, sample_instrument
from .registry import SUBTYPES, Subtype
from .scene import IMAGE_HEIGHT, IMAGE_WIDTH, DataBar, Instrument, SyntheticScene


def sample_acquisition(
    category: str, rng: np.random.Generator, subtype: str | None = None
) -> tuple[Subtype, Instrument, DataBar | None]:
    """The first draws of every image: sub-type (random unless named), instrument settings and data bar."""
    if category not in SUBTYPES:
        raise ValueError(f"unknown SEM category {category!r}; known categories: {', '.join(SUBTYPES)}")
    subtypes = {entry.name: entry for entry in SUBTYPES[category]}
    if subtype is not None and subtype not in subtypes:
        raise ValueError(f"unknown sub-type {subtype!r} of {category}; known sub-types: {', '.join(subtypes)}")
    chosen = subtypes[subtype] if subtype else SUBTYPES[category][int(rng.integers(len(subtypes)))]
    instrument = sample_instrument(rng, chosen)
    data_bar = sample_data_bar(rng, instrument) if rng.random() < DATA_BAR_SHARE[category] else None
    return chosen, instrument, data_bar


def draw_micrograph(
    category: str, rng: np.random.Generator, subtype: str | None = None
) -> tuple[Image.Image, SyntheticScene]:
    """One synthetic SEM image (RGB, 1024x768) of `category` and the description the teacher answers from.

    The sub-type is drawn at random unless `subtype` names one of `SUBTYPES[category]`.
    """
    chosen, instrument, data_bar = sample_acquisition(category, rng, subtype)
    canvas = Canvas(IMAGE_WIDTH, data_bar.top_row if data_bar else IMAGE_HEIGHT)
    morphology = chosen.draw(canvas, rng)
    look = sample_look(rng, category, instrument.detector)
    image = Image.new("L", (IMAGE_WIDTH, IMAGE_HEIGHT))
    image.paste(Image.fromarray(specimen_pixels(canvas, look, rng), mode="L"), (0, 0))
    if data_bar:
        image.paste(render_data_bar(data_bar, IMAGE_WIDTH * instrument.nm_per_pixel), (0, data_bar.top_row))
    scene = SyntheticScene(category, chosen.name, instrument, data_bar, morphology, look)
    return image.convert("RGB"), scene
