"""The sub-types of every SEM category: which drawer paints each one and its magnification range."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .canvas import Canvas
from .drawers import biological, fibres, films, mems, nanowires, particles, patterned, porous, powder, tips
from .scene import Morphology


@dataclass(frozen=True)
class Subtype:
    name: str
    draw: Callable[[Canvas, np.random.Generator], Morphology]
    magnification: tuple[float, float]


SUBTYPES: dict[str, tuple[Subtype, ...]] = {
    "Biological": (
        Subtype("cells", biological.draw_cells, (300, 3_000)),
        Subtype("bacteria", biological.draw_bacteria, (3_000, 20_000)),
        Subtype("pollen or spores", biological.draw_pollen, (500, 5_000)),
        Subtype("fibril network", biological.draw_fibrils, (5_000, 40_000)),
    ),
    "Fibres": (
        Subtype("non-woven mat", fibres.draw_mat, (300, 5_000)),
        Subtype("aligned fibres", fibres.draw_aligned, (300, 5_000)),
        Subtype("single fibre", fibres.draw_single, (2_000, 20_000)),
        Subtype("woven fabric", fibres.draw_woven, (30, 300)),
    ),
    "Films_Coated_Surface": (
        Subtype("particle film", films.draw_particle, (20_000, 100_000)),
        Subtype("smooth film", films.draw_smooth, (5_000, 50_000)),
        Subtype("cracked film", films.draw_cracked, (200, 5_000)),
        Subtype("wrinkled film", films.draw_wrinkled, (1_000, 20_000)),
    ),
    "MEMS_devices_and_electrodes": (
        Subtype("3D edge", mems.draw_edge, (1_000, 20_000)),
        Subtype("close-up line", mems.draw_line, (5_000, 50_000)),
        Subtype("electrode", mems.draw_electrode, (100, 2_000)),
        Subtype("microfluidic", mems.draw_microfluidic, (50, 500)),
        Subtype("waveguide", mems.draw_waveguide, (500, 10_000)),
    ),
    "Nanowires": (
        Subtype("entangled", nanowires.draw_entangled, (5_000, 30_000)),
        Subtype("few", nanowires.draw_few, (10_000, 50_000)),
        Subtype("individual", nanowires.draw_individual, (30_000, 150_000)),
        Subtype("forest", nanowires.draw_forest, (5_000, 40_000)),
    ),
    "Particles": (
        Subtype("dispersed", particles.draw_dispersed, (10_000, 80_000)),
        Subtype("individual", particles.draw_individual, (30_000, 150_000)),
        Subtype("other shape", particles.draw_other_shape, (10_000, 60_000)),
        Subtype("small clusters", particles.draw_small_clusters, (15_000, 100_000)),
    ),
    "Patterned_surface": (
        Subtype("circle array", patterned.draw_circles, (5_000, 50_000)),
        Subtype("line array", patterned.draw_lines, (5_000, 50_000)),
        Subtype("square array", patterned.draw_squares, (5_000, 40_000)),
        Subtype("triangle array", patterned.draw_triangles, (10_000, 60_000)),
        Subtype("zigzag", patterned.draw_zigzag, (2_000, 20_000)),
        Subtype("pillars", patterned.draw_pillars, (3_000, 30_000)),
    ),
    "Porous_Sponge": (
        Subtype("open-cell foam", porous.draw_foam, (100, 2_000)),
        Subtype("nanoporous sponge", porous.draw_sponge, (20_000, 100_000)),
        Subtype("mesoporous surface", porous.draw_mesoporous, (30_000, 150_000)),
        Subtype("macroporous scaffold", porous.draw_macroporous, (500, 5_000)),
    ),
    "Powder": (
        Subtype("agglomerated powder", powder.draw_agglomerated, (500, 5_000)),
        Subtype("fine powder", powder.draw_fine, (2_000, 15_000)),
        Subtype("coarse grains", powder.draw_coarse, (200, 2_000)),
        Subtype("flakes", powder.draw_flakes, (1_000, 10_000)),
    ),
    "Tips": (
        Subtype("on cantilever", tips.draw_on_cantilever, (300, 3_000)),
        Subtype("zoom in", tips.draw_zoom_in, (20_000, 200_000)),
        Subtype("zoom out", tips.draw_zoom_out, (50, 300)),
    ),
}
