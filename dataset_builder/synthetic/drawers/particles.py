"""Particles: dispersed spheres, a few individual particles, faceted or rod-like shapes, small clusters."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import (
    coefficient_of_variation,
    crystal_facets,
    inside_field,
    irregular_polygons,
    jittered_grid,
    pick_points,
    regular_polygons,
    scattered_discs,
    size_range,
    touching_cluster,
)
from ..scene import Morphology
from .shared import count_words, paint_substrate, scatter_debris


def draw_dispersed(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(5, 28)
    spacing = radius * rng.uniform(3.4, 6.5)
    centres, radii = scattered_discs(
        rng, canvas.width, canvas.height, radius, rng.uniform(0.04, 0.3), spacing, rng.uniform(0.6, 1.0)
    )
    surroundings = paint_substrate(canvas, rng)
    # Sometimes a mixture: a brighter share of particles made of a heavier element (Z contrast).
    mixed = rng.random() < 0.3
    materials = np.where(rng.random(len(radii)) < 0.35, 0.6, 0.0) if mixed else None
    canvas.discs(centres, radii, heights=1.0, dome=rng.uniform(0.35, 0.6), materials=materials)
    inside = inside_field(centres, canvas)
    return Morphology(
        composition=(
            "two particle populations of different brightness, suggesting two compositions (heavier elements brighter)"
            if mixed
            else "uniform material contrast; brightness changes come from topography and edges"
        ),
        structure="well-dispersed, roughly spherical nanoparticles on a substrate",
        shape="spherical particles with round, smooth outlines",
        feature="particle diameter",
        size_px=size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="isolated particles scattered across the field",
        aggregation="no aggregation; the particles are well dispersed with gaps between them",
        size_spread=coefficient_of_variation(radii),
        surroundings=surroundings,
        defects=scatter_debris(canvas, rng, 0.2),
        functional="the particle surfaces, which carry the material's active area; no other distinct regions",
    )


def draw_individual(canvas: Canvas, rng) -> Morphology:
    count = int(rng.integers(1, 4))
    if count == 1:
        radii = rng.uniform(70, 230, 1)
        centres = np.array([[rng.uniform(0.35, 0.65) * canvas.width, rng.uniform(0.35, 0.65) * canvas.height]])
    else:  # apart from each other: grid cells wider than two of the largest particles
        radii = rng.uniform(60, 140, count)
        centres = pick_points(rng, jittered_grid(rng, canvas.width, canvas.height, 340, 0.05), count)
    faceted = rng.random() < 0.5
    surroundings = paint_substrate(canvas, rng)
    if faceted:
        canvas.polygons(*crystal_facets(rng, irregular_polygons(rng, centres, radii, (6, 8), 0.08)), blur=1.5)
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
    shape = "faceted, polyhedral particles with flat facets and sharp edges" if faceted else "large spherical particles"
    return Morphology(
        structure=f"{count_words(count)} individual large particle{'s' if count > 1 else ''} at high magnification",
        shape=shape + (" decorated with much smaller satellite particles" if satellites else " with clean surfaces"),
        feature="particle diameter",
        size_px=size_range(2 * radii),
        count=count,
        distribution="single" if count == 1 else "random",
        aggregation="small satellite particles cling to the large particles"
        if satellites
        else "no aggregation; the particles stand alone on the substrate",
        size_spread=coefficient_of_variation(radii),
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


def draw_other_shape(canvas: Canvas, rng) -> Morphology:
    kind = rng.choice(["cubes", "triangular plates", "rods", "hexagonal plates"])
    radius = rng.uniform(10, 40)
    reach = 1.4 if kind == "rods" else 1.0
    spacing = radius * reach * rng.uniform(3.4, 5.0)
    centres, radii = scattered_discs(
        rng, canvas.width, canvas.height, radius, rng.uniform(0.05, 0.2), spacing, rng.uniform(0.6, 1.0), reach
    )
    surroundings = paint_substrate(canvas, rng)
    length = None
    if kind == "rods":
        headings = rng.uniform(0, math.pi, len(centres))
        offsets = np.column_stack([np.cos(headings), np.sin(headings)]) * radii[:, None] * 1.1
        canvas.paths(np.stack([centres - offsets, centres + offsets], axis=1), radii * 0.55, heights=1.0, dome=0.5)
        sizes, length = radii * 0.55, size_range(radii * 2.2 + radii * 0.55)
    else:
        sides = {"cubes": 4, "triangular plates": 3, "hexagonal plates": 6}[kind]
        canvas.polygons(
            regular_polygons(rng, centres, radii, sides), heights=rng.uniform(0.7, 1.0, len(centres)), blur=1.5
        )
        sizes = radii * (math.sqrt(2) if sides == 4 else math.sqrt(3) if sides == 3 else 2.0)
    inside = inside_field(centres, canvas)
    feature = "rod diameter" if kind == "rods" else "edge length" if kind != "hexagonal plates" else "plate width"
    return Morphology(
        structure=f"non-spherical nanoparticles shaped as {kind}",
        shape=f"{kind} with straight edges and well-defined corners"
        if kind != "rods"
        else "short rods with rounded ends",
        feature=feature,
        size_px=size_range(sizes[inside]),
        length_px=length,
        count=int(inside.sum()),
        distribution="random",
        arrangement="randomly oriented particles scattered across the field",
        aggregation="no aggregation; the particles lie apart from each other",
        size_spread=coefficient_of_variation(sizes),
        surface="smooth, flat faces",
        contact="separate",
        surroundings=surroundings,
        functional="the flat crystal facets, which give such shaped particles distinct surface properties",
    )


def draw_small_clusters(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(6, 22)
    extent = 5 * radius
    centres, _ = scattered_discs(rng, canvas.width, canvas.height, extent, 0.0, extent * 2.4, rng.uniform(0.3, 0.8))
    wanted = rng.integers(3, 13, len(centres))
    members, radii = zip(
        *(
            touching_cluster(rng, centre, radius * np.clip(1 + 0.15 * rng.standard_normal(size), 0.6, 1.4), extent)
            for centre, size in zip(centres, wanted)
        )
    )
    sizes = np.array([len(cluster) for cluster in radii])
    clusters = len(centres)
    members, radii = np.concatenate(members), np.concatenate(radii)
    surroundings = paint_substrate(canvas, rng)
    canvas.discs(members, radii, heights=rng.uniform(0.85, 1.0, len(radii)), dome=0.3)
    return Morphology(
        structure="nanoparticles gathered into small clusters",
        shape="roughly spherical particles grouped into small, compact clusters",
        feature="particle diameter",
        size_px=size_range(2 * radii),
        count=int(inside_field(members, canvas).sum()),
        distribution="clustered",
        arrangement=f"about {clusters} separate clusters of {sizes.min()}-{sizes.max()} particles",
        aggregation=f"clear aggregation into about {clusters} small clusters of touching particles",
        size_spread=coefficient_of_variation(radii),
        contact="touching",
        surroundings=surroundings,
        domains="clusters of particles and bare substrate between them",
        functional="the clusters, whose contact points and crevices differ from the free particle surface",
    )
