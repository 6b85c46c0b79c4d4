"""Films and coated surfaces: particle films, smooth films with grains, cracked and wrinkled films."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import coefficient_of_variation, inside_field, jittered_grid, size_range
from ..scene import Morphology
from .shared import count_words, scatter_debris


def draw_particle(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(5, 16)
    centres = jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(1.5, 1.9), 0.3, margin=radius)
    radii = radius * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.5)
    canvas.discs(centres, radii, heights=rng.uniform(0.7, 1.0, len(radii)), dome=0.5)
    inside = inside_field(centres, canvas)
    return Morphology(
        structure="a granular film made of densely packed nanoparticles",
        shape="a continuous coating of closely packed, rounded grains",
        feature="grain diameter",
        size_px=size_range(2 * radii[inside]),
        distribution="continuous",
        arrangement="grains packed edge to edge over the whole surface",
        aggregation="the grains are packed into a continuous layer rather than separate aggregates",
        size_spread=coefficient_of_variation(radii),
        surface="granular and slightly rough",
        defects=scatter_debris(canvas, rng, 0.3),
        contact="fused",
        boundaries="soft",
        surroundings="the coated substrate, fully covered by the film",
        domains="a single granular film layer covering the substrate",
        functional="the grain boundaries and the large surface of the granular coating",
    )


def draw_smooth(canvas: Canvas, rng) -> Morphology:
    undulation = rng.uniform(30, 120)
    canvas.add_relief(canvas.noise(rng, undulation, rng.uniform(0.005, 0.02)) + 0.5, "add")
    defects: list[str] = []
    pinholes = int(rng.integers(0, 15))
    sizes = np.array([undulation * 0.5, undulation])
    if pinholes:
        centres = rng.uniform([0, 0], [canvas.width, canvas.height], (pinholes, 2))
        sizes = 2 * rng.uniform(3, 10, pinholes)
        canvas.discs(centres, sizes / 2, heights=-0.3, dome=0.3, mode="min")
        defects.append(f"{count_words(pinholes)} small pinhole{'s' if pinholes > 1 else ''}")
    edge = rng.random() < 0.4
    if edge:
        # The edge of the coating: the substrate shows beyond a step.
        x0, x1 = rng.uniform(0.1, 0.9, 2) * canvas.width
        substrate = np.array(
            [[x0, -10], [x1, canvas.height + 10], [canvas.width + 10, canvas.height + 10], [canvas.width + 10, -10]]
        )
        canvas.polygons([substrate], heights=0.0, blur=3.0, mode="min")
    defects.extend(scatter_debris(canvas, rng, 0.5))
    return Morphology(
        structure="a smooth, continuous thin film" + (" ending at a film edge" if edge else ""),
        shape="a flat, featureless, continuous coating"
        + (" with a straight film edge exposing the substrate" if edge else ""),
        feature="pinhole diameter" if pinholes else "width of the faint surface undulations",
        size_px=size_range(sizes),
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


def draw_cracked(canvas: Canvas, rng) -> Morphology:
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


def draw_wrinkled(canvas: Canvas, rng) -> Morphology:
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
