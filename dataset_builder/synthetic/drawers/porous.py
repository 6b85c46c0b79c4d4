"""Porous sponges: open-cell foam, nanoporous sponge, mesoporous surface, macroporous scaffold."""

from __future__ import annotations

import numpy as np

from ..canvas import Canvas
from ..geometry import coefficient_of_variation, inside_field, jittered_grid, scattered_discs, size_range
from ..scene import Morphology


def draw_foam(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(25, 70)
    centres = jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(2.0, 2.4), 0.2, margin=radius)
    radii = radius * np.clip(1 + 0.2 * rng.standard_normal(len(centres)), 0.6, 1.4)
    canvas.discs(centres, radii, heights=rng.uniform(-0.6, -0.3, len(radii)), dome=0.3, background=1.0)
    canvas.add_relief(canvas.noise(rng, 10, 0.02))
    inside = inside_field(centres, canvas)
    return Morphology(
        structure="an open-cell foam with large, interconnected pores",
        shape="a three-dimensional network of thin walls enclosing rounded cells",
        feature="pore diameter",
        size_px=size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="pores packed edge to edge throughout the material",
        aggregation="no bundling; the solid forms one continuous interconnected network",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        surface="rough cell walls",
        defects=("broken cell walls",),
        contact="fused",
        boundaries="sharp",
        surroundings="no separate substrate; the foam fills the field",
        domains="two phases: the solid walls and the empty pore space",
        functional="the open pores and interconnected channels, which give the large internal surface",
    )


def draw_sponge(canvas: Canvas, rng) -> Morphology:
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


def draw_mesoporous(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(3, 12)
    centres, radii = scattered_discs(
        rng, canvas.width, canvas.height, radius, 0.25, radius * rng.uniform(3.4, 5), rng.uniform(0.6, 1.0)
    )
    canvas.add_relief(canvas.noise(rng, 40, 0.08) + 0.6, "add")
    canvas.discs(centres, radii, heights=-0.4, dome=0.25, mode="min")
    inside = inside_field(centres, canvas)
    return Morphology(
        structure="a mesoporous surface perforated by many small pores",
        shape="a continuous solid matrix perforated by small, round pores",
        feature="pore diameter",
        size_px=size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="isolated pores scattered over the whole surface",
        aggregation="no aggregation; the pores are isolated openings in a continuous matrix",
        size_spread=coefficient_of_variation(radii),
        surface="smooth matrix punctured by dark pores",
        contact="separate",
        surroundings="no separate substrate; the porous matrix fills the field",
        domains="a continuous solid matrix and isolated pores",
        functional="the pore openings, which provide accessible internal surface",
    )


def draw_macroporous(canvas: Canvas, rng) -> Morphology:
    radius = rng.uniform(40, 120)
    centres = jittered_grid(rng, canvas.width, canvas.height, radius * rng.uniform(2.3, 3.2), 0.25, margin=radius)
    radii = radius * np.clip(1 + 0.25 * rng.standard_normal(len(centres)), 0.5, 1.5)
    canvas.add_relief(canvas.noise(rng, 60, 0.1) + 0.8, "add")
    canvas.discs(centres, radii, heights=-0.5, dome=0.2, mode="min")
    small = jittered_grid(rng, canvas.width, canvas.height, rng.uniform(14, 30), 0.4, occupancy=0.6)
    small_radii = rng.uniform(2, 5, len(small))
    canvas.discs(small, small_radii, heights=0.2, dome=0.3, mode="min")
    inside = inside_field(centres, canvas)
    return Morphology(
        structure="a macroporous scaffold with small pores in its walls",
        shape="large rounded pores separated by thick walls that are themselves finely porous",
        feature="large-pore diameter",
        size_px=size_range(2 * radii[inside]),
        count=int(inside.sum()),
        distribution="random",
        arrangement="large pores scattered through the matrix, fine pores everywhere in between",
        aggregation="no aggregation; the solid is one continuous scaffold",
        size_spread=coefficient_of_variation(radii),
        regular=False,
        populations=2,
        surface="rough and finely porous",
        defects=("small pores throughout the walls",),
        contact="fused",
        surroundings="no separate substrate; the scaffold fills the field",
        domains="a hierarchical pore structure: large pores and a second population of fine pores in the walls",
        functional="the hierarchical pores: large ones for transport, small ones for surface area",
    )
