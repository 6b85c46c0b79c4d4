"""Powder: agglomerated heaps, fine powder, coarse angular grains and flakes."""

from __future__ import annotations

import numpy as np

from ..canvas import Canvas
from ..geometry import (
    clustered_points,
    coefficient_of_variation,
    crystal_facets,
    inside_field,
    irregular_polygons,
    jittered_grid,
    pick_points,
    size_range,
)
from ..scene import Morphology
from .shared import count_words, paint_substrate


def _powder_grains(canvas: Canvas, rng, median_radius, spread, centres, roughness):
    """Irregular grains with log-normal sizes; large grains first, so small ones settle on top."""
    radii = median_radius * np.exp(spread * rng.standard_normal(len(centres)))
    order = np.argsort(-radii)
    centres, radii = centres[order], radii[order]
    polygons = irregular_polygons(rng, centres, radii, (5, 9), roughness, rng.uniform(1.0, 1.5))
    canvas.polygons(polygons, heights=rng.uniform(0.6, 1.1, len(radii)), blur=rng.uniform(2, 5))
    return centres, radii


def draw_agglomerated(canvas: Canvas, rng) -> Morphology:
    heaps = int(rng.integers(2, 6))
    median = rng.uniform(12, 35)
    centres = clustered_points(rng, canvas.width, canvas.height, heaps, rng.uniform(12, 40), rng.uniform(60, 160))
    surroundings = paint_substrate(canvas, rng)
    centres, radii = _powder_grains(canvas, rng, median, rng.uniform(0.45, 0.7), centres, 0.35)
    canvas.add_relief(canvas.noise(rng, 8, 0.12) * (canvas.relief > 0.3))
    return Morphology(
        structure="an agglomerated powder of irregular grains",
        shape="irregular, angular grains of very different sizes piled into agglomerates",
        feature="grain size",
        size_px=size_range(2 * radii[inside_field(centres, canvas)]),
        count=int(inside_field(centres, canvas).sum()),
        distribution="clustered",
        arrangement=f"{count_words(heaps)} heaps of piled grains",
        aggregation=f"strong agglomeration: grains are piled into {count_words(heaps)} loose heaps",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        populations=2,
        surface="rough and granular",
        contact="touching",
        boundaries="soft",
        surroundings=surroundings + " (sample holder or carbon tape)",
        domains="overlapping grains in several layers, with fine grains lying on coarse ones",
        functional="the exposed grain surfaces and inter-grain voids; no engineered functional regions",
    )


def draw_fine(canvas: Canvas, rng) -> Morphology:
    median = rng.uniform(5, 14)
    centres = jittered_grid(
        rng, canvas.width, canvas.height, median * rng.uniform(1.6, 2.6), 0.5, occupancy=rng.uniform(0.6, 1.0)
    )
    surroundings = paint_substrate(canvas, rng)
    centres, radii = _powder_grains(canvas, rng, median, rng.uniform(0.3, 0.55), centres, 0.3)
    inside = inside_field(centres, canvas)
    return Morphology(
        structure="a fine powder of small irregular grains",
        shape="small, irregular grains with angular outlines",
        feature="grain size",
        size_px=size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="grains densely spread over the whole field",
        aggregation="loose agglomeration; many grains touch their neighbours",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        surface="rough and granular",
        contact="touching",
        surroundings=surroundings,
        domains="a dense layer of grains with dark gaps between them",
        functional="the large total surface of the fine grains; no distinct functional regions",
    )


def draw_coarse(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(4, 14))
    centres = pick_points(rng, jittered_grid(rng, canvas.width, canvas.height, rng.uniform(180, 280), 0.3), count)
    surroundings = paint_substrate(canvas, rng)
    radii = rng.uniform(50, 110) * np.exp(rng.uniform(0.2, 0.4) * rng.standard_normal(len(centres)))
    canvas.polygons(
        *crystal_facets(rng, irregular_polygons(rng, centres, radii, (5, 7), 0.15, rng.uniform(1.0, 1.4))), blur=1.5
    )
    fines = rng.uniform([0, 0], [canvas.width, canvas.height], (int(rng.integers(20, 80)), 2))
    canvas.polygons(irregular_polygons(rng, fines, rng.uniform(3, 9, len(fines))), heights=1.2, blur=1.0)
    return Morphology(
        structure="coarse, angular powder grains with fine debris",
        shape="large, angular, faceted grains with sharp edges and flat fracture faces",
        feature="grain size",
        size_px=size_range(2 * radii),
        count=len(radii),
        distribution="random",
        aggregation="little agglomeration; fine fragments are scattered between and on the coarse grains",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        populations=2,
        surface="faceted, with conchoidal fracture faces",
        defects=("fine fragments and chips from milling",),
        contact="separate",
        surroundings=surroundings,
        domains="coarse grains with a second population of fine fragments",
        functional="fracture faces and sharp edges; no engineered functional regions",
    )


def draw_flakes(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(15, 60))
    centres = rng.uniform([0, 0], [canvas.width, canvas.height], (count, 2))
    radii = rng.uniform(30, 110) * np.exp(0.35 * rng.standard_normal(count))
    surroundings = paint_substrate(canvas, rng)
    canvas.polygons(
        irregular_polygons(rng, centres, radii, (5, 9), 0.25, 1.3), heights=np.linspace(0.4, 1.1, count), blur=1.0
    )
    return Morphology(
        structure="a powder of thin, plate-like flakes",
        shape="thin, flat flakes with irregular outlines and sharp edges",
        feature="flake width",
        size_px=size_range(2 * radii[inside_field(centres, canvas)]),
        count=int(inside_field(centres, canvas).sum()),
        distribution="random",
        aggregation="flakes overlap and stack on one another",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        surface="smooth, flat basal faces",
        contact="touching",
        surroundings=surroundings,
        domains="stacked layers of overlapping flakes at different heights",
        functional="the flat basal planes and exposed flake edges",
    )
