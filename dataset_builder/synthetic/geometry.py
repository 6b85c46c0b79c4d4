"""Placement and outline geometry shared by the drawers: grids, lattices, clusters, polygons, wandering paths.

Points are image-pixel (x, y) pairs, arrays [count, 2]; polygons and paths are arrays [vertices, 2].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from .canvas import Canvas


def jittered_grid(rng, width, height, spacing, jitter=0.5, occupancy=1.0, margin=0.0) -> np.ndarray:
    """Points on a square grid of `spacing`, each moved by up to `jitter` * spacing, a random `occupancy` kept.

    With jitter < 0.5 no two points come closer than spacing * (1 - 2 * jitter): dispersed but not overlapping.
    """
    xs = np.arange(-margin + spacing / 2, width + margin, spacing)
    ys = np.arange(-margin + spacing / 2, height + margin, spacing)
    points = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    points = points + rng.uniform(-jitter, jitter, points.shape) * spacing
    return points[rng.random(len(points)) < occupancy]


def scattered_discs(
    rng, width, height, radius, spread, spacing, occupancy=1.0, reach=1.0
) -> tuple[np.ndarray, np.ndarray]:
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


def pick_points(rng, points: np.ndarray, count: int) -> np.ndarray:
    return points[rng.permutation(len(points))[:count]]


def lattice_points(rng, width, height, pitch, kind="square", margin=0.0) -> tuple[np.ndarray, float]:
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


def clustered_points(rng, width, height, clusters, members, spread) -> np.ndarray:
    """`clusters` groups of about `members` points, Gaussian with `spread` pixels around random centres."""
    centres = rng.uniform([0, 0], [width, height], (clusters, 2))
    sizes = np.maximum(1, rng.poisson(members, clusters))
    return np.concatenate([centre + rng.normal(0, spread, (size, 2)) for centre, size in zip(centres, sizes)])


def touching_cluster(rng, centre, radii, extent) -> tuple[np.ndarray, np.ndarray]:
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


def regular_polygons(rng, centres, radii, sides, rotation=None) -> list[np.ndarray]:
    """Regular polygons (triangles, squares, hexagons) with a common or random rotation."""
    count = len(centres)
    rotation = rng.uniform(0, 2 * math.pi, count) if rotation is None else np.full(count, rotation)
    angles = rotation[:, None] + np.arange(sides)[None, :] * (2 * math.pi / sides)
    radii = np.asarray(radii, float)[:, None]
    xs = centres[:, 0, None] + radii * np.cos(angles)
    ys = centres[:, 1, None] + radii * np.sin(angles)
    return list(np.stack([xs, ys], axis=-1))


def irregular_polygons(rng, centres, radii, vertices=(5, 9), roughness=0.3, elongation=1.0) -> list[np.ndarray]:
    """Angular grains: random vertex angles and radii, stretched by `elongation` along a random axis."""
    count, sides = len(centres), int(rng.integers(vertices[0], vertices[1] + 1))
    angles = np.sort(rng.uniform(0, 2 * math.pi, (count, sides)), axis=1)
    lengths = np.asarray(radii, float)[:, None] * (1 + roughness * rng.uniform(-1, 1, (count, sides)))
    along, across = lengths * np.cos(angles) * elongation, lengths * np.sin(angles)
    theta = rng.uniform(0, math.pi, count)[:, None]
    xs = along * np.cos(theta) - across * np.sin(theta)
    ys = along * np.sin(theta) + across * np.cos(theta)
    return list(np.stack([xs, ys], axis=-1) + np.asarray(centres, float)[:, None, :])


def wandering_paths(rng, starts, headings, steps, step_px, curl) -> np.ndarray:
    """Smoothly curving polylines [count, steps + 1, 2]: headings take random turns of `curl` radians a step."""
    turns = np.cumsum(rng.normal(0, curl, (len(starts), steps)), axis=1) + np.asarray(headings)[:, None]
    moves = np.stack([np.cos(turns), np.sin(turns)], axis=-1) * step_px
    return np.concatenate(
        [np.asarray(starts, float)[:, None, :], starts[:, None, :] + np.cumsum(moves, axis=1)], axis=1
    )


def rectangle_corners(x0, y0, x1, y1) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def crystal_facets(rng, polygons: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Split each polygon into triangles around an off-centre apex, each facet at its own height, so that
    facets differ in brightness and meet at bright ridges like the faces of a crystal."""
    triangles, heights = [], []
    for polygon in polygons:
        apex = polygon.mean(axis=0) + rng.normal(0, 0.15, 2) * np.ptp(polygon, axis=0)
        for start, end in zip(polygon, np.roll(polygon, -1, axis=0)):
            triangles.append(np.array([apex, start, end]))
        heights.extend(rng.uniform(0.6, 1.1, len(polygon)))
    return triangles, np.array(heights)


def any_paths_touch(canvas: Canvas, paths: Sequence[np.ndarray], widths: np.ndarray) -> bool:
    """Whether two of the polylines overlap anywhere in the field, judged on the canvas raster."""
    coverage = np.zeros(canvas.shape, np.uint8)
    for path, width in zip(paths, widths):
        layer = Image.new("L", canvas.shape[::-1])
        points = [tuple(point) for point in np.asarray(path, float) * canvas.scale]
        ImageDraw.Draw(layer).line(points, fill=1, width=max(1, round(width * canvas.scale)), joint="curve")
        coverage += np.asarray(layer)
    return bool((coverage > 1).any())


def coefficient_of_variation(sizes: np.ndarray) -> float:
    return float(np.std(sizes) / np.mean(sizes)) if len(sizes) > 1 else 0.0


def inside_field(points: np.ndarray, canvas: Canvas) -> np.ndarray:
    return (points[:, 0] >= 0) & (points[:, 0] < canvas.width) & (points[:, 1] >= 0) & (points[:, 1] < canvas.height)


def size_range(sizes) -> tuple[float, float]:
    sizes = np.asarray(sizes, float)
    return float(sizes.min()), float(sizes.max())


def stripes_in_view(across: np.ndarray, pitch: float, stripes: np.ndarray) -> int:
    """How many periodic stripes (index = across // pitch) show at least one pixel in the field."""
    return int(np.unique(np.floor(np.broadcast_to(across, stripes.shape)[stripes] / pitch)).size)
