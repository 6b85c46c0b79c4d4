"""Tips: a tip on its cantilever, a zoom onto the apex, a zoomed-out probe."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..scene import Morphology


def _pyramid(canvas: Canvas, apex, base_width, height, lean=0.0):
    """A pyramidal tip in a tilted view: two faces of different brightness meeting at the apex."""
    apex = np.asarray(apex, float)
    left, middle, right = (
        apex + [-base_width / 2 + lean, height],
        apex + [lean * 0.3, height * 1.08],
        apex + [base_width / 2 + lean, height],
    )
    canvas.polygons([np.array([apex, left, middle]), np.array([apex, middle, right])], heights=[1.0, 0.75], blur=1.0)


def draw_on_cantilever(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(20, 60)
    width = rng.uniform(120, 300)
    end_x = canvas.width * rng.uniform(0.5, 0.8)
    row = canvas.height * rng.uniform(0.55, 0.75)
    beam = np.array(
        [
            [-20, row - width / 2],
            [end_x, row - width / 2],
            [end_x + width * 0.5, row],
            [end_x, row + width / 2],
            [-20, row + width / 2],
        ]
    )
    canvas.add_relief(canvas.noise(rng, 30, 0.003) - 0.3)
    canvas.polygons([beam], heights=0.4, blur=1.5)
    tip_height = rng.uniform(120, 320)
    _pyramid(canvas, [end_x, row - tip_height], tip_height * rng.uniform(0.6, 0.9), tip_height, rng.uniform(-20, 20))
    return Morphology(
        structure="a pyramidal tip at the free end of a cantilever, as for an AFM probe",
        shape="a sharp pyramidal tip rising from the end of a flat rectangular cantilever beam",
        feature="tip height",
        size_px=(tip_height * 0.97, tip_height * 1.03),
        length_px=(end_x, end_x),
        count=1,
        distribution="single",
        aggregation="not applicable; a single probe tip is shown",
        surface="smooth tip faces and cantilever",
        contact="fused",
        surroundings="empty space beyond the cantilever",
        other_objects=("the cantilever beam carrying the tip",),
        domains="the cantilever beam and the tip, two facets of the tip shaded differently",
        functional="the sharp apex that probes the surface, and the flexible cantilever",
        view=f"tilted view (about {tilt:.0f}°)",
    )


def draw_zoom_in(canvas: Canvas, rng) -> Morphology:
    apex_radius = rng.uniform(8, 40)
    apex = np.array([canvas.width * rng.uniform(0.35, 0.65), canvas.height * rng.uniform(0.15, 0.35)])
    half_angle = math.radians(rng.uniform(8, 25))
    x, y = canvas.coordinates()
    across = (x - apex[0]) / np.maximum((y - apex[1]) * math.tan(half_angle) + apex_radius, 1e-3)
    body = (np.abs(across) < 1) & (y > apex[1] - apex_radius)
    canvas.add_relief(np.where(body, 0.9 - 0.25 * across, -0.3).astype(np.float32) + canvas.noise(rng, 10, 0.003))
    canvas.discs(apex[None], [apex_radius], heights=0.9, dome=0.3)
    contaminated = rng.random() < 0.3
    if contaminated:
        speck = apex + [rng.uniform(-1, 1) * apex_radius, rng.uniform(3, 8) * apex_radius]
        canvas.discs(speck[None], [rng.uniform(4, 10)], heights=1.2, dome=0.4)
    return Morphology(
        structure="a close-up of a sharp probe tip apex",
        shape="a conical tip narrowing to a rounded apex",
        feature="apex diameter",
        size_px=(2 * apex_radius * 0.95, 2 * apex_radius * 1.05),
        length_px=(canvas.height - apex[1], canvas.height - apex[1]),
        count=1,
        distribution="single",
        aggregation="not applicable; a single tip apex is shown",
        defects=("a small contamination particle near the apex",) if contaminated else (),
        contact="single",
        surroundings="empty space around the tip",
        domains="the tip body only; one side is brighter from the detector position",
        functional="the apex, whose radius sets the probe's resolution",
    )


def draw_zoom_out(canvas: Canvas, rng) -> Morphology:
    chip = canvas.width * rng.uniform(0.25, 0.45)
    width = rng.uniform(25, 70)
    length = canvas.width * rng.uniform(0.3, 0.5)
    row = canvas.height * rng.uniform(0.4, 0.6)
    canvas.add_relief(canvas.noise(rng, 40, 0.003) - 0.3)
    body = np.array(
        [
            [-10, row - canvas.height * 0.4],
            [chip, row - canvas.height * 0.3],
            [chip, row + canvas.height * 0.3],
            [-10, row + canvas.height * 0.4],
        ]
    )
    beam = np.array(
        [
            [chip - 5, row - width / 2],
            [chip + length, row - width / 2],
            [chip + length + width / 2, row],
            [chip + length, row + width / 2],
            [chip - 5, row + width / 2],
        ]
    )
    canvas.polygons([body], heights=0.9, blur=2.0)
    canvas.polygons([beam], heights=0.5, blur=1.0)
    tip = rng.uniform(12, 30)
    _pyramid(canvas, [chip + length - tip * 0.3, row - tip], tip * 0.8, tip)
    return Morphology(
        structure="a probe chip with its cantilever and tip seen at low magnification",
        shape="a bulky chip body from which a thin rectangular cantilever protrudes, ending in a tiny tip",
        feature="cantilever width",
        size_px=(width * 0.97, width * 1.03),
        length_px=(length, length),
        count=1,
        distribution="single",
        aggregation="not applicable; a single probe chip and cantilever are shown",
        surface="smooth, flat chip and cantilever surfaces",
        contact="fused",
        surroundings="empty space around the probe",
        other_objects=("the probe's chip body",),
        domains="the chip body, the cantilever and the tip",
        functional="the cantilever and the tip at its end, the sensing part of the probe",
    )
