"""Biological specimens: cells, bacteria, pollen or spores, fibril networks."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import clustered_points, coefficient_of_variation, irregular_polygons, scattered_discs, size_range
from ..scene import Morphology
from .shared import paint_substrate, paint_wires


def draw_cells(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(50, 110)
    centres, radii = scattered_discs(
        rng, canvas.width, canvas.height, radius, 0.25, radius * rng.uniform(2.8, 4), rng.uniform(0.4, 0.9), 1.2
    )
    surroundings = paint_substrate(canvas, rng)
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
        irregular_polygons(rng, centres, radii, (9, 14), 0.15), heights=0.8, blur=float(np.median(radii)) * 0.12
    )
    canvas.add_relief(canvas.noise(rng, 7, 0.15) * (canvas.relief > 0.3))
    return Morphology(
        structure="adherent cells spread on a substrate",
        shape="rounded, flattened cell bodies with wrinkled membranes and thin protrusions",
        feature="cell diameter",
        size_px=size_range(2 * radii),
        count=len(radii),
        distribution="random",
        aggregation="no aggregation; the cells stand apart, linked at most by their thin protrusions",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        populations=2,
        surface="wrinkled and rough cell membranes",
        contact="separate",
        boundaries="soft",
        surroundings=surroundings + " to which the cells adhere through thin protrusions (filopodia)",
        domains="cell bodies, thin protrusions and the substrate",
        functional="the filopodia anchoring the cells to the substrate",
    )


def draw_bacteria(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(12, 35)
    length = width * rng.uniform(2, 5)
    clustered = rng.random() < 0.5
    if clustered:  # colonies: cells pile up against each other
        centres = clustered_points(
            rng, canvas.width, canvas.height, int(rng.integers(3, 8)), rng.uniform(5, 25), rng.uniform(60, 140)
        )
        lengths = length * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.5)
    else:  # dispersed cells, each clear of its neighbours whatever its orientation
        centres, halves = scattered_discs(
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
    surroundings = paint_substrate(canvas, rng)
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
        length_px=size_range(lengths),
        count=len(centres),
        distribution="clustered" if clustered else "random",
        aggregation="cells gather in colonies, touching end to end and side by side"
        if clustered
        else "no aggregation; the cells lie separately on the surface",
        size_spread=coefficient_of_variation(lengths),
        contact="touching" if clustered else "separate",
        surroundings=surroundings,
        domains="bacterial cells on the substrate, without an extracellular matrix",
        functional="the colonies, early stages of a biofilm"
        if clustered
        else "individual cells; no distinct functional regions",
    )


def draw_pollen(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(60, 130)
    centres, radii = scattered_discs(
        rng, canvas.width, canvas.height, radius, 0.15, radius * rng.uniform(3.4, 4.5), rng.uniform(0.3, 0.9), 1.05
    )
    surroundings = paint_substrate(canvas, rng)
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
        size_px=size_range(2 * radii),
        count=len(radii),
        distribution="random" if len(radii) > 1 else "single",
        aggregation="no aggregation; the grains lie apart from each other",
        size_spread=coefficient_of_variation(radii),
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


def draw_fibrils(canvas: Canvas, rng) -> Morphology:
    _, diameters, lengths = paint_wires(
        canvas, rng, int(rng.integers(20, 70)), rng.uniform(8, 20), rng.uniform(400, 900), rng.uniform(0.03, 0.1), 200
    )
    canvas.add_relief(canvas.noise(rng, 30, 0.005))
    return Morphology(
        structure="a network of collagen-like fibrils of an extracellular matrix",
        shape="long, gently curving fibrils forming a loose mesh",
        feature="fibril diameter",
        size_px=size_range(diameters),
        length_px=size_range(lengths),
        count=len(diameters),
        distribution="random",
        aggregation="fibrils cross and partly bundle together",
        size_spread=coefficient_of_variation(diameters),
        contact="crossing",
        surroundings="a tissue background beneath the fibril mesh",
        domains="several overlapping layers of fibrils, with no distinct phases",
        functional="the fibril mesh, the mechanical scaffold of the tissue",
    )
