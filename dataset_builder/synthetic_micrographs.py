"""Procedural SEM micrographs whose content is known exactly, so that a grounded teacher can describe them.

Why: the real SEM dataset and a cloud teacher are out of reach offline, yet the pipeline (teacher cache ->
dataset -> training -> evaluation) needs micrographs with answers that can be checked. Each image is drawn
from a `Micrograph` description (instrument settings, the data bar, and a `Morphology` that says what is
in view at which size in pixels); `grounded_teacher.py` answers from that same description.

The generator reproduces the three difficulties of the paper's Figure 2:
- intra-class variance: 3-6 sub-types per category (the sub-types of the hierarchical SEM release where it
  names them), magnification over three decades, tilt, contrast, noise and charging;
- inter-class similarity: particles, powders, porous sponges and films are built from the same primitives,
  and every image's grey levels are mapped onto a "look" drawn independently of its category (as an SEM
  operator's auto brightness/contrast does), so global grey-level statistics do not give the class away;
- multi-scale structure: satellites on grains, pores inside pore walls, grains inside films.

Rendering: drawers paint relief (height) and material maps with PIL at half resolution; a secondary-electron
model turns them into signal (edge brightening, detector-side shading, composition contrast), which is
upsampled, normalised to the look, and given shot noise, scan-line noise and charging, as on a real SEM.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

IMAGE_WIDTH = 1024
IMAGE_HEIGHT = 768
# Zeiss and FEI define magnification against a 127 mm wide Polaroid 545 print: field width = 127 mm / mag.
REFERENCE_FIELD_WIDTH_NM = 127e6
# The specimen is drawn at half resolution and upsampled: 4x fewer pixels to shade, and the beam-spot blur of
# a real SEM comes for free.
RENDER_DOWNSCALE = 2

# Share of images with an instrument data bar, per category: about 60% overall as in the real dataset, with
# per-category shares that differ as they do there.
DATA_BAR_SHARE = {
    "Biological": 0.45,
    "Fibres": 0.55,
    "Films_Coated_Surface": 0.7,
    "MEMS_devices_and_electrodes": 0.5,
    "Nanowires": 0.7,
    "Particles": 0.65,
    "Patterned_surface": 0.55,
    "Porous_Sponge": 0.7,
    "Powder": 0.6,
    "Tips": 0.55,
}
# Insulating specimens (tissue, polymer fibres, oxide powders) charge under the beam more often.
CHARGING_PROBABILITY = {
    "Biological": 0.45,
    "Fibres": 0.35,
    "Powder": 0.3,
    "Porous_Sponge": 0.2,
}
DEFAULT_CHARGING_PROBABILITY = 0.08

DETECTORS_BY_LAYOUT = {"table": ("ETD", "TLD"), "inline": ("SEI", "LEI", "InLens", "SE2")}
EQUALISATION_CLIP = 2.0
MINIMUM_SIGNAL_SPAN = 0.4
HIGH_VOLTAGES_KV = (1.0, 2.0, 3.0, 5.0, 5.0, 10.0, 15.0, 20.0)


# ----------------------------------------------------------------------------------------------- descriptions
@dataclass(frozen=True)
class Instrument:
    """Acquisition settings. The teacher may quote them only when the data bar prints them."""

    magnification: float
    nm_per_pixel: float
    high_voltage_kv: float
    working_distance_mm: float
    detector: str


@dataclass(frozen=True)
class DataBar:
    """The instrument's information bar at the bottom of the image, with its texts exactly as printed."""

    layout: str  # "table" (FEI-like header/value cells) or "inline" (JEOL/Zeiss-like single row)
    background: str  # "dark" or "bright"
    top_row: int
    scale_bar_nm: float
    scale_bar_pixels: int
    scale_label: str  # "2 µm"
    magnification_label: str  # "x 25,000"
    high_voltage_label: str  # "5.00 kV"
    working_distance_label: str  # "6.2 mm"
    detector: str


@dataclass(frozen=True)
class Look:
    """How the specimen was imaged and displayed; drawn independently of the category (except charging)."""

    gamma: float
    black_level: float
    white_level: float
    equalisation: float  # 0 = linear stretch, 1 = contrast-limited histogram equalisation
    noise: float  # shot-noise amplitude at mid grey
    directional_shading: float  # side-detector shadowing (ETD/SE2) versus in-lens flat lighting
    charging: bool

    @property
    def noise_level(self) -> str:
        return "low" if self.noise < 0.045 else "moderate" if self.noise < 0.075 else "high"


@dataclass(frozen=True)
class Morphology:
    """What a drawer put in the field of view. Sizes are image pixels; the phrases are worded to slot into the
    sentence templates of grounded_teacher.py, which gives each field its own question."""

    structure: str  # what the image shows, after "The image shows <category>, specifically ..."
    shape: str  # overall shape and morphology
    feature: str  # what `size_px` measures: "particle diameter", "line width", ...
    size_px: tuple[float, float]
    count: int | None = None  # discrete structures in view; None for continuous ones (films, sponges)
    length_px: tuple[float, float] | None = None  # wires, fibres, rods, tips
    pitch_px: float | None = None  # centre-to-centre spacing of an ordered array
    # "evenly spaced", "clustered", "random", "aligned", "continuous", "single", "designed" (a device layout)
    distribution: str = "random"
    arrangement: str = ""  # detail of the distribution: "a hexagonal lattice"
    aggregation: str = "no aggregation or bundling"
    size_spread: float = 0.0  # coefficient of variation of the drawn sizes
    regular: bool = True  # outlines repeat from object to object
    populations: int = 1  # distinct size populations (multi-scale structure)
    surface: str = "smooth, without visible texture"
    defects: tuple[str, ...] = ()
    domains: str = "a single layer of structures on a flat substrate, with no distinct phases"
    composition: str = "uniform material contrast; brightness changes come from topography and edges"
    contact: str = "separate"  # "separate", "touching", "fused", "crossing", "continuous", "single"
    boundaries: str = "sharp"  # "sharp" or "soft"
    surroundings: str = "a flat substrate"
    other_objects: tuple[str, ...] = ()
    functional: str = ""
    view: str = "top-down view"


@dataclass(frozen=True)
class Micrograph:
    """Everything that determines one synthetic image (besides its pixel noise): what the teacher reads."""

    category: str
    subtype: str
    instrument: Instrument
    data_bar: DataBar | None
    morphology: Morphology
    look: Look


# ---------------------------------------------------------------------------------------------------- canvas
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


# --------------------------------------------------------------------------------------------------- geometry
def _jittered_grid(rng, width, height, spacing, jitter=0.5, occupancy=1.0, margin=0.0) -> np.ndarray:
    """Points on a square grid of `spacing`, each moved by up to `jitter` * spacing, a random `occupancy` kept.

    With jitter < 0.5 no two points come closer than spacing * (1 - 2 * jitter): dispersed but not overlapping.
    """
    xs = np.arange(-margin + spacing / 2, width + margin, spacing)
    ys = np.arange(-margin + spacing / 2, height + margin, spacing)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    points = points + rng.uniform(-jitter, jitter, points.shape) * spacing
    return points[rng.random(len(points)) < occupancy]


