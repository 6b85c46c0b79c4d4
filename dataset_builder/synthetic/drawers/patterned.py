"""Patterned surfaces: circle, line, square and triangle arrays, zigzags and pillars."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import inside_field, lattice_points, regular_polygons, stripes_in_view
from ..scene import Morphology
from .shared import count_words


def _array_morphology(*, kind, feature_px, pitch, lattice, angle, missing, arrangement=None, **fields) -> Morphology:
    """The description shared by all periodic patterns; `fields` adds or overrides Morphology fields."""
    defects = (f"{count_words(missing)} missing element{'s' if missing > 1 else ''}",) if missing else ()
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


def draw_circles(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(30, 110)
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = lattice_points(rng, canvas.width, canvas.height, pitch, lattice, margin=pitch)
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
        count=int(inside_field(points, canvas).sum()),
    )


def draw_lines(canvas: Canvas, rng) -> Morphology:
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
        count=stripes_in_view(across, pitch, lines),
        arrangement=f"parallel lines, {direction} in the frame",
    )


def draw_squares(canvas: Canvas, rng) -> Morphology:
    pitch = rng.uniform(35, 110)
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = lattice_points(rng, canvas.width, canvas.height, pitch, lattice, margin=pitch)
    keep, missing = _missing_elements(rng, len(points))
    points = points[keep]
    radius = pitch * rng.uniform(0.25, 0.4)
    squares = regular_polygons(rng, points, np.full(len(points), radius), 4, rotation=math.radians(angle) + math.pi / 4)
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
        count=int(inside_field(points, canvas).sum()),
    )


def draw_triangles(canvas: Canvas, rng) -> Morphology:
    """Nanosphere lithography: metal deposited through the gaps of a hexagonal monolayer of spheres leaves
    triangles in the two kinds of gap, pointing in alternate directions."""
    pitch = rng.uniform(35, 110)
    spheres, angle = lattice_points(rng, canvas.width, canvas.height, pitch, "hexagonal", margin=pitch)
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    gaps = [
        np.array([pitch / 2, pitch * math.sqrt(3) / 6]) @ rotation.T,
        np.array([0, pitch / math.sqrt(3)]) @ rotation.T,
    ]
    radius = pitch * rng.uniform(0.13, 0.2)
    triangles = []
    for offset, turn in zip(gaps, (-math.pi / 2, math.pi / 2)):
        triangles += regular_polygons(rng, spheres + offset, np.full(len(spheres), radius), 3, rotation=theta + turn)
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
        count=int(inside_field(centres, canvas).sum()),
    )


def draw_zigzag(canvas: Canvas, rng) -> Morphology:
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


def draw_pillars(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(25, 55)
    pitch = rng.uniform(45, 130)
    foreshortening = math.cos(math.radians(tilt))
    lattice = rng.choice(["square", "hexagonal"])
    points, angle = lattice_points(
        rng, canvas.width, canvas.height / foreshortening + 200, pitch, lattice, margin=pitch
    )
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
        count=int(inside_field(tops, canvas).sum()),
        length_px=(height, height),
        view=f"tilted view (about {tilt:.0f}°)",
    )
