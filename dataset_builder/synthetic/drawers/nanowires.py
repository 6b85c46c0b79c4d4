"""Nanowires: entangled mats, a few wires, an individual wire, vertical forests."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import (
    any_paths_touch,
    coefficient_of_variation,
    inside_field,
    jittered_grid,
    size_range,
    wandering_paths,
)
from ..scene import Morphology
from .shared import count_words, paint_substrate, paint_wires, scatter_debris


def draw_entangled(canvas: Canvas, rng) -> Morphology:
    _, diameters, lengths = paint_wires(
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
        size_px=size_range(diameters),
        length_px=size_range(lengths),
        count=len(diameters),
        distribution="random",
        arrangement="a dense, randomly oriented mesh",
        aggregation="strong entanglement; wires cross and occasionally bundle together",
        size_spread=coefficient_of_variation(diameters),
        contact="crossing",
        surroundings="a substrate largely hidden beneath the wire mesh",
        domains="several overlapping layers of wires",
        functional="the wire-wire junctions of the percolating network, which carry current or heat",
    )


def draw_few(canvas: Canvas, rng) -> Morphology:
    surroundings = paint_substrate(canvas, rng)
    paths, diameters, lengths = paint_wires(
        canvas, rng, int(rng.integers(2, 7)), rng.uniform(8, 24), rng.uniform(250, 600), rng.uniform(0.0, 0.06)
    )
    count, touching = len(paths), any_paths_touch(canvas, paths, diameters)
    return Morphology(
        structure=f"a few ({count_words(count)}) straight nanowires lying on a substrate",
        shape="straight or slightly bent wires with uniform diameter",
        feature="wire diameter",
        size_px=size_range(diameters),
        length_px=size_range(lengths),
        count=count,
        distribution="random",
        arrangement="isolated wires at random orientations",
        aggregation="no bundling, though some wires cross or touch" if touching else "no bundling; the wires lie apart",
        size_spread=coefficient_of_variation(diameters),
        contact="crossing" if touching else "separate",
        defects=scatter_debris(canvas, rng, 0.4),
        surroundings=surroundings,
        domains="a single layer of wires lying on a flat substrate",
        functional="the individual wires, each a possible single-wire device channel",
    )


def draw_individual(canvas: Canvas, rng) -> Morphology:
    diameter = rng.uniform(30, 90)
    surroundings = paint_substrate(canvas, rng)
    start = np.array([[rng.uniform(-50, 0.2 * canvas.width), rng.uniform(0.2, 0.8) * canvas.height]])
    heading = rng.uniform(-0.6, 0.6)
    length = canvas.width * rng.uniform(0.6, 1.2)
    path = wandering_paths(rng, start, [heading], 8, length / 8, 0.02)
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


def draw_forest(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(30, 60)
    spacing = rng.uniform(16, 40)
    bases = jittered_grid(rng, canvas.width, canvas.height + 200, spacing, 0.5)
    bases = bases[np.argsort(bases[:, 1])]  # far rows first, near rows drawn over them
    length = rng.uniform(60, 220) * math.sin(math.radians(tilt))
    lengths = length * rng.uniform(0.7, 1.2, len(bases))
    lean = rng.normal(0, 0.12, len(bases))
    tops = bases + np.column_stack([lengths * lean, -lengths])
    diameter = spacing * rng.uniform(0.2, 0.4)
    canvas.paths(np.stack([bases, tops], axis=1), diameter, heights=np.linspace(0.5, 1.1, len(bases)), dome=0.6)
    canvas.discs(tops, np.full(len(tops), diameter * 0.6), heights=1.2, dome=0.4)
    visible = inside_field(tops, canvas)
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
