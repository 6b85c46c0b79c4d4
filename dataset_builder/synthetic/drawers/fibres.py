"""Fibres: non-woven mats, aligned fibres, a single fibre, woven fabric."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import any_paths_touch, coefficient_of_variation, size_range, wandering_paths
from ..scene import Morphology
from .shared import paint_substrate


def _straight_fibres(canvas: Canvas, rng, count, mean_angle, angle_spread, diameter):
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    headings = mean_angle + rng.normal(0, angle_spread, count)
    half = math.hypot(canvas.width, canvas.height)
    starts = centres - half * np.column_stack([np.cos(headings), np.sin(headings)])
    paths = wandering_paths(rng, starts, headings, 12, 2 * half / 12, rng.uniform(0.0, 0.04))
    diameters = diameter * np.clip(1 + 0.15 * rng.standard_normal(count), 0.6, 1.5)
    canvas.paths(paths, diameters, heights=np.linspace(0.3, 1.1, count), dome=0.5)
    return paths, diameters


def draw_mat(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(15, 50))
    _, diameters = _straight_fibres(canvas, rng, count, 0.0, math.pi, rng.uniform(8, 36))
    return Morphology(
        structure="a non-woven mat of randomly oriented fibres, as from electrospinning",
        shape="long, straight to gently curved cylindrical fibres crossing in all directions, longer than the field",
        feature="fibre diameter",
        size_px=size_range(diameters),
        count=count,
        distribution="random",
        arrangement="fibres crossing at random angles in several layers",
        aggregation="no bundling; fibres overlap at crossings",
        size_spread=coefficient_of_variation(diameters),
        contact="crossing",
        surroundings="no substrate visible; deeper fibres fade into the dark background",
        domains="several overlapping layers of fibres, the upper ones brighter",
        functional="the open inter-fibre pores of the mat",
    )


def draw_aligned(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(10, 40))
    paths, diameters = _straight_fibres(
        canvas, rng, count, rng.uniform(0, math.pi), rng.uniform(0.03, 0.12), rng.uniform(10, 40)
    )
    touching = any_paths_touch(canvas, paths, diameters)
    return Morphology(
        structure="aligned fibres running mostly in one direction",
        shape="long cylindrical fibres lying nearly parallel to each other, longer than the field",
        feature="fibre diameter",
        size_px=size_range(diameters),
        count=count,
        distribution="aligned",
        arrangement="fibres aligned along one direction with small angular deviations",
        aggregation="some fibres run side by side in loose bundles"
        if touching
        else "no bundling; the fibres run apart",
        size_spread=coefficient_of_variation(diameters),
        contact="touching" if touching else "separate",
        surroundings="no substrate visible beneath the aligned fibres",
        domains="stacked layers of parallel fibres, with no distinct phases",
        functional="the common fibre orientation, which gives anisotropic mechanical properties",
    )


def draw_single(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(1, 3))
    paths, diameters = _straight_fibres(canvas, rng, count, rng.uniform(0, math.pi), 0.3, rng.uniform(90, 280))
    canvas.add_relief(canvas.noise(rng, rng.uniform(6, 14), 0.12) * (canvas.relief > 0.2))
    surroundings = paint_substrate(canvas, rng)
    return Morphology(
        structure=f"{'a single thick fibre' if count == 1 else 'two thick fibres'} seen close up",
        shape="thick cylindrical fibre bodies with a finely textured surface",
        feature="fibre diameter",
        size_px=size_range(diameters),
        count=count,
        distribution="single" if count == 1 else "random",
        aggregation="no bundling; the thick fibres lie on their own",
        size_spread=coefficient_of_variation(diameters),
        surface="finely textured, with small grooves and nodules",
        contact="single" if count == 1 else "crossing" if any_paths_touch(canvas, paths, diameters) else "separate",
        surroundings=surroundings,
        populations=2,
        domains="the fibre body and a fine surface texture on a smaller scale",
        functional="the textured fibre surface, which increases surface area and adhesion",
    )


def _yarn(across: np.ndarray) -> np.ndarray:
    """Height profile across a yarn (-1..1): a rounded bundle with the ridges of its individual fibres."""
    return np.sqrt(np.clip(1 - across * across, 0, 1)) * (1 + 0.08 * np.sin(across * 14))


def draw_woven(canvas: Canvas, rng) -> Morphology:
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
