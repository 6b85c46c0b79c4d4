"""The specimen canvas: relief (height) and material maps painted with PIL at reduced resolution."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The specimen is drawn at half resolution and upsampled: 4x fewer pixels to shade, and the beam-spot blur of
# a real SEM comes for free.
RENDER_DOWNSCALE = 2


class Canvas:
    """Relief (height, 0 = substrate) and material maps of the specimen, painted with PIL.

    Drawers use image-pixel coordinates; the canvas stores everything at 1/RENDER_DOWNSCALE resolution.
    Objects painted in one call are stacked in painter's order (later ones hide earlier ones); calls are
    merged with the relief by `mode` ("max" stacks on top, "min" carves, "add" superimposes); the layer around
    the objects is `background`, by default a level that leaves the relief unchanged under `mode`.
    """

    def __init__(self, width: int, height: int, downscale: int = RENDER_DOWNSCALE):
        self.width, self.height, self.scale = width, height, 1.0 / downscale
        self.shape = (height // downscale, width // downscale)
        self.relief = np.zeros(self.shape, np.float32)
        self.material = np.zeros(self.shape, np.float32)

    def discs(self, centres, radii, heights=1.0, dome=0.4, materials=None, mode="max", background=None, aspect=1.0):
        """Ellipses of radius r (x) and r * aspect (y); `dome` blurs by that fraction of the median radius."""
        centres, radii = np.asarray(centres, float) * self.scale, np.asarray(radii, float) * self.scale
        half_extents = np.column_stack([radii, radii * aspect])
        boxes = np.concatenate([centres - half_extents, centres + half_extents], axis=1)

        def paint(draw, box, fill):
            draw.ellipse(tuple(box), fill=fill)

        blur = dome * float(np.median(radii)) if len(radii) else 0.0
        self._paint(paint, boxes, heights, blur, materials, mode, background)

    def polygons(
        self, polygons: Sequence[np.ndarray], heights=1.0, blur=1.0, materials=None, mode="max", background=None
    ):
        """Filled polygons; `blur` is in image pixels."""
        shapes = [np.asarray(polygon, float) * self.scale for polygon in polygons]

        def paint(draw, polygon, fill):
            draw.polygon([tuple(point) for point in polygon], fill=fill)

        self._paint(paint, shapes, heights, blur * self.scale, materials, mode, background)

    def paths(self, paths: Sequence[np.ndarray], widths, heights=1.0, dome=0.35, mode="max", caps=True):
        """Polylines of the given widths, with round joints and (optionally) round end caps."""
        widths = np.broadcast_to(np.asarray(widths, float) * self.scale, (len(paths),))
        shapes = [(np.asarray(path, float) * self.scale, width) for path, width in zip(paths, widths)]

        def paint(draw, shape, fill):
            path, width = shape
            draw.line([tuple(point) for point in path], fill=fill, width=max(1, round(width)), joint="curve")
            if caps:
                for x, y in (path[0], path[-1]):
                    draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=fill)

        blur = dome * float(np.median(widths)) / 2 if len(paths) else 0.0
        self._paint(paint, shapes, heights, blur, None, mode, None)

    def add_relief(self, field: np.ndarray, mode: str = "add") -> None:
        _merge(self.relief, field.astype(np.float32, copy=False), mode)

    def noise(self, rng: np.random.Generator, cell_px: float, amplitude: float = 1.0) -> np.ndarray:
        """Smooth Gaussian noise with features about `cell_px` image pixels across (bicubic-upsampled lattice)."""
        cell = max(cell_px * self.scale, 1.0)
        rows, cols = self.shape
        lattice = rng.standard_normal((int(rows / cell) + 3, int(cols / cell) + 3)).astype(np.float32)
        field = Image.fromarray(lattice, mode="F").resize(
            (cols, rows), Image.BICUBIC, box=(1, 1, lattice.shape[1] - 2, lattice.shape[0] - 2)
        )
        return np.asarray(field, np.float32) * amplitude

    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """Image-pixel x (row vector) and y (column vector) of the canvas samples, for analytic fields."""
        rows, cols = self.shape
        x = np.arange(cols, dtype=np.float32) / np.float32(self.scale)
        y = np.arange(rows, dtype=np.float32) / np.float32(self.scale)
        return x[None, :], y[:, None]

    def _paint(self, paint, shapes, heights, blur, materials, mode, background) -> None:
        count = len(shapes)
        if count == 0:
            return
        if background is None:
            background = NEUTRAL_BACKGROUND[mode]
        levels = np.broadcast_to(np.asarray(heights, float), (count,))
        # Heights are stored as 0..255 fills of an 8-bit layer spanning [-1, 1.5]: enough range for holes.
        fills = np.clip(np.round((levels + 1.0) / 2.5 * 255), 0, 255).astype(int)
        layer = Image.new("L", self.shape[::-1], int(round((background + 1.0) / 2.5 * 255)))
        draw = ImageDraw.Draw(layer)
        for shape, fill in zip(shapes, fills):
            paint(draw, shape, int(fill))
        values = _blurred(layer, blur) * np.float32(2.5 / 255) - np.float32(1.0)
        _merge(self.relief, values, mode)
        if materials is not None:
            material_levels = np.broadcast_to(np.asarray(materials, float), (count,))
            layer = Image.new("L", self.shape[::-1], 0)
            draw = ImageDraw.Draw(layer)
            for shape, level in zip(shapes, material_levels):
                paint(draw, shape, int(np.clip(level, 0, 1) * 255))
            self.material = np.maximum(self.material, np.asarray(layer, np.float32) / 255)


# Layer levels outside the painted objects that leave the relief untouched, per merge mode. Under "max", the
# blurred edge of an object falls from its height to -1 and crosses the substrate (0) at its drawn outline.
NEUTRAL_BACKGROUND = {"max": -1.0, "min": 1.5, "add": 0.0}


def _blurred(layer: Image.Image, sigma: float) -> np.ndarray:
    """Gaussian-like blur of an 8-bit layer, as float32.

    Wide blurs (domes of large particles) go through float box-reduction and bicubic enlargement: an 8-bit
    Gaussian blur would quantise their shallow slopes into visible terraces, which edge brightening turns into
    concentric rings.
    """
    if sigma < 0.5:
        return np.asarray(layer, np.float32)
    if sigma < 3:
        return np.asarray(layer.filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    # Reduce so that sigma becomes 2.5 px, blur there with three 5-px box passes (sigma 2.45), enlarge back.
    factor = sigma / 2.5
    width, height = layer.size
    small = layer.convert("F").resize((max(8, round(width / factor)), max(8, round(height / factor))), Image.BOX)
    values = np.asarray(small, np.float32)
    for _ in range(3):
        values = _box_blur_rows(_box_blur_rows(values, 2).T, 2).T
    return np.asarray(Image.fromarray(values, mode="F").resize((width, height), Image.BICUBIC), np.float32)


def _box_blur_rows(values: np.ndarray, radius: int) -> np.ndarray:
    """Running mean over 2 * radius + 1 columns, edges extended."""
    width = 2 * radius + 1
    sums = np.cumsum(np.pad(values, ((0, 0), (radius + 1, radius)), mode="edge"), axis=1, dtype=np.float32)
    return (sums[:, width:] - sums[:, :-width]) / np.float32(width)


def _merge(target: np.ndarray, values: np.ndarray, mode: str) -> None:
    if mode == "max":
        np.maximum(target, values, out=target)
    elif mode == "min":
        np.minimum(target, values, out=target)
    elif mode == "add":
        target += values
    else:
        raise ValueError(f"unknown merge mode {mode!r}; use 'max', 'min' or 'add'")