def _scattered(rng, width, height, radius, spread, spacing, occupancy=1.0, reach=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Random, non-overlapping discs: centres (with radii radius * (1 + spread * N(0, 1)), clipped to 0.5-1.6)
    jittered freely inside the cells of a grid, so that no lattice shows, then every disc overlapping an
    earlier neighbour dropped. Objects reach `reach` radii from their centre (rods reach further)."""
    largest = radius * (1.6 if spread > 0 else 1.0)
    spacing = max(spacing, 2 * largest * reach * 1.05)  # then only the 8 neighbouring cells can overlap
    xs, ys = np.arange(spacing / 2, width, spacing), np.arange(spacing / 2, height, spacing)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1) + rng.uniform(-0.5, 0.5, (len(ys), len(xs), 2)) * spacing
    radii = radius * np.clip(1 + spread * rng.standard_normal(grid.shape[:2]), 0.5, 1.6)
    present = rng.random(grid.shape[:2]) < occupancy
    present.flat[rng.integers(present.size)] = True  # never an empty field
    keep = present.copy()
    rows, cols = present.shape
    for down, right in ((0, 1), (1, -1), (1, 0), (1, 1)):
        earlier = (slice(0, rows - down), slice(max(0, -right), cols - max(0, right)))
        later = (slice(down, rows), slice(max(0, right), cols + min(0, right)))
        distance = np.linalg.norm(grid[earlier] - grid[later], axis=-1)
        clash = present[earlier] & present[later] & (distance < (radii[earlier] + radii[later]) * reach * 1.05)
        keep[later] &= ~clash
    return grid[keep], radii[keep]


def _pick(rng, points: np.ndarray, count: int) -> np.ndarray:
    return points[rng.permutation(len(points))[:count]]


def _lattice(rng, width, height, pitch, kind="square", margin=0.0) -> tuple[np.ndarray, float]:
    """A square or hexagonal lattice covering the canvas, at a small random rotation; returns points, angle."""
    angle = 0.0 if rng.random() < 2 / 3 else float(rng.uniform(-12, 12))
    half = math.hypot(width, height) / 2 + margin
    steps = np.arange(-half, half + pitch, pitch)
    row_step = pitch * (math.sqrt(3) / 2 if kind == "hexagonal" else 1.0)
    rows = np.arange(-half, half + row_step, row_step)
    xs, ys = np.meshgrid(steps, rows)
    if kind == "hexagonal":
        xs = xs + (np.arange(len(rows))[:, None] % 2) * pitch / 2
    points = np.column_stack([xs.ravel(), ys.ravel()])
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = points @ rotation.T + [width / 2 + rng.uniform(0, pitch), height / 2 + rng.uniform(0, pitch)]
    inside = (
        (points[:, 0] > -margin)
        & (points[:, 0] < width + margin)
        & (points[:, 1] > -margin)
        & (points[:, 1] < height + margin)
    )
    return points[inside], angle


def _clustered(rng, width, height, clusters, members, spread) -> np.ndarray:
    """`clusters` groups of about `members` points, Gaussian with `spread` pixels around random centres."""
    centres = rng.uniform([0, 0], [width, height], (clusters, 2))
    sizes = np.maximum(1, rng.poisson(members, clusters))
    return np.concatenate([centre + rng.normal(0, spread, (size, 2)) for centre, size in zip(centres, sizes)])


def _touching_cluster(rng, centre, radii, extent) -> tuple[np.ndarray, np.ndarray]:
    """Discs that each touch an earlier disc of the cluster, all within `extent` of its centre: an aggregate.
    Returns the centres and radii of the discs that found a place."""
    positions, placed = [np.asarray(centre, float)], [radii[0]]
    for radius in radii[1:]:
        for _ in range(8):
            anchor = int(rng.integers(len(positions)))
            theta = rng.uniform(0, 2 * math.pi)
            candidate = positions[anchor] + (placed[anchor] + radius) * 0.9 * np.array(
                [math.cos(theta), math.sin(theta)]
            )
            if np.linalg.norm(candidate - centre) + radius <= extent:
                positions.append(candidate)
                placed.append(radius)
                break
    return np.array(positions), np.array(placed)


def _regular_polygons(rng, centres, radii, sides, rotation=None) -> list[np.ndarray]:
    """Regular polygons (triangles, squares, hexagons) with a common or random rotation."""
    count = len(centres)
    rotation = rng.uniform(0, 2 * math.pi, count) if rotation is None else np.full(count, rotation)
    angles = rotation[:, None] + np.arange(sides)[None, :] * (2 * math.pi / sides)
    radii = np.asarray(radii, float)[:, None]
    xs = centres[:, 0, None] + radii * np.cos(angles)
    ys = centres[:, 1, None] + radii * np.sin(angles)
    return list(np.stack([xs, ys], axis=-1))


def _irregular_polygons(rng, centres, radii, vertices=(5, 9), roughness=0.3, elongation=1.0) -> list[np.ndarray]:
    """Angular grains: random vertex angles and radii, stretched by `elongation` along a random axis."""
    count, sides = len(centres), int(rng.integers(vertices[0], vertices[1] + 1))
    angles = np.sort(rng.uniform(0, 2 * math.pi, (count, sides)), axis=1)
    lengths = np.asarray(radii, float)[:, None] * (1 + roughness * rng.uniform(-1, 1, (count, sides)))
    along, across = lengths * np.cos(angles) * elongation, lengths * np.sin(angles)
    theta = rng.uniform(0, math.pi, count)[:, None]
    xs = along * np.cos(theta) - across * np.sin(theta)
    ys = along * np.sin(theta) + across * np.cos(theta)
    return list(np.stack([xs, ys], axis=-1) + np.asarray(centres, float)[:, None, :])


def _wandering_paths(rng, starts, headings, steps, step_px, curl) -> np.ndarray:
    """Smoothly curving polylines [count, steps + 1, 2]: headings take random turns of `curl` radians a step."""
    turns = np.cumsum(rng.normal(0, curl, (len(starts), steps)), axis=1) + np.asarray(headings)[:, None]
    moves = np.stack([np.cos(turns), np.sin(turns)], axis=-1) * step_px
    return np.concatenate(
        [np.asarray(starts, float)[:, None, :], starts[:, None, :] + np.cumsum(moves, axis=1)], axis=1
    )


def _rectangle(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _facets(rng, polygons: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Split each polygon into triangles around an off-centre apex, each facet at its own height, so that
    facets differ in brightness and meet at bright ridges like the faces of a crystal."""
    triangles, heights = [], []
    for polygon in polygons:
        apex = polygon.mean(axis=0) + rng.normal(0, 0.15, 2) * np.ptp(polygon, axis=0)
        for start, end in zip(polygon, np.roll(polygon, -1, axis=0)):
            triangles.append(np.array([apex, start, end]))
        heights.extend(rng.uniform(0.6, 1.1, len(polygon)))
    return triangles, np.array(heights)


def _any_paths_touch(canvas: Canvas, paths: Sequence[np.ndarray], widths: np.ndarray) -> bool:
    """Whether two of the polylines overlap anywhere in the field, judged on the canvas raster."""
    coverage = np.zeros(canvas.shape, np.uint8)
    for path, width in zip(paths, widths):
        layer = Image.new("L", canvas.shape[::-1])
        points = [tuple(point) for point in np.asarray(path, float) * canvas.scale]
        ImageDraw.Draw(layer).line(points, fill=1, width=max(1, round(width * canvas.scale)), joint="curve")
        coverage += np.asarray(layer)
    return bool((coverage > 1).any())


def _spread(sizes: np.ndarray) -> float:
    return float(np.std(sizes) / np.mean(sizes)) if len(sizes) > 1 else 0.0


def _inside(points: np.ndarray, canvas: Canvas) -> np.ndarray:
    return (points[:, 0] >= 0) & (points[:, 0] < canvas.width) & (points[:, 1] >= 0) & (points[:, 1] < canvas.height)


def _size_range(sizes) -> tuple[float, float]:
    sizes = np.asarray(sizes, float)
    return float(sizes.min()), float(sizes.max())


def _substrate(canvas: Canvas, rng) -> str:
    """Faint substrate texture; returns how it looks."""
    roughness = rng.uniform(0.0007, 0.004)
    canvas.add_relief(canvas.noise(rng, rng.uniform(8, 24), roughness))
    return "a smooth substrate" if roughness < 0.0025 else "a slightly grainy substrate"


def _debris(canvas: Canvas, rng, probability=0.35) -> tuple[str, ...]:
    """A few stray particles (dust, residue) that a microscopist would call impurities."""
    if rng.random() > probability:
        return ()
    count = int(rng.integers(1, 5))
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    canvas.discs(centres, rng.uniform(4, 14, count), heights=1.2, dome=0.5)
    return (f"{_count_words(count)} small stray debris particle{'s' if count > 1 else ''}",)


def _count_words(count: int) -> str:
    words = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    return words[count] if count < len(words) else str(count)


# --------------------------------------------------------------------------------------------------- Particles
def _particles_dispersed(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(5, 28)
    spacing = radius * rng.uniform(3.4, 6.5)
    centres, radii = _scattered(
        rng, canvas.width, canvas.height, radius, rng.uniform(0.04, 0.3), spacing, rng.uniform(0.6, 1.0)
    )
    surroundings = _substrate(canvas, rng)
    # Sometimes a mixture: a brighter share of particles made of a heavier element (Z contrast).
    mixed = rng.random() < 0.3
    materials = np.where(rng.random(len(radii)) < 0.35, 0.6, 0.0) if mixed else None
    canvas.discs(centres, radii, heights=1.0, dome=rng.uniform(0.35, 0.6), materials=materials)
    inside = _inside(centres, canvas)
    return Morphology(
        composition=(
            "two particle populations of different brightness, suggesting two compositions (heavier elements brighter)"
            if mixed
            else "uniform material contrast; brightness changes come from topography and edges"
        ),
        structure="well-dispersed, roughly spherical nanoparticles on a substrate",
        shape="spherical particles with round, smooth outlines",
        feature="particle diameter",
        size_px=_size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="isolated particles scattered across the field",
        aggregation="no aggregation; the particles are well dispersed with gaps between them",
        size_spread=_spread(radii),
        surroundings=surroundings,
        defects=_debris(canvas, rng, 0.2),
        functional="the particle surfaces, which carry the material's active area; no other distinct regions",
    )


def _particles_individual(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(1, 4))
    if count == 1:
        radii = rng.uniform(70, 230, 1)
        centres = np.array([[rng.uniform(0.35, 0.65) * canvas.width, rng.uniform(0.35, 0.65) * canvas.height]])
    else:  # apart from each other: grid cells wider than two of the largest particles
        radii = rng.uniform(60, 140, count)
        centres = _pick(rng, _jittered_grid(rng, canvas.width, canvas.height, 340, 0.05), count)
    faceted = rng.random() < 0.5
    surroundings = _substrate(canvas, rng)
    if faceted:
        canvas.polygons(*_facets(rng, _irregular_polygons(rng, centres, radii, (6, 8), 0.08)), blur=1.5)
    else:
        canvas.discs(centres, radii, heights=1.0, dome=0.45)
    satellites = rng.random() < 0.6
    if satellites:
        # Small particles decorating the large ones: the multi-scale structure of Figure 2c.
        around = np.concatenate(
            [
                centre + rng.normal(0, radius * 0.55, (int(rng.integers(8, 30)), 2))
                for centre, radius in zip(centres, radii)
            ]
        )
        canvas.discs(around, rng.uniform(3, 9, len(around)), heights=1.3, dome=0.5)
    shape = (
        "faceted, polyhedral particles with flat facets and sharp edges" if faceted else "large spherical particles"
    )
    return Morphology(
        structure=f"{_count_words(count)} individual large particle{'s' if count > 1 else ''} at high magnification",
        shape=shape + (" decorated with much smaller satellite particles" if satellites else " with clean surfaces"),
        feature="particle diameter",
        size_px=_size_range(2 * radii),
        count=count,
        distribution="single" if count == 1 else "random",
        aggregation="small satellite particles cling to the large particles"
        if satellites
        else "no aggregation; the particles stand alone on the substrate",
        size_spread=_spread(radii),
        regular=not faceted,
        populations=2 if satellites else 1,
        surface="faceted, with flat crystal faces meeting at sharp ridges"
        if faceted
        else "smooth, without visible texture",
        contact="single" if count == 1 else "separate",
        surroundings=surroundings,
        domains="large particles with a second population of small satellite particles"
        if satellites
        else "individual particles on a flat substrate",
        functional="the particle facets and edges, sites of distinct surface reactivity"
        if faceted
        else "the particle surface; no distinct functional regions",
    )


def _particles_other_shape(canvas: Canvas, rng) -> Morphology:
    kind = rng.choice(["cubes", "triangular plates", "rods", "hexagonal plates"])
    radius = rng.uniform(10, 40)
    reach = 1.4 if kind == "rods" else 1.0
    spacing = radius * reach * rng.uniform(3.4, 5.0)
    centres, radii = _scattered(
        rng, canvas.width, canvas.height, radius, rng.uniform(0.05, 0.2), spacing, rng.uniform(0.6, 1.0), reach
    )
    surroundings = _substrate(canvas, rng)
    length = None
    if kind == "rods":
        headings = rng.uniform(0, math.pi, len(centres))
        offsets = np.column_stack([np.cos(headings), np.sin(headings)]) * radii[:, None] * 1.1
        canvas.paths(np.stack([centres - offsets, centres + offsets], axis=1), radii * 0.55, heights=1.0, dome=0.5)
        sizes, length = radii * 0.55, _size_range(radii * 2.2 + radii * 0.55)
    else:
        sides = {"cubes": 4, "triangular plates": 3, "hexagonal plates": 6}[kind]
        canvas.polygons(
            _regular_polygons(rng, centres, radii, sides), heights=rng.uniform(0.7, 1.0, len(centres)), blur=1.5
        )
        sizes = radii * (math.sqrt(2) if sides == 4 else math.sqrt(3) if sides == 3 else 2.0)
    inside = _inside(centres, canvas)
    feature = "rod diameter" if kind == "rods" else "edge length" if kind != "hexagonal plates" else "plate width"
    return Morphology(
        structure=f"non-spherical nanoparticles shaped as {kind}",
        shape=f"{kind} with straight edges and well-defined corners"
        if kind != "rods"
        else "short rods with rounded ends",
        feature=feature,
        size_px=_size_range(sizes[inside]),
        length_px=length,
        count=int(inside.sum()),
        distribution="random",
        arrangement="randomly oriented particles scattered across the field",
        aggregation="no aggregation; the particles lie apart from each other",
        size_spread=_spread(sizes),
        surface="smooth, flat faces",
        contact="separate",
        surroundings=surroundings,
        functional="the flat crystal facets, which give such shaped particles distinct surface properties",
    )


def _particles_small_clusters(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(6, 22)
    extent = 5 * radius
    centres, _ = _scattered(rng, canvas.width, canvas.height, extent, 0.0, extent * 2.4, rng.uniform(0.3, 0.8))
    wanted = rng.integers(3, 13, len(centres))
    members, radii = zip(
        *(
            _touching_cluster(rng, centre, radius * np.clip(1 + 0.15 * rng.standard_normal(size), 0.6, 1.4), extent)
            for centre, size in zip(centres, wanted)
        )
    )
    sizes = np.array([len(cluster) for cluster in radii])
    clusters = len(centres)
    members, radii = np.concatenate(members), np.concatenate(radii)
    surroundings = _substrate(canvas, rng)
    canvas.discs(members, radii, heights=rng.uniform(0.85, 1.0, len(radii)), dome=0.3)
    return Morphology(
        structure="nanoparticles gathered into small clusters",
        shape="roughly spherical particles grouped into small, compact clusters",
        feature="particle diameter",
        size_px=_size_range(2 * radii),
        count=int(_inside(members, canvas).sum()),
        distribution="clustered",
        arrangement=f"about {clusters} separate clusters of {sizes.min()}-{sizes.max()} particles",
        aggregation=f"clear aggregation into about {clusters} small clusters of touching particles",
        size_spread=_spread(radii),
        contact="touching",
        surroundings=surroundings,
        domains="clusters of particles and bare substrate between them",
        functional="the clusters, whose contact points and crevices differ from the free particle surface",
    )


# ------------------------------------------------------------------------------------------------------ Powder
def _powder_grains(canvas: Canvas, rng, median_radius, spread, centres, roughness):
    """Irregular grains with log-normal sizes; large grains first, so small ones settle on top."""
    radii = median_radius * np.exp(spread * rng.standard_normal(len(centres)))
    order = np.argsort(-radii)
    centres, radii = centres[order], radii[order]
    polygons = _irregular_polygons(rng, centres, radii, (5, 9), roughness, rng.uniform(1.0, 1.5))
    canvas.polygons(polygons, heights=rng.uniform(0.6, 1.1, len(radii)), blur=rng.uniform(2, 5))
    return centres, radii


def _powder_agglomerated(canvas: Canvas, rng) -> Morphology:
    heaps = int(rng.integers(2, 6))
    median = rng.uniform(12, 35)
    centres = _clustered(rng, canvas.width, canvas.height, heaps, rng.uniform(12, 40), rng.uniform(60, 160))
    surroundings = _substrate(canvas, rng)
    centres, radii = _powder_grains(canvas, rng, median, rng.uniform(0.45, 0.7), centres, 0.35)
    canvas.add_relief(canvas.noise(rng, 8, 0.12) * (canvas.relief > 0.3))
    return Morphology(
        structure="an agglomerated powder of irregular grains",
        shape="irregular, angular grains of very different sizes piled into agglomerates",
        feature="grain size",
        size_px=_size_range(2 * radii[_inside(centres, canvas)]),
        count=int(_inside(centres, canvas).sum()),
        distribution="clustered",
        arrangement=f"{_count_words(heaps)} heaps of piled grains",
        aggregation=f"strong agglomeration: grains are piled into {_count_words(heaps)} loose heaps",
        size_spread=_spread(radii),
        regular=False,
        populations=2,
        surface="rough and granular",
        contact="touching",
        boundaries="soft",
        surroundings=surroundings + " (sample holder or carbon tape)",
        domains="overlapping grains in several layers, with fine grains lying on coarse ones",
        functional="the exposed grain surfaces and inter-grain voids; no engineered functional regions",
    )


def _powder_fine(canvas: Canvas, rng) -> Morphology:
    median = rng.uniform(5, 14)
    centres = _jittered_grid(
        rng, canvas.width, canvas.height, median * rng.uniform(1.6, 2.6), 0.5, occupancy=rng.uniform(0.6, 1.0)
    )
    surroundings = _substrate(canvas, rng)
    centres, radii = _powder_grains(canvas, rng, median, rng.uniform(0.3, 0.55), centres, 0.3)
    inside = _inside(centres, canvas)
    return Morphology(
        structure="a fine powder of small irregular grains",
        shape="small, irregular grains with angular outlines",
        feature="grain size",
        size_px=_size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="grains densely spread over the whole field",
        aggregation="loose agglomeration; many grains touch their neighbours",
        size_spread=_spread(radii),
        regular=False,
        surface="rough and granular",
        contact="touching",
        surroundings=surroundings,
        domains="a dense layer of grains with dark gaps between them",
        functional="the large total surface of the fine grains; no distinct functional regions",
    )


def _powder_coarse(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(4, 14))
    centres = _pick(rng, _jittered_grid(rng, canvas.width, canvas.height, rng.uniform(180, 280), 0.3), count)
    surroundings = _substrate(canvas, rng)
    radii = rng.uniform(50, 110) * np.exp(rng.uniform(0.2, 0.4) * rng.standard_normal(len(centres)))
    canvas.polygons(
        *_facets(rng, _irregular_polygons(rng, centres, radii, (5, 7), 0.15, rng.uniform(1.0, 1.4))), blur=1.5
    )
    fines = rng.uniform([0, 0], [canvas.width, canvas.height], (int(rng.integers(20, 80)), 2))
    canvas.polygons(_irregular_polygons(rng, fines, rng.uniform(3, 9, len(fines))), heights=1.2, blur=1.0)
    return Morphology(
        structure="coarse, angular powder grains with fine debris",
        shape="large, angular, faceted grains with sharp edges and flat fracture faces",
        feature="grain size",
        size_px=_size_range(2 * radii),
        count=len(radii),
        distribution="random",
        aggregation="little agglomeration; fine fragments are scattered between and on the coarse grains",
        size_spread=_spread(radii),
        regular=False,
        populations=2,
        surface="faceted, with conchoidal fracture faces",
        defects=("fine fragments and chips from milling",),
        contact="separate",
        surroundings=surroundings,
        domains="coarse grains with a second population of fine fragments",
        functional="fracture faces and sharp edges; no engineered functional regions",
    )


def _powder_flakes(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(15, 60))
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    radii = rng.uniform(30, 110) * np.exp(0.35 * rng.standard_normal(count))
    surroundings = _substrate(canvas, rng)
    canvas.polygons(
        _irregular_polygons(rng, centres, radii, (5, 9), 0.25, 1.3), heights=np.linspace(0.4, 1.1, count), blur=1.0
    )
    return Morphology(
        structure="a powder of thin, plate-like flakes",
        shape="thin, flat flakes with irregular outlines and sharp edges",
        feature="flake width",
        size_px=_size_range(2 * radii[_inside(centres, canvas)]),
        count=int(_inside(centres, canvas).sum()),
        distribution="random",
        aggregation="flakes overlap and stack on one another",
        size_spread=_spread(radii),
        regular=False,
        surface="smooth, flat basal faces",
        contact="touching",
        surroundings=surroundings,
        domains="stacked layers of overlapping flakes at different heights",
        functional="the flat basal planes and exposed flake edges",
    )


# ----------------------------------------------------------------------------------------------- Porous_Sponge
def _porous_foam(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(25, 70)
    centres = _jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(2.0, 2.4), 0.2, margin=radius)
    radii = radius * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.4)
    canvas.discs(centres, radii, heights=rng.uniform(-0.6, -0.3, len(radii)), dome=0.3, background=1.0)
    canvas.add_relief(canvas.noise(rng, 10, 0.02))
    inside = _inside(centres, canvas)
    return Morphology(
        structure="an open-cell foam with large, interconnected pores",
        shape="a three-dimensional network of thin walls enclosing rounded cells",
        feature="pore diameter",
        size_px=_size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="pores packed edge to edge throughout the material",
        aggregation="no bundling; the solid forms one continuous interconnected network",
        size_spread=_spread(radii),
        regular=False,
        surface="rough cell walls",
        defects=("broken cell walls",),
        contact="fused",
        boundaries="sharp",
        surroundings="no separate substrate; the foam fills the field",
        domains="two phases: the solid walls and the empty pore space",
        functional="the open pores and interconnected channels, which give the large internal surface",
    )


def _porous_sponge(canvas: Canvas, rng) -> Morphology:
    ligament = rng.uniform(8, 30)
    field = canvas.noise(rng, ligament * 2.2)
    threshold = rng.uniform(-0.2, 0.25)
    canvas.add_relief(np.clip((field - threshold) * 2.5, -0.4, 1.0))
    return Morphology(
        structure="a nanoporous sponge of interconnected ligaments",
        shape="a bicontinuous network of curved ligaments and pores, like a sponge",
        feature="ligament width",
        size_px=(ligament * 0.7, ligament * 1.4),
        distribution="continuous",
        arrangement="a uniform, random bicontinuous network",
        aggregation="no separate particles; ligaments are fused into one network",
        size_spread=0.25,
        regular=False,
        surface="rough and convoluted",
        contact="fused",
        boundaries="soft",
        surroundings="no substrate; the porous material fills the field",
        domains="two interpenetrating phases: solid ligaments and open pores",
        functional="the open pore channels, which provide a very large specific surface area",
    )


def _porous_mesoporous(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(3, 12)
    centres, radii = _scattered(
        rng, canvas.width, canvas.height, radius, 0.25, radius * rng.uniform(3.4, 5), rng.uniform(0.6, 1.0)
    )
    canvas.add_relief(canvas.noise(rng, 40, 0.08) + 0.6, "add")
    canvas.discs(centres, radii, heights=-0.4, dome=0.25, mode="min")
    inside = _inside(centres, canvas)
    return Morphology(
        structure="a mesoporous surface perforated by many small pores",
        shape="a continuous solid matrix perforated by small, round pores",
        feature="pore diameter",
        size_px=_size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="isolated pores scattered over the whole surface",
        aggregation="no aggregation; the pores are isolated openings in a continuous matrix",
        size_spread=_spread(radii),
        surface="smooth matrix punctured by dark pores",
        contact="separate",
        surroundings="no separate substrate; the porous matrix fills the field",
        domains="a continuous solid matrix and isolated pores",
        functional="the pore openings, which provide accessible internal surface",
    )


def _porous_macroporous(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(40, 120)
    centres = _jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(2.3, 3.2), 0.25, margin=radius)
    radii = radius * np.clip(1 + 0.25 * rng.standard_normal(len(centres)), 0.5, 1.5)
    canvas.add_relief(canvas.noise(rng, 60, 0.1) + 0.8, "add")
    canvas.discs(centres, radii, heights=-0.5, dome=0.2, mode="min")
    small = _jittered_grid(rng, canvas.width, canvas.height, rng.uniform(14, 30), 0.4, occupancy=0.6)
    small_radii = rng.uniform(2, 5, len(small))
    canvas.discs(small, small_radii, heights=0.2, dome=0.3, mode="min")
    inside = _inside(centres, canvas)
    return Morphology(
        structure="a macroporous scaffold with small pores in its walls",
        shape="large rounded pores separated by thick walls that are themselves finely porous",
        feature="large-pore diameter",
        size_px=_size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="large pores scattered through the matrix, fine pores everywhere in between",
        aggregation="no aggregation; the solid is one continuous scaffold",
        size_spread=_spread(radii),
        regular=False,
        populations=2,
        surface="rough and finely porous",
        defects=("small pores throughout the walls",),
        contact="fused",
        surroundings="no separate substrate; the scaffold fills the field",
        domains="a hierarchical pore structure: large pores and a second population of fine pores in the walls",
        functional="the hierarchical pores: large ones for transport, small ones for surface area",
    )


# ---------------------------------------------------------------------------------------- Films_Coated_Surface
def _film_particle(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(5, 16)
    centres = _jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(1.5, 1.9), 0.3, margin=radius)
    radii = radius * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.5)
    canvas.discs(centres, radii, heights=rng.uniform(0.7, 1.0, len(radii)), dome=0.5)
    inside = _inside(centres, canvas)
    return Morphology(
        structure="a granular film made of densely packed nanoparticles",
        shape="a continuous coating of closely packed, rounded grains",
        feature="grain diameter",
        size_px=_size_range(2 * radii[inside]),
        distribution="continuous",
        arrangement="grains packed edge to edge over the whole surface",
        aggregation="the grains are packed into a continuous layer rather than separate aggregates",
        size_spread=_spread(radii),
        surface="granular and slightly rough",
        defects=_debris(canvas, rng, 0.3),
        contact="fused",
        boundaries="soft",
        surroundings="the coated substrate, fully covered by the film",
        domains="a single granular film layer covering the substrate",
        functional="the grain boundaries and the large surface of the granular coating",
    )


def _film_smooth(canvas: Canvas, rng) -> Morphology:
    undulation = rng.uniform(30, 120)
    canvas.add_relief(canvas.noise(rng, undulation, rng.uniform(0.005, 0.02)) + 0.5, "add")
    defects: list[str] = []
    pinholes = int(rng.integers(0, 15))
    sizes = np.array([undulation * 0.5, undulation])
    if pinholes:
        centres = rng.uniform([0, 0], [canvas.width, canvas.height], (pinholes, 2))
        sizes = 2 * rng.uniform(3, 10, pinholes)
        canvas.discs(centres, sizes / 2, heights=-0.3, dome=0.3, mode="min")
        defects.append(f"{_count_words(pinholes)} small pinhole{'s' if pinholes > 1 else ''}")
    edge = rng.random() < 0.4
    if edge:
        # The edge of the coating: the substrate shows beyond a step.
        x0, x1 = rng.uniform(0.1, 0.9, 2) * canvas.width
        substrate = np.array(
            [[x0, -10], [x1, canvas.height + 10], [canvas.width + 10, canvas.height + 10], [canvas.width + 10, -10]]
        )
        canvas.polygons([substrate], heights=0.0, blur=3.0, mode="min")
    defects.extend(_debris(canvas, rng, 0.5))
    return Morphology(
        structure="a smooth, continuous thin film" + (" ending at a film edge" if edge else ""),
        shape="a flat, featureless, continuous coating"
        + (" with a straight film edge exposing the substrate" if edge else ""),
        feature="pinhole diameter" if pinholes else "width of the faint surface undulations",
        size_px=_size_range(sizes),
        distribution="continuous",
        aggregation="no aggregation or bundling; the film is continuous",
        surface="smooth, with only faint texture",
        defects=tuple(defects),
        contact="continuous",
        boundaries="sharp" if edge else "soft",
        surroundings="the coated substrate" + (", exposed beyond the film edge" if edge else ", fully covered"),
        domains="two regions: the film and the exposed substrate beyond its edge"
        if edge
        else "a single uniform film layer with no distinct phases",
        functional="the film edge, where coating and substrate meet"
        if edge
        else "the uniform film surface itself; no distinct regions",
    )


def _film_cracked(canvas: Canvas, rng) -> Morphology:
    cell = rng.uniform(60, 180)
    field = canvas.noise(rng, cell)
    crack_width = rng.uniform(0.04, 0.12)
    cracks = np.abs(field) < crack_width
    canvas.add_relief(np.where(cracks, -0.5, 0.6).astype(np.float32) + canvas.noise(rng, 12, 0.002))
    return Morphology(
        structure="a cracked coating broken into plate-like domains",
        shape="a continuous coating split by a network of cracks into irregular plates",
        feature="crack-bounded plate size",
        size_px=(cell * 0.6, cell * 1.6),
        distribution="continuous",
        arrangement="a connected crack network spanning the whole field",
        aggregation="no aggregation; the film is continuous but fractured",
        size_spread=0.4,
        regular=False,
        surface="smooth plates separated by dark cracks",
        defects=("a network of drying or stress cracks",),
        contact="continuous",
        boundaries="sharp",
        surroundings="the substrate, visible only at the bottom of the cracks",
        domains="film plates separated by cracks that expose the substrate",
        functional="the crack network, which breaks the film's continuity",
    )


def _film_wrinkled(canvas: Canvas, rng) -> Morphology:
    wavelength = rng.uniform(20, 80)
    x, y = canvas.coordinates()
    theta = rng.uniform(0, math.pi)
    phase = (x * math.cos(theta) + y * math.sin(theta)) * (2 * math.pi / wavelength) + canvas.noise(
        rng, wavelength * 4, 2.5
    )
    canvas.add_relief(0.5 + 0.35 * np.sin(phase) + canvas.noise(rng, 10, 0.01))
    return Morphology(
        structure="a wrinkled thin film with periodic buckles",
        shape="a continuous film buckled into wavy, roughly parallel wrinkles",
        feature="wrinkle wavelength",
        size_px=(wavelength * 0.85, wavelength * 1.15),
        distribution="aligned",
        arrangement="wrinkles running roughly parallel, meandering across the field",
        aggregation="no aggregation; the film is continuous",
        size_spread=0.1,
        surface="undulating but smooth on the small scale",
        contact="continuous",
        boundaries="soft",
        surroundings="a compliant substrate beneath the buckled film",
        domains="a single buckled film layer with no distinct phases",
        functional="the periodic wrinkles, which change the film's optical and wetting behaviour",
    )


# ------------------------------------------------------------------------------------------------------ Fibres
def _straight_fibres(canvas: Canvas, rng, count, mean_angle, angle_spread, diameter):
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    headings = mean_angle + rng.normal(0, angle_spread, count)
    half = math.hypot(canvas.width, canvas.height)
    starts = centres - half * np.column_stack([np.cos(headings), np.sin(headings)])
    paths = _wandering_paths(rng, starts, headings, 12, 2 * half / 12, rng.uniform(0.0, 0.04))
    diameters = diameter * np.clip(1 + 0.15 * rng.standard_normal(count), 0.6, 1.5)
    canvas.paths(paths, diameters, heights=np.linspace(0.3, 1.1, count), dome=0.5)
    return paths, diameters


def _fibres_mat(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(15, 50))
    _, diameters = _straight_fibres(canvas, rng, count, 0.0, math.pi, rng.uniform(8, 36))
    return Morphology(
        structure="a non-woven mat of randomly oriented fibres, as from electrospinning",
        shape="long, straight to gently curved cylindrical fibres crossing in all directions, longer than the field",
        feature="fibre diameter",
        size_px=_size_range(diameters),
        count=count,
        distribution="random",
        arrangement="fibres crossing at random angles in several layers",
        aggregation="no bundling; fibres overlap at crossings",
        size_spread=_spread(diameters),
        contact="crossing",
        surroundings="no substrate visible; deeper fibres fade into the dark background",
        domains="several overlapping layers of fibres, the upper ones brighter",
        functional="the open inter-fibre pores of the mat",
    )


def _fibres_aligned(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(10, 40))
    paths, diameters = _straight_fibres(
        canvas, rng, count, rng.uniform(0, math.pi), rng.uniform(0.03, 0.12), rng.uniform(10, 40)
    )
    touching = _any_paths_touch(canvas, paths, diameters)
    return Morphology(
        structure="aligned fibres running mostly in one direction",
        shape="long cylindrical fibres lying nearly parallel to each other, longer than the field",
        feature="fibre diameter",
        size_px=_size_range(diameters),
        count=count,
        distribution="aligned",
        arrangement="fibres aligned along one direction with small angular deviations",
        aggregation="some fibres run side by side in loose bundles"
        if touching
        else "no bundling; the fibres run apart",
        size_spread=_spread(diameters),
        contact="touching" if touching else "separate",
        surroundings="no substrate visible beneath the aligned fibres",
        domains="stacked layers of parallel fibres, with no distinct phases",
        functional="the common fibre orientation, which gives anisotropic mechanical properties",
    )


def _fibres_single(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(1, 3))
    paths, diameters = _straight_fibres(canvas, rng, count, rng.uniform(0, math.pi), 0.3, rng.uniform(90, 280))
    canvas.add_relief(canvas.noise(rng, rng.uniform(6, 14), 0.12) * (canvas.relief > 0.2))
    surroundings = _substrate(canvas, rng)
    return Morphology(
        structure=f"{'a single thick fibre' if count == 1 else 'two thick fibres'} seen close up",
        shape="thick cylindrical fibre bodies with a finely textured surface",
        feature="fibre diameter",
        size_px=_size_range(diameters),
        count=count,
        distribution="single" if count == 1 else "random",
        aggregation="no bundling; the thick fibres lie on their own",
        size_spread=_spread(diameters),
        surface="finely textured, with small grooves and nodules",
        contact="single" if count == 1 else "crossing" if _any_paths_touch(canvas, paths, diameters) else "separate",
        surroundings=surroundings,
        populations=2,
        domains="the fibre body and a fine surface texture on a smaller scale",
        functional="the textured fibre surface, which increases surface area and adhesion",
    )


def _yarn(across: np.ndarray) -> np.ndarray:
    """Height profile across a yarn (-1..1): a rounded bundle with the ridges of its individual fibres."""
    return np.sqrt(np.clip(1 - across * across, 0, 1)) * (1 + 0.08 * np.sin(across * 14))


def _fibres_woven(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(60, 140)
    width = pitch * rng.uniform(0.7, 0.9)
    x, y = canvas.coordinates()
    across_warp, across_weft = (x % pitch - pitch / 2) / (width / 2), (y % pitch - pitch / 2) / (width / 2)
    # Plain weave: warp yarn c passes over the crossings with rows r where c + r is even, weft over the others.
    warp_height = 0.6 + 0.3 * np.cos(math.pi * (y / pitch - 0.5 - np.floor(x / pitch)))
    weft_height = 0.6 - 0.3 * np.cos(math.pi * (x / pitch - 0.5 - np.floor(y / pitch)))
    warp = np.where(np.abs(across_warp) < 1, _yarn(across_warp) * warp_height, -0.5)
    weft = np.where(np.abs(across_weft) < 1, _yarn(across_weft) * weft_height, -0.5)
    canvas.add_relief(np.maximum(warp, weft))
    return Morphology(
        structure="a woven fabric of interlaced fibre bundles",
        shape="yarns of many fine fibres interlaced over and under in a plain weave",
        feature="yarn width",
        size_px=(width * 0.95, width * 1.05),
        pitch_px=pitch * 2,
        distribution="evenly spaced",
        arrangement="a regular over-under plain-weave pattern of perpendicular yarns",
        aggregation="fibres are bundled into yarns of many parallel filaments",
        size_spread=0.05,
        surface="striated along the yarns by the individual fibres",
        contact="touching",
        boundaries="sharp",
        surroundings="no substrate; the fabric fills the field",
        domains="two perpendicular sets of yarns, warp and weft",
        functional="the weave openings and crossing points that set the fabric's porosity",
    )


# --------------------------------------------------------------------------------------------------- Nanowires
def _wires(canvas: Canvas, rng, count, diameter, length, curl, margin=0.0):
    """Gently curving wires; returns the paths, diameters and lengths of those that reach into the field."""
    starts = rng.uniform([-margin, -margin], [canvas.width + margin, canvas.height + margin], (count, 2))
    steps = 24
    lengths = length * rng.uniform(0.6, 1.4, count)
    paths = _wandering_paths(rng, starts, rng.uniform(0, 2 * math.pi, count), steps, 1.0, curl)
    paths = starts[:, None, :] + (paths - starts[:, None, :]) * (lengths / steps)[:, None, None]
    diameters = diameter * np.clip(1 + 0.15 * rng.standard_normal(count), 0.6, 1.5)
    canvas.paths(paths, diameters, heights=rng.uniform(0.6, 1.1, count), dome=0.6)
    in_view = np.array([_inside(path, canvas).any() for path in paths])
    return paths[in_view], diameters[in_view], lengths[in_view]


def _nanowires_entangled(canvas: Canvas, rng) -> Morphology:
    _, diameters, lengths = _wires(
        canvas,
        rng,
        int(rng.integers(40, 160)),
        rng.uniform(3, 10),
        rng.uniform(250, 700),
        rng.uniform(0.08, 0.25),
        150,
    )
    return Morphology(
        structure="an entangled network of long, thin, curved nanowires",
        shape="long, thin, flexible wires that bend and cross one another",
        feature="wire diameter",
        size_px=_size_range(diameters),
        length_px=_size_range(lengths),
        count=len(diameters),
        distribution="random",
        arrangement="a dense, randomly oriented mesh",
        aggregation="strong entanglement; wires cross and occasionally bundle together",
        size_spread=_spread(diameters),
        contact="crossing",
        surroundings="a substrate largely hidden beneath the wire mesh",
        domains="several overlapping layers of wires",
        functional="the wire-wire junctions of the percolating network, which carry current or heat",
    )


def _nanowires_few(canvas: Canvas, rng) -> Morphology:
    surroundings = _substrate(canvas, rng)
    paths, diameters, lengths = _wires(
        canvas, rng, int(rng.integers(2, 7)), rng.uniform(8, 24), rng.uniform(250, 600), rng.uniform(0.0, 0.06)
    )
    count, touching = len(paths), _any_paths_touch(canvas, paths, diameters)
    return Morphology(
        structure=f"a few ({_count_words(count)}) straight nanowires lying on a substrate",
        shape="straight or slightly bent wires with uniform diameter",
        feature="wire diameter",
        size_px=_size_range(diameters),
        length_px=_size_range(lengths),
        count=count,
        distribution="random",
        arrangement="isolated wires at random orientations",
        aggregation="no bundling, though some wires cross or touch"
        if touching
        else "no bundling; the wires lie apart",
        size_spread=_spread(diameters),
        contact="crossing" if touching else "separate",
        defects=_debris(canvas, rng, 0.4),
        surroundings=surroundings,
        domains="a single layer of wires lying on a flat substrate",
        functional="the individual wires, each a possible single-wire device channel",
    )


def _nanowires_individual(canvas: Canvas, rng) -> Morphology:
    diameter = rng.uniform(30, 90)
    surroundings = _substrate(canvas, rng)
    start = np.array([[rng.uniform(-50, 0.2 * canvas.width), rng.uniform(0.2, 0.8) * canvas.height]])
    heading = rng.uniform(-0.6, 0.6)
    length = canvas.width * rng.uniform(0.6, 1.2)
    path = _wandering_paths(rng, start, [heading], 8, length / 8, 0.02)
    canvas.paths(path, diameter, heights=1.0, dome=0.55)
    tipped = rng.random() < 0.5
    if tipped:
        # A catalyst droplet at the growth tip (vapour-liquid-solid growth).
        canvas.discs(path[:, -1], [diameter * 0.75], heights=1.3, dome=0.45, materials=0.6)
    return Morphology(
        structure="an individual nanowire imaged at high magnification" + (" with a catalyst tip" if tipped else ""),
        shape="a single straight cylindrical wire of uniform diameter"
        + (" capped by a round catalyst particle" if tipped else ""),
        feature="wire diameter",
        size_px=(diameter, diameter),
        length_px=(length, length),
        count=1,
        distribution="single",
        aggregation="none; a single isolated wire lies on the substrate",
        contact="single",
        surroundings=surroundings,
        domains="the wire body"
        + (" and a distinct catalyst particle at its tip" if tipped else " on a flat substrate"),
        composition=(
            "the catalyst tip is brighter than the wire body, suggesting a heavier element"
            if tipped
            else "uniform contrast along the wire; edges appear brighter"
        ),
        functional="the catalyst tip, where the wire grew"
        if tipped
        else "the wire itself, a one-dimensional conduction channel",
    )


def _nanowires_forest(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(30, 60)
    spacing = rng.uniform(16, 40)
    bases = _jittered_grid(rng, canvas.width, canvas.height + 200, spacing, 0.5)
    bases = bases[np.argsort(bases[:, 1])]  # far rows first, near rows drawn over them
    length = rng.uniform(60, 220) * math.sin(math.radians(tilt))
    lengths = length * rng.uniform(0.7, 1.2, len(bases))
    lean = rng.normal(0, 0.12, len(bases))
    tops = bases + np.column_stack([lengths * lean, -lengths])
    diameter = spacing * rng.uniform(0.2, 0.4)
    canvas.paths(np.stack([bases, tops], axis=1), diameter, heights=np.linspace(0.5, 1.1, len(bases)), dome=0.6)
    canvas.discs(tops, np.full(len(tops), diameter * 0.6), heights=1.2, dome=0.4)
    visible = _inside(tops, canvas)
    true_length = length / math.sin(math.radians(tilt))
    return Morphology(
        structure="a dense forest of vertically aligned nanowires",
        shape="straight, vertical wires standing side by side like a forest",
        feature="wire diameter",
        size_px=(diameter, diameter),
        length_px=(true_length * 0.7, true_length * 1.2),
        count=int(visible.sum()),
        distribution="aligned",
        pitch_px=spacing,
        arrangement="wires standing vertically side by side over the whole substrate",
        aggregation="wire tips lean together in places, forming small bundles",
        size_spread=0.05,
        contact="touching",
        surroundings="the growth substrate at the wire bases",
        domains="a vertical wire layer on the growth substrate",
        functional="the wire tips and the high-surface-area vertical array",
        view=f"tilted view (about {tilt:.0f}°)",
    )


# ------------------------------------------------------------------------------------------- Patterned_surface
def _array_morphology(*, kind, feature_px, pitch, lattice, angle, missing, arrangement=None, **fields) -> Morphology:
    """The description shared by all periodic patterns; `fields` adds or overrides Morphology fields."""
    defects = (f"{_count_words(missing)} missing element{'s' if missing > 1 else ''}",) if missing else ()
    orientation = "aligned with the image frame" if angle == 0 else f"rotated by about {abs(angle):.0f}°"
    return Morphology(
        size_px=(feature_px * 0.97, feature_px * 1.03),
        pitch_px=pitch,
        distribution="evenly spaced",
        arrangement=arrangement or f"a {lattice} lattice {orientation}",
        aggregation="none; every element is isolated at its lattice site",
        size_spread=0.02,
        surface="smooth, flat tops",
        defects=defects,
        contact="separate",
        domains="the patterned layer on the flat substrate",
        composition="patterned features and substrate show different brightness, with bright edges",
        functional=f"the periodic {kind}, which set the surface's optical or wetting response",
        **fields,
    )


def _missing_elements(rng, count: int) -> tuple[np.ndarray, int]:
    """Half of the arrays lack a few elements (lithography defects): a keep-mask and how many are missing."""
    missing = min(int(rng.poisson(1.0)) if rng.random() < 0.5 else 0, count)
    keep = np.ones(count, bool)
    keep[rng.choice(count, missing, replace=False)] = False
    return keep, missing


def _patterned_circles(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(30, 110)
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = _lattice(rng, canvas.width, canvas.height, pitch, lattice, margin=pitch)
    keep, missing = _missing_elements(rng, len(points))
    points = points[keep]
    radius = pitch * rng.uniform(0.18, 0.36)
    holes = rng.random() < 0.5
    canvas.add_relief(np.full(canvas.shape, 0.5 if holes else 0.0, np.float32))
    canvas.discs(
        points, np.full(len(points), radius), heights=-0.4 if holes else 0.9, dome=0.08, mode="min" if holes else "max"
    )
    name = "holes" if holes else "dots"
    return _array_morphology(
        kind=f"circular {name}",
        feature_px=2 * radius,
        pitch=pitch,
        lattice=lattice,
        angle=angle,
        missing=missing,
        structure=f"a periodic array of circular {name}",
        shape=f"identical circular {name} in a regular array",
        feature=f"{'hole' if holes else 'dot'} diameter",
        count=int(_inside(points, canvas).sum()),
    )


def _patterned_lines(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(25, 120)
    width = pitch * rng.uniform(0.25, 0.6)
    angle = float(rng.choice([0.0, 90.0, rng.uniform(-20, 20)]))
    x, y = canvas.coordinates()
    theta = math.radians(angle)
    across = x * math.cos(theta) + y * math.sin(theta)
    lines = across % pitch < width
    canvas.add_relief(np.where(lines, 0.9, 0.0).astype(np.float32))
    direction = {0.0: "vertical", 90.0: "horizontal"}.get(angle, "slightly inclined")
    return _array_morphology(
        kind="lines",
        feature_px=width,
        pitch=pitch,
        lattice="one-dimensional",
        angle=0.0,
        missing=0,
        structure="a line grating of parallel lines",
        shape="straight, parallel lines of equal width and spacing",
        feature="line width",
        count=_stripes_in_view(across, pitch, lines),
        arrangement=f"parallel lines, {direction} in the frame",
    )


def _stripes_in_view(across: np.ndarray, pitch: float, stripes: np.ndarray) -> int:
    """How many periodic stripes (index = across // pitch) show at least one pixel in the field."""
    return int(np.unique(np.floor(np.broadcast_to(across, stripes.shape)[stripes] / pitch)).size)


def _patterned_squares(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(35, 110)
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = _lattice(rng, canvas.width, canvas.height, pitch, lattice, margin=pitch)
    keep, missing = _missing_elements(rng, len(points))
    points = points[keep]
    radius = pitch * rng.uniform(0.25, 0.4)
    squares = _regular_polygons(
        rng, points, np.full(len(points), radius), 4, rotation=math.radians(angle) + math.pi / 4
    )
    canvas.polygons(squares, heights=0.9, blur=1.0)
    return _array_morphology(
        kind="squares",
        feature_px=radius * math.sqrt(2),
        pitch=pitch,
        lattice=lattice,
        angle=angle,
        missing=missing,
        structure="a periodic array of squares",
        shape="identical squares repeated on a regular lattice",
        feature="edge length",
        count=int(_inside(points, canvas).sum()),
    )


def _patterned_triangles(canvas: Canvas, rng) -> Morphology:
    """Nanosphere lithography: metal deposited through the gaps of a hexagonal monolayer of spheres leaves
    triangles in the two kinds of gap, pointing in alternate directions."""
    pitch = rng.uniform(35, 110)
    spheres, angle = _lattice(rng, canvas.width, canvas.height, pitch, "hexagonal", margin=pitch)
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    gaps = [
        np.array([pitch / 2, pitch * math.sqrt(3) / 6]) @ rotation.T,
        np.array([0, pitch / math.sqrt(3)]) @ rotation.T,
    ]
    radius = pitch * rng.uniform(0.13, 0.2)
    triangles = []
    for offset, turn in zip(gaps, (-math.pi / 2, math.pi / 2)):
        triangles += _regular_polygons(rng, spheres + offset, np.full(len(spheres), radius), 3, rotation=theta + turn)
    keep, missing = _missing_elements(rng, len(triangles))
    triangles = [triangle for triangle, kept in zip(triangles, keep) if kept]
    canvas.polygons(triangles, heights=0.9, blur=1.0)
    centres = np.array([triangle.mean(axis=0) for triangle in triangles])
    return _array_morphology(
        kind="triangles",
        feature_px=radius * math.sqrt(3),
        pitch=pitch,
        lattice="hexagonal",
        angle=angle,
        missing=missing,
        structure="a periodic array of triangles, as made by nanosphere lithography",
        shape="identical triangles pointing in alternate directions on a hexagonal lattice",
        feature="edge length",
        count=int(_inside(centres, canvas).sum()),
    )


def _patterned_zigzag(canvas: Canvas, rng) -> Morphology:
    period = rng.uniform(40, 140)
    pitch = rng.uniform(40, 120)
    width = pitch * rng.uniform(0.2, 0.45)
    amplitude = period * rng.uniform(0.25, 0.6)
    rows = np.arange(-pitch, canvas.height + pitch, pitch)
    xs = np.arange(-period, canvas.width + period, period / 2)
    zig = np.where(np.arange(len(xs)) % 2 == 0, -amplitude / 2, amplitude / 2)
    paths = [np.column_stack([xs, row + zig]) for row in rows]
    canvas.paths(paths, width, heights=0.9, dome=0.1, caps=False)
    return _array_morphology(
        kind="zigzag lines",
        feature_px=width,
        pitch=pitch,
        lattice="one-dimensional",
        angle=0.0,
        missing=0,
        structure="a pattern of parallel zigzag lines",
        shape="zigzag lines with sharp, periodic bends",
        feature="line width",
        count=int(np.sum((rows + amplitude / 2 + width / 2 > 0) & (rows - amplitude / 2 - width / 2 < canvas.height))),
        arrangement="parallel zigzag lines stacked at a constant pitch",
        length_px=(period, period),
    )


def _patterned_pillars(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(25, 55)
    pitch = rng.uniform(45, 130)
    foreshortening = math.cos(math.radians(tilt))
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = _lattice(rng, canvas.width, canvas.height / foreshortening + 200, pitch, lattice, margin=pitch)
    points = points[np.argsort(points[:, 1])] * [1, foreshortening]
    radius = pitch * rng.uniform(0.18, 0.32)
    height = pitch * rng.uniform(0.5, 1.5)
    tops = points - [0, height * math.sin(math.radians(tilt))]
    canvas.add_relief(canvas.noise(rng, 10, 0.003))
    canvas.paths(
        np.stack([points, tops], axis=1), 2 * radius, heights=np.linspace(0.4, 0.9, len(points)), dome=0.25, caps=False
    )
    canvas.discs(
        points,
        np.full(len(points), radius),
        heights=np.linspace(0.4, 0.9, len(points)),
        dome=0.1,
        aspect=foreshortening,
    )
    canvas.discs(tops, np.full(len(tops), radius), heights=1.2, dome=0.1, aspect=foreshortening)
    return _array_morphology(
        kind="pillars",
        feature_px=2 * radius,
        pitch=pitch,
        lattice=lattice,
        angle=angle,
        missing=0,
        structure="an array of vertical cylindrical pillars seen at a tilt",
        shape="upright cylindrical pillars with flat tops, standing in a regular array",
        feature="pillar diameter",
        count=int(_inside(tops, canvas).sum()),
        length_px=(height, height),
        view=f"tilted view (about {tilt:.0f}°)",
    )


# ---------------------------------------------------------------------------------- MEMS_devices_and_electrodes
def _mems_edge(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(30, 70)
    x, y = canvas.coordinates()
    edge_row = canvas.height * rng.uniform(0.3, 0.6) + (x - canvas.width / 2) * math.tan(
        math.radians(rng.uniform(-8, 8))
    )
    wall = canvas.height * rng.uniform(0.15, 0.35)
    depth = (y - edge_row) / wall
    layers = int(rng.integers(1, 4))
    band = np.clip(np.floor(depth * layers), 0, layers - 1) / layers
    relief = np.where(depth < 0, 1.0, np.where(depth < 1, 0.9 - 0.3 * band, 0.0))
    scallops = 0.08 * np.sin(depth * rng.uniform(20, 50)) * ((depth >= 0) & (depth < 1))
    canvas.add_relief(relief + scallops + canvas.noise(rng, 8, 0.008))
    canvas.material[:] = np.where((depth >= 0) & (depth < 1), band * 0.5, 0.0)
    return Morphology(
        structure="a three-dimensional etched edge of a microfabricated device, seen at a tilt",
        shape="a flat top surface breaking at a sharp edge into a steep sidewall above the etched floor",
        feature="sidewall height",
        size_px=(wall / math.sin(math.radians(tilt)) * 0.97, wall / math.sin(math.radians(tilt)) * 1.03),
        count=1,
        distribution="single",
        aggregation="not applicable; the edge is one continuous etched structure",
        surface="smooth top surface; sidewall with fine horizontal scallops from deep reactive-ion etching",
        defects=("scalloping on the sidewall",),
        contact="continuous",
        surroundings="the etched floor of the substrate below the wall",
        domains="the top surface, the sidewall"
        + (f" with {_count_words(layers)} stacked layers" if layers > 1 else "")
        + ", and the etched floor",
        composition=(
            f"the sidewall shows {_count_words(layers)} bands of different brightness, i.e. stacked materials"
            if layers > 1
            else "uniform material contrast; the bright edge comes from topography"
        ),
        functional="the etched step and sidewall that define the device geometry",
        view=f"tilted view (about {tilt:.0f}°)",
    )


def _mems_line(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(80, 260)
    gap = rng.uniform(60, 200)
    theta = math.radians(float(rng.choice([0.0, 90.0, rng.uniform(-30, 30)])))
    x, y = canvas.coordinates()
    across = x * math.cos(theta) + y * math.sin(theta) - rng.uniform(0, 100)
    roughness = canvas.noise(rng, 12, width * 0.02)
    lines = (across + roughness) % (width + gap) < width
    canvas.add_relief(np.where(lines, 0.8, 0.0).astype(np.float32) + canvas.noise(rng, 6, 0.025) * lines)
    canvas.material[:] = lines * 0.6
    return Morphology(
        structure="a close-up of micro-fabricated conductor lines",
        shape="wide, straight conductor lines with slightly rough edges",
        feature="line width",
        size_px=(width * 0.97, width * 1.03),
        pitch_px=width + gap,
        count=_stripes_in_view(across + roughness, width + gap, lines),
        distribution="evenly spaced",
        arrangement="parallel tracks at a constant pitch",
        aggregation="none; the lines are separate, continuous conductor tracks",
        surface="grainy metal on a smooth substrate",
        defects=("line-edge roughness",),
        contact="separate",
        surroundings="the insulating substrate between the lines",
        domains="two materials: metal lines and the substrate between them",
        composition="the metal lines are brighter than the substrate, a material (composition) contrast",
        functional="the conducting lines that carry signals across the device",
    )


def _mems_electrode(canvas: Canvas, rng) -> Morphology:
    finger = rng.uniform(15, 50)
    gap = finger * rng.uniform(0.6, 1.5)
    pitch = finger + gap
    top, bottom = canvas.height * rng.uniform(0.05, 0.2), canvas.height * rng.uniform(0.8, 0.95)
    bus = rng.uniform(40, 90)
    xs = np.arange(rng.uniform(0, pitch), canvas.width, pitch)
    from_top = np.arange(len(xs)) % 2 == 0
    fingers = [
        _rectangle(x, top, x + finger, bottom - gap) if upper else _rectangle(x, top + gap, x + finger, bottom)
        for x, upper in zip(xs, from_top)
    ]
    buses = [
        _rectangle(-10, top - bus, canvas.width + 10, top),
        _rectangle(-10, bottom, canvas.width + 10, bottom + bus),
    ]
    canvas.add_relief(canvas.noise(rng, 20, 0.003))
    canvas.polygons(fingers + buses, heights=0.6, blur=1.5, materials=0.7)
    return Morphology(
        structure="interdigitated comb electrodes of a microdevice",
        shape="two comb-shaped electrodes whose straight fingers interlock",
        feature="finger width",
        size_px=(finger * 0.97, finger * 1.03),
        pitch_px=pitch,
        count=len(xs),
        distribution="evenly spaced",
        arrangement="fingers alternating from the upper and lower bus bars",
        aggregation="none; the electrode fingers are separate and regularly spaced",
        surface="smooth metal on a smooth substrate",
        contact="separate",
        surroundings="the insulating substrate in the gaps between the fingers",
        other_objects=("bus bars connecting the fingers",),
        domains="metal electrodes and the exposed substrate between them",
        composition="the metal electrodes appear brighter than the substrate (material contrast)",
        functional="the interdigitated fingers and gaps, the sensing or actuating region of the device",
    )


def _mems_microfluidic(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(40, 120)
    turns = int(rng.integers(2, 5))
    span = canvas.height / (turns + 1)
    left, right = canvas.width * 0.15, canvas.width * 0.85
    points = [[-20, span]]
    for index in range(turns):
        row = span * (index + 1)
        end = right if index % 2 == 0 else left
        points += [[end, row], [end, row + span]]
    points = np.array(points[:-1] + [[canvas.width + 20, points[-1][1]]])
    canvas.add_relief(np.full(canvas.shape, 0.7, np.float32) + canvas.noise(rng, 20, 0.003))
    canvas.paths([points], width, heights=-0.2, dome=0.2, mode="min")
    chamber = rng.random() < 0.5
    if chamber:
        canvas.discs(points[1:2], [width * 1.8], heights=-0.2, dome=0.1, mode="min")
    return Morphology(
        structure="a serpentine microfluidic channel etched into a chip" + (" with a chamber" if chamber else ""),
        shape="a recessed channel of constant width winding back and forth",
        feature="channel width",
        size_px=(width * 0.97, width * 1.03),
        count=1,
        distribution="single",
        arrangement=f"one serpentine channel with {_count_words(2 * turns - 1)} straight segments",
        aggregation="not applicable; the channel is a single continuous recess",
        surface="smooth chip surface and channel floor",
        contact="continuous",
        surroundings="the chip surface around the channel",
        domains="the raised chip surface and the recessed channel floor",
        functional="the channel"
        + (" and its mixing chamber" if chamber else "")
        + ", which guide fluid through the chip",
    )


def _mems_waveguide(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(20, 70)
    row = canvas.height * rng.uniform(0.3, 0.7)
    canvas.add_relief(canvas.noise(rng, 15, 0.003))
    canvas.polygons([_rectangle(-10, row - width / 2, canvas.width + 10, row + width / 2)], heights=0.8, blur=1.0)
    ring = rng.random() < 0.6
    if ring:
        radius = rng.uniform(100, 220)
        gap = rng.uniform(8, 25)
        centre = np.array(
            [
                [
                    rng.uniform(0.3, 0.7) * canvas.width,
                    row - width - gap - radius if row > canvas.height / 2 else row + width + gap + radius,
                ]
            ]
        )
        canvas.discs(centre, [radius + width / 2], heights=0.8, dome=0.01)
        canvas.discs(centre, [radius - width / 2], heights=0.0, dome=0.01, mode="min")
    return Morphology(
        structure="a ridge optical waveguide" + (" coupled to a ring resonator" if ring else ""),
        shape="a straight raised ridge of constant width" + (" passing next to a circular ring" if ring else ""),
        feature="waveguide width",
        size_px=(width * 0.97, width * 1.03),
        count=2 if ring else 1,
        distribution="designed" if ring else "single",
        arrangement="a straight bus waveguide"
        + (" with a ring resonator beside it" if ring else " crossing the field"),
        aggregation="not applicable; the waveguide is a single continuous ridge",
        surface="smooth sidewalls and top",
        contact="separate",
        surroundings="the cladding or substrate surface around the ridge",
        domains="the raised waveguide core and the surrounding substrate",
        functional="the waveguide core"
        + (" and the ring resonator, coupled across a narrow gap" if ring else ", which confines and guides light"),
    )


# -------------------------------------------------------------------------------------------------------- Tips
def _pyramid(canvas: Canvas, apex, base_width, height, lean=0.0):
    """A pyramidal tip in a tilted view: two faces of different brightness meeting at the apex."""
    apex = np.asarray(apex, float)
    left, middle, right = (
        apex + [-base_width / 2 + lean, height],
        apex + [lean * 0.3, height * 1.08],
        apex + [base_width / 2 + lean, height],
    )
    canvas.polygons([np.array([apex, left, middle]), np.array([apex, middle, right])], heights=[1.0, 0.75], blur=1.0)


def _tips_on_cantilever(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(20, 60)
    width = rng.uniform(120, 300)
    end_x = canvas.width * rng.uniform(0.5, 0.8)
    row = canvas.height * rng.uniform(0.55, 0.75)
    beam = np.array(
        [
            [-20, row - width / 2],
            [end_x, row - width / 2],
            [end_x + width * 0.5, row],
            [end_x, row + width / 2],
            [-20, row + width / 2],
        ]
    )
    canvas.add_relief(canvas.noise(rng, 30, 0.003) - 0.3)
    canvas.polygons([beam], heights=0.4, blur=1.5)
    tip_height = rng.uniform(120, 320)
    _pyramid(canvas, [end_x, row - tip_height], tip_height * rng.uniform(0.6, 0.9), tip_height, rng.uniform(-20, 20))
    return Morphology(
        structure="a pyramidal tip at the free end of a cantilever, as for an AFM probe",
        shape="a sharp pyramidal tip rising from the end of a flat rectangular cantilever beam",
        feature="tip height",
        size_px=(tip_height * 0.97, tip_height * 1.03),
        length_px=(end_x, end_x),
        count=1,
        distribution="single",
        aggregation="not applicable; a single probe tip is shown",
        surface="smooth tip faces and cantilever",
        contact="fused",
        surroundings="empty space beyond the cantilever",
        other_objects=("the cantilever beam carrying the tip",),
        domains="the cantilever beam and the tip, two facets of the tip shaded differently",
        functional="the sharp apex that probes the surface, and the flexible cantilever",
        view=f"tilted view (about {tilt:.0f}°)",
    )


def _tips_zoom_in(canvas: Canvas, rng) -> Morphology:
    apex_radius = rng.uniform(8, 40)
    apex = np.array([canvas.width * rng.uniform(0.35, 0.65), canvas.height * rng.uniform(0.15, 0.35)])
    half_angle = math.radians(rng.uniform(8, 25))
    x, y = canvas.coordinates()
    across = (x - apex[0]) / np.maximum((y - apex[1]) * math.tan(half_angle) + apex_radius, 1e-3)
    body = (np.abs(across) < 1) & (y > apex[1] - apex_radius)
    canvas.add_relief(np.where(body, 0.9 - 0.25 * across, -0.3).astype(np.float32) + canvas.noise(rng, 10, 0.003))
    canvas.discs(apex[None], [apex_radius], heights=0.9, dome=0.3)
    contaminated = rng.random() < 0.3
    if contaminated:
        speck = apex + [rng.uniform(-1, 1) * apex_radius, rng.uniform(3, 8) * apex_radius]
        canvas.discs(speck[None], [rng.uniform(4, 10)], heights=1.2, dome=0.4)
    return Morphology(
        structure="a close-up of a sharp probe tip apex",
        shape="a conical tip narrowing to a rounded apex",
        feature="apex diameter",
        size_px=(2 * apex_radius * 0.95, 2 * apex_radius * 1.05),
        length_px=(canvas.height - apex[1], canvas.height - apex[1]),
        count=1,
        distribution="single",
        aggregation="not applicable; a single tip apex is shown",
        defects=("a small contamination particle near the apex",) if contaminated else (),
        contact="single",
        surroundings="empty space around the tip",
        domains="the tip body only; one side is brighter from the detector position",
        functional="the apex, whose radius sets the probe's resolution",
    )


def _tips_zoom_out(canvas: Canvas, rng) -> Morphology:
    chip = canvas.width * rng.uniform(0.25, 0.45)
    width = rng.uniform(25, 70)
    length = canvas.width * rng.uniform(0.3, 0.5)
    row = canvas.height * rng.uniform(0.4, 0.6)
    canvas.add_relief(canvas.noise(rng, 40, 0.003) - 0.3)
    body = np.array(
        [
            [-10, row - canvas.height * 0.4],
            [chip, row - canvas.height * 0.3],
            [chip, row + canvas.height * 0.3],
            [-10, row + canvas.height * 0.4],
        ]
    )
    beam = np.array(
        [
            [chip - 5, row - width / 2],
            [chip + length, row - width / 2],
            [chip + length + width / 2, row],
            [chip + length, row + width / 2],
            [chip - 5, row + width / 2],
        ]
    )
    canvas.polygons([body], heights=0.9, blur=2.0)
    canvas.polygons([beam], heights=0.5, blur=1.0)
    tip = rng.uniform(12, 30)
    _pyramid(canvas, [chip + length - tip * 0.3, row - tip], tip * 0.8, tip)
    return Morphology(
        structure="a probe chip with its cantilever and tip seen at low magnification",
        shape="a bulky chip body from which a thin rectangular cantilever protrudes, ending in a tiny tip",
        feature="cantilever width",
        size_px=(width * 0.97, width * 1.03),
        length_px=(length, length),
        count=1,
        distribution="single",
        aggregation="not applicable; a single probe chip and cantilever are shown",
        surface="smooth, flat chip and cantilever surfaces",
        contact="fused",
        surroundings="empty space around the probe",
        other_objects=("the probe's chip body",),
        domains="the chip body, the cantilever and the tip",
        functional="the cantilever and the tip at its end, the sensing part of the probe",
    )


# -------------------------------------------------------------------------------------------------- Biological
def _biological_cells(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(50, 110)
    centres, radii = _scattered(
        rng, canvas.width, canvas.height, radius, 0.25, radius * rng.uniform(2.8, 4), rng.uniform(0.4, 0.9), 1.2
    )
    surroundings = _substrate(canvas, rng)
    filopodia = []
    for centre, radius in zip(centres, radii):
        angles = rng.uniform(0, 2 * math.pi, int(rng.integers(3, 10)))
        for angle in angles:
            direction = np.array([math.cos(angle), math.sin(angle)])
            filopodia.append(
                np.array([centre + direction * radius * 0.8, centre + direction * radius * rng.uniform(1.2, 1.8)])
            )
    canvas.paths(filopodia, 4.0, heights=0.5, dome=0.5)
    canvas.polygons(
        _irregular_polygons(rng, centres, radii, (9, 14), 0.15), heights=0.8, blur=float(np.median(radii)) * 0.12
    )
    canvas.add_relief(canvas.noise(rng, 7, 0.15) * (canvas.relief > 0.3))
    return Morphology(
        structure="adherent cells spread on a substrate",
        shape="rounded, flattened cell bodies with wrinkled membranes and thin protrusions",
        feature="cell diameter",
        size_px=_size_range(2 * radii),
        count=len(radii),
        distribution="random",
        aggregation="no aggregation; the cells stand apart, linked at most by their thin protrusions",
        size_spread=_spread(radii),
        regular=False,
        populations=2,
        surface="wrinkled and rough cell membranes",
        contact="separate",
        boundaries="soft",
        surroundings=surroundings + " to which the cells adhere through thin protrusions (filopodia)",
        domains="cell bodies, thin protrusions and the substrate",
        functional="the filopodia anchoring the cells to the substrate",
    )


def _biological_bacteria(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(12, 35)
    length = width * rng.uniform(2, 5)
    clustered = rng.random() < 0.5
    if clustered:  # colonies: cells pile up against each other
        centres = _clustered(
            rng, canvas.width, canvas.height, int(rng.integers(3, 8)), rng.uniform(5, 25), rng.uniform(60, 140)
        )
        lengths = length * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.5)
    else:  # dispersed cells, each clear of its neighbours whatever its orientation
        centres, halves = _scattered(
            rng,
            canvas.width,
            canvas.height,
            length / 2,
            0.2,
            length * rng.uniform(1.3, 2.5),
            rng.uniform(0.5, 1.0),
            1.1,
        )
        lengths = 2 * halves
    headings = rng.uniform(0, math.pi, len(centres))
    offsets = np.column_stack([np.cos(headings), np.sin(headings)]) * (lengths[:, None] - width) / 2
    surroundings = _substrate(canvas, rng)
    canvas.paths(
        np.stack([centres - offsets, centres + offsets], axis=1),
        width,
        heights=rng.uniform(0.7, 1.0, len(centres)),
        dome=0.55,
    )
    return Morphology(
        structure="rod-shaped bacteria on a surface",
        shape="rod-shaped (bacillus) cells with rounded ends",
        feature="cell width",
        size_px=(width * 0.9, width * 1.1),
        length_px=_size_range(lengths),
        count=len(centres),
        distribution="clustered" if clustered else "random",
        aggregation="cells gather in colonies, touching end to end and side by side"
        if clustered
        else "no aggregation; the cells lie separately on the surface",
        size_spread=_spread(lengths),
        contact="touching" if clustered else "separate",
        surroundings=surroundings,
        domains="bacterial cells on the substrate, without an extracellular matrix",
        functional="the colonies, early stages of a biofilm"
        if clustered
        else "individual cells; no distinct functional regions",
    )


def _biological_pollen(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(60, 130)
    centres, radii = _scattered(
        rng, canvas.width, canvas.height, radius, 0.15, radius * rng.uniform(3.4, 4.5), rng.uniform(0.3, 0.9), 1.05
    )
    surroundings = _substrate(canvas, rng)
    canvas.discs(centres, radii, heights=0.8, dome=0.45)
    spikes = np.concatenate(
        [
            centre + radius * 0.92 * np.sqrt(rng.random((60, 1))) * _unit_vectors(rng, 60)
            for centre, radius in zip(centres, radii)
        ]
    )
    canvas.discs(spikes, np.full(len(spikes), radii.mean() * 0.06), heights=1.2, dome=0.5)
    return Morphology(
        structure="spherical pollen grains or spores with ornamented walls",
        shape="spherical grains covered with small spines",
        feature="grain diameter",
        size_px=_size_range(2 * radii),
        count=len(radii),
        distribution="random" if len(radii) > 1 else "single",
        aggregation="no aggregation; the grains lie apart from each other",
        size_spread=_spread(radii),
        populations=2,
        surface="spiny (echinate) outer wall",
        contact="separate" if len(radii) > 1 else "single",
        surroundings=surroundings,
        domains="the grain bodies and the much smaller spines on their surface",
        functional="the ornamented outer wall (exine) that protects the grain",
    )


def _unit_vectors(rng, count) -> np.ndarray:
    angles = rng.uniform(0, 2 * math.pi, count)
    return np.column_stack([np.cos(angles), np.sin(angles)])


def _biological_fibrils(canvas: Canvas, rng) -> Morphology:
    _, diameters, lengths = _wires(
        canvas, rng, int(rng.integers(20, 70)), rng.uniform(8, 20), rng.uniform(400, 900), rng.uniform(0.03, 0.1), 200
    )
    canvas.add_relief(canvas.noise(rng, 30, 0.005))
    return Morphology(
        structure="a network of collagen-like fibrils of an extracellular matrix",
        shape="long, gently curving fibrils forming a loose mesh",
        feature="fibril diameter",
        size_px=_size_range(diameters),
        length_px=_size_range(lengths),
        count=len(diameters),
        distribution="random",
        aggregation="fibrils cross and partly bundle together",
        size_spread=_spread(diameters),
        contact="crossing",
        surroundings="a tissue background beneath the fibril mesh",
        domains="several overlapping layers of fibrils, with no distinct phases",
        functional="the fibril mesh, the mechanical scaffold of the tissue",
    )


# ---------------------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Subtype:
    name: str
    draw: Callable[[Canvas, np.random.Generator], Morphology]
    magnification: tuple[float, float]


SUBTYPES: dict[str, tuple[Subtype, ...]] = {
    "Biological": (
        Subtype("cells", _biological_cells, (300, 3_000)),
        Subtype("bacteria", _biological_bacteria, (3_000, 20_000)),
        Subtype("pollen or spores", _biological_pollen, (500, 5_000)),
        Subtype("fibril network", _biological_fibrils, (5_000, 40_000)),
    ),
    "Fibres": (
        Subtype("non-woven mat", _fibres_mat, (300, 5_000)),
        Subtype("aligned fibres", _fibres_aligned, (300, 5_000)),
        Subtype("single fibre", _fibres_single, (2_000, 20_000)),
        Subtype("woven fabric", _fibres_woven, (30, 300)),
    ),
    "Films_Coated_Surface": (
        Subtype("particle film", _film_particle, (20_000, 100_000)),
        Subtype("smooth film", _film_smooth, (5_000, 50_000)),
        Subtype("cracked film", _film_cracked, (200, 5_000)),
        Subtype("wrinkled film", _film_wrinkled, (1_000, 20_000)),
    ),
    "MEMS_devices_and_electrodes": (
        Subtype("3D edge", _mems_edge, (1_000, 20_000)),
        Subtype("close-up line", _mems_line, (5_000, 50_000)),
        Subtype("electrode", _mems_electrode, (100, 2_000)),
        Subtype("microfluidic", _mems_microfluidic, (50, 500)),
        Subtype("waveguide", _mems_waveguide, (500, 10_000)),
    ),
    "Nanowires": (
        Subtype("entangled", _nanowires_entangled, (5_000, 30_000)),
        Subtype("few", _nanowires_few, (10_000, 50_000)),
        Subtype("individual", _nanowires_individual, (30_000, 150_000)),
        Subtype("forest", _nanowires_forest, (5_000, 40_000)),
    ),
    "Particles": (
        Subtype("dispersed", _particles_dispersed, (10_000, 80_000)),
        Subtype("individual", _particles_individual, (30_000, 150_000)),
        Subtype("other shape", _particles_other_shape, (10_000, 60_000)),
        Subtype("small clusters", _particles_small_clusters, (15_000, 100_000)),
    ),
    "Patterned_surface": (
        Subtype("circle array", _patterned_circles, (5_000, 50_000)),
        Subtype("line array", _patterned_lines, (5_000, 50_000)),
        Subtype("square array", _patterned_squares, (5_000, 40_000)),
        Subtype("triangle array", _patterned_triangles, (10_000, 60_000)),
        Subtype("zigzag", _patterned_zigzag, (2_000, 20_000)),
        Subtype("pillars", _patterned_pillars, (3_000, 30_000)),
    ),
    "Porous_Sponge": (
        Subtype("open-cell foam", _porous_foam, (100, 2_000)),
        Subtype("nanoporous sponge", _porous_sponge, (20_000, 100_000)),
        Subtype("mesoporous surface", _porous_mesoporous, (30_000, 150_000)),
        Subtype("macroporous scaffold", _porous_macroporous, (500, 5_000)),
    ),
    "Powder": (
        Subtype("agglomerated powder", _powder_agglomerated, (500, 5_000)),
        Subtype("fine powder", _powder_fine, (2_000, 15_000)),
        Subtype("coarse grains", _powder_coarse, (200, 2_000)),
        Subtype("flakes", _powder_flakes, (1_000, 10_000)),
    ),
    "Tips": (
        Subtype("on cantilever", _tips_on_cantilever, (300, 3_000)),
        Subtype("zoom in", _tips_zoom_in, (20_000, 200_000)),
        Subtype("zoom out", _tips_zoom_out, (50, 300)),
    ),
}


# ------------------------------------------------------------------------------------------ instrument and bar
def format_length(nm: float, digits: int = 2) -> str:
    """A length in the unit a microscopist would use, to `digits` significant figures: "85 nm", "1.2 µm"."""
    unit, scale = ("mm", 1e6) if nm >= 1e6 else ("µm", 1e3) if nm >= 1e3 else ("nm", 1.0)
    return f"{float(f'{nm / scale:.{digits}g}'):g} {unit}"


def _log_uniform(rng, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _sample_instrument(rng, subtype: Subtype) -> Instrument:
    magnification = float(f"{_log_uniform(rng, *subtype.magnification):.3g}")
    detector = str(rng.choice([name for names in DETECTORS_BY_LAYOUT.values() for name in names]))
    return Instrument(
        magnification=magnification,
        nm_per_pixel=REFERENCE_FIELD_WIDTH_NM / magnification / IMAGE_WIDTH,
        high_voltage_kv=float(rng.choice(HIGH_VOLTAGES_KV)),
        working_distance_mm=round(rng.uniform(3.0, 12.0), 1),
        detector=detector,
    )


def _scale_bar(nm_per_pixel: float) -> tuple[float, int]:
    """The longest 1-2-5 length that draws at most 260 px; 1-2-5 steps guarantee at least 104 px."""
    lengths = [step * 10**power for power in range(8) for step in (1, 2, 5)]
    length = max(nm for nm in lengths if nm / nm_per_pixel <= 260)
    return float(length), round(length / nm_per_pixel)


def _sample_data_bar(rng, instrument: Instrument) -> DataBar:
    layout = next(name for name, detectors in DETECTORS_BY_LAYOUT.items() if instrument.detector in detectors)
    scale_nm, scale_pixels = _scale_bar(instrument.nm_per_pixel)
    return DataBar(
        layout=layout,
        background=str(rng.choice(["dark", "bright"], p=[0.6, 0.4])),
        top_row=IMAGE_HEIGHT - 2 * int(rng.integers(35, 53)),
        scale_bar_nm=scale_nm,
        scale_bar_pixels=scale_pixels,
        scale_label=format_length(scale_nm, digits=1),
        magnification_label=f"x {instrument.magnification:,.0f}",
        high_voltage_label=f"{instrument.high_voltage_kv:.2f} kV",
        working_distance_label=f"{instrument.working_distance_mm:.1f} mm",
        detector=instrument.detector,
    )


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # DejaVu Sans ships with matplotlib (a dependency) and, unlike PIL's built-in font, has the "µ" glyph.
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)


def _render_data_bar(bar: DataBar, field_width_nm: float) -> Image.Image:
    height = IMAGE_HEIGHT - bar.top_row
    ink, paper = (235, 10) if bar.background == "dark" else (15, 225)
    image = Image.new("L", (IMAGE_WIDTH, height), paper)
    draw = ImageDraw.Draw(image)
    if bar.layout == "table":
        cells = (
            ("HV", bar.high_voltage_label),
            ("mag", bar.magnification_label),
            ("WD", bar.working_distance_label),
            ("det", bar.detector),
            ("HFW", format_length(field_width_nm, digits=3)),
        )
        for index, (header, value) in enumerate(cells):
            x = 10 + index * 135
            draw.text((x, 8), header, font=_font(15), fill=ink)
            draw.text((x, 30), value, font=_font(19), fill=ink)
            draw.line((x + 128, 6, x + 128, 58), fill=ink, width=1)
        right = IMAGE_WIDTH - 30
        _draw_scale_bar(draw, bar, right - bar.scale_bar_pixels, 48, ink, label_above=True)
    else:
        x = 16
        for text in (bar.detector, bar.high_voltage_label, bar.magnification_label):
            draw.text((x, height / 2), text, font=_font(21), fill=ink, anchor="lm")
            x += draw.textlength(text, font=_font(21)) + 36
        x = _draw_scale_bar(draw, bar, x, height / 2, ink, label_above=False) + 36
        draw.text((x, height / 2), f"WD {bar.working_distance_label}", font=_font(21), fill=ink, anchor="lm")
    return image


def _draw_scale_bar(draw: ImageDraw.ImageDraw, bar: DataBar, x: float, y: float, ink: int, label_above: bool) -> float:
    """Draws the bar (with end ticks) and its label; returns the right-most x used."""
    end = x + bar.scale_bar_pixels
    draw.rectangle((x, y - 3, end, y + 3), fill=ink)
    draw.line((x, y - 9, x, y + 9), fill=ink, width=2)
    draw.line((end, y - 9, end, y + 9), fill=ink, width=2)
    if label_above:
        draw.text(((x + end) / 2, y - 14), bar.scale_label, font=_font(19), fill=ink, anchor="mb")
        return end
    draw.text((end + 12, y), bar.scale_label, font=_font(21), fill=ink, anchor="lm")
    return end + 12 + draw.textlength(bar.scale_label, font=_font(21))


# ---------------------------------------------------------------------------------------------------- imaging
def _sample_look(rng, category: str, detector: str) -> Look:
    black = rng.uniform(0.0, 0.3)
    return Look(
        gamma=_log_uniform(rng, 0.7, 1.5),
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
        0.3
        + 0.5 * np.clip(relief, -1, 1.5)
        + edges * (0.6 + look.directional_shading * facing)
        + 0.4 * canvas.material
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


def _specimen_pixels(canvas: Canvas, look: Look, rng) -> np.ndarray:
    displayed = Image.fromarray(_display(_secondary_electron_signal(canvas, look), look), mode="F")
    image = np.array(displayed.resize((canvas.width, canvas.height), Image.BICUBIC), np.float32)
    _detector_noise(image, look, rng)
    if look.charging:
        _charging(image, rng)
    image *= np.float32(255)
    image += np.float32(0.5)
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


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
    instrument = _sample_instrument(rng, chosen)
    data_bar = _sample_data_bar(rng, instrument) if rng.random() < DATA_BAR_SHARE[category] else None
    return chosen, instrument, data_bar


def draw_micrograph(
    category: str, rng: np.random.Generator, subtype: str | None = None
) -> tuple[Image.Image, Micrograph]:
    """One synthetic SEM image (RGB, 1024x768) of `category` and the description the teacher answers from.

    The sub-type is drawn at random unless `subtype` names one of `SUBTYPES[category]`.
    """
    chosen, instrument, data_bar = sample_acquisition(category, rng, subtype)
    canvas = Canvas(IMAGE_WIDTH, data_bar.top_row if data_bar else IMAGE_HEIGHT)
    morphology = chosen.draw(canvas, rng)
    look = _sample_look(rng, category, instrument.detector)
    image = Image.new("L", (IMAGE_WIDTH, IMAGE_HEIGHT))
    image.paste(Image.fromarray(_specimen_pixels(canvas, look, rng), mode="L"), (0, 0))
    if data_bar:
        image.paste(_render_data_bar(data_bar, IMAGE_WIDTH * instrument.nm_per_pixel), (0, data_bar.top_row))
    micrograph = Micrograph(category, chosen.name, instrument, data_bar, morphology, look)
    return image.convert("RGB"), micrograph
