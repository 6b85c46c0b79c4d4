"""From relief to pixels: secondary-electron signal, the operator's brightness/contrast, detector noise, charging."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from PIL import Image

from .canvas import Canvas
from .instrument import log_uniform
from .scene import Look

CHARGING_PROBABILITY = {
    "Biological": 0.45,
    "Fibres": 0.35,
    "Powder": 0.3,
    "Porous_Sponge": 0.2,
}
DEFAULT_CHARGING_PROBABILITY = 0.08

EQUALISATION_CLIP = 2.0
MINIMUM_SIGNAL_SPAN = 0.4


def sample_look(rng, category: str, detector: str) -> Look:
    black = rng.uniform(0.0, 0.3)
    return Look(
        gamma=log_uniform(rng, 0.7, 1.5),
        black_level=black,
        white_level=rng.uniform(max(black + 0.45, 0.7), 1.0),
        equalisation=rng.uniform(0.4, 1.0),
        noise=rng.uniform(0.02, 0.1),
        directional_shading=rng.uniform(0.05, 0.2) if detector in ("InLens", "TLD") else rng.uniform(0.2, 0.5),
        charging=bool(rng.random() < CHARGING_PROBABILITY.get(category, DEFAULT_CHARGING_PROBABILITY)),
    )


def _secondary_electron_signal(canvas: Canvas, look: Look) -> np.ndarray:
    """SE yield: brighter on slopes and edges (more escape surface), shaded toward the detector, plus Z contrast."""
    relief = canvas.relief
    gx = np.zeros_like(relief)
    gy = np.zeros_like(relief)
    np.subtract(relief[:, 2:], relief[:, :-2], out=gx[:, 1:-1])
    np.subtract(relief[2:], relief[:-2], out=gy[1:-1])
    squared = gx * gx + gy * gy
    edges = squared / (squared + np.float32(0.05**2))  # sigmoid-like: steps light up, faint texture does not
    facing = gy / (np.sqrt(squared) + np.float32(1e-3))
    return (
        0.3 + 0.5 * np.clip(relief, -1, 1.5) + edges * (0.6 + look.directional_shading * facing) + 0.4 * canvas.material
    )


def _display(signal: np.ndarray, look: Look) -> np.ndarray:
    """Auto brightness/contrast: stretch, partly equalise and gamma-map the signal onto the look's grey range."""
    levels = 1024
    low, high = np.percentile(signal[::4, ::4], (0.5, 99.9))
    # A floor on the stretched span keeps a near-empty field (a bare substrate, a few thin wires) from having
    # its faint texture stretched over the whole grey range.
    span = max(high - low, MINIMUM_SIGNAL_SPAN)
    index = np.clip((signal - low) * ((levels - 1) / span), 0, levels - 1).astype(np.uint16)
    counts = np.bincount(index[::4, ::4].ravel(), minlength=levels).astype(np.float64)
    # Equalise a smoothed, contrast-limited histogram (as CLAHE does, the clipped excess is spread over all
    # levels): a wide flat background fills a narrow peak, and plain equalisation would stretch that peak, and
    # the substrate's faint texture in it, over half the grey range.
    counts = np.convolve(counts, np.full(levels // 16, 16 / levels), mode="same")
    clipped = np.minimum(counts, EQUALISATION_CLIP * counts.mean())
    clipped += (counts.sum() - clipped.sum()) / levels
    equalised = np.cumsum(clipped) / clipped.sum()
    curve = (look.equalisation * equalised + (1 - look.equalisation) * np.linspace(0, 1, levels)) ** look.gamma
    table = (look.black_level + (look.white_level - look.black_level) * curve).astype(np.float32)
    return table[index]


# Standard-normal quantiles at 256 levels: indexing them with random bytes gives Gaussian noise 3x faster than
# `standard_normal`, and detector noise is the single largest cost of a frame.
_GAUSSIAN_BYTES = np.array([NormalDist().inv_cdf((level + 0.5) / 256) for level in range(256)], np.float32)


def _detector_noise(image: np.ndarray, look: Look, rng) -> None:
    """Shot noise (variance grows with signal) and per-line offsets of a fast scan, in place."""
    rows, cols = image.shape
    gaussian = _GAUSSIAN_BYTES[rng.integers(0, 256, (rows, cols), dtype=np.uint8)]
    image += np.float32(look.noise) * np.sqrt(np.maximum(image, 0) + np.float32(0.05)) * gaussian
    image += rng.normal(0, look.noise * 0.15, (rows, 1)).astype(np.float32)


def _charging(image: np.ndarray, rng) -> None:
    """Charge build-up on an insulator: a bright glow and horizontal streaks trailing along the scan, in place."""
    rows, cols = image.shape
    centre_row, centre_col = rng.uniform(0, rows), rng.uniform(0, cols)
    sigma = rng.uniform(80, 250)
    glow_rows = np.exp(-(((np.arange(rows) - centre_row) / sigma) ** 2)).astype(np.float32)
    glow_cols = np.exp(-(((np.arange(cols) - centre_col) / sigma) ** 2)).astype(np.float32)
    image += rng.uniform(0.1, 0.3) * glow_rows[:, None] * glow_cols[None, :]
    for _ in range(int(rng.integers(3, 12))):
        row, col, thickness = int(rng.integers(rows)), int(rng.integers(cols // 2)), int(rng.integers(1, 4))
        image[row : row + thickness, col:] += rng.uniform(0.1, 0.4) * np.exp(
            -np.arange(cols - col, dtype=np.float32) / rng.uniform(30, 300)
        )


def specimen_pixels(canvas: Canvas, look: Look, rng) -> np.ndarray:
    displayed = Image.fromarray(_display(_secondary_electron_signal(canvas, look), look), mode="F")
    image = np.array(displayed.resize((canvas.width, canvas.height), Image.BICUBIC), np.float32)
    _detector_noise(image, look, rng)
    if look.charging:
        _charging(image, rng)
    image *= np.float32(255)
    image += np.float32(0.5)
    return np.clip(image, 0, 255, out=image).astype(np.uint8)
