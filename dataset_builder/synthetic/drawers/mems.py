"""MEMS devices and electrodes: 3D edges, close-up lines, electrodes, microfluidic channels, waveguides."""

from __future__ import annotations

import math

import numpy as np

from ..canvas import Canvas
from ..geometry import rectangle_corners, stripes_in_view
from ..scene import Morphology
from .shared import count_words


def draw_edge(canvas: Canvas, rng) -> Morphology:
    tilt = rng.uniform(30, 70)
    x, y = canvas.coordinates()
    edge_row = canvas.height * rng.uniform(0.3, 0.6) + (x - canvas.width / 2) * math.tan(
        math.radians(rng.uniform(-8, 8))
    )
    wall = canvas.height * rng.uniform(0.15, 0.35)
    depth = (y - edge_row) / wall
    layers = int(rng.integers(1, 4))
    band = np.clip(np.floor(depth * layers), 0, layers - 1) / layers
    relief = np.where(depth < 0, 1.0, np.where(depth < 1, 0.9 - 0.3 * band, 0.0))
    scallops = 0.08 * np.sin(depth * rng.uniform(20, 50)) * ((depth >= 0) & (depth < 1))
    canvas.add_relief(relief + scallops + canvas.noise(rng, 8, 0.008))
    canvas.material[:] = np.where((depth >= 0) & (depth < 1), band * 0.5, 0.0)
    return Morphology(
        structure="a three-dimensional etched edge of a microfabricated device, seen at a tilt",
        shape="a flat top surface breaking at a sharp edge into a steep sidewall above the etched floor",
        feature="sidewall height",
        size_px=(wall / math.sin(math.radians(tilt)) * 0.97, wall / math.sin(math.radians(tilt)) * 1.03),
        count=1,
        distribution="single",
        aggregation="not applicable; the edge is one continuous etched structure",
        surface="smooth top surface; sidewall with fine horizontal scallops from deep reactive-ion etching",
        defects=("scalloping on the sidewall",),
        contact="continuous",
        surroundings="the etched floor of the substrate below the wall",
        domains="the top surface, the sidewall"
        + (f" with {count_words(layers)} stacked layers" if layers > 1 else "")
        + ", and the etched floor",
        composition=(
            f"the sidewall shows {count_words(layers)} bands of different brightness, i.e. stacked materials"
            if layers > 1
            else "uniform material contrast; the bright edge comes from topography"
        ),
        functional="the etched step and sidewall that define the device geometry",
        view=f"tilted view (about {tilt:.0f}°)",
    )


def draw_line(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(80, 260)
    gap = rng.uniform(60, 200)
    theta = math.radians(float(rng.choice([0.0, 90.0, rng.uniform(-30, 30)])))
    x, y = canvas.coordinates()
    across = x * math.cos(theta) + y * math.sin(theta) - rng.uniform(0, 100)
    roughness = canvas.noise(rng, 12, width * 0.02)
    lines = (across + roughness) % (width + gap) < width
    canvas.add_relief(np.where(lines, 0.8, 0.0).astype(np.float32) + canvas.noise(rng, 6, 0.025) * lines)
    canvas.material[:] = lines * 0.6
    return Morphology(
        structure="a close-up of micro-fabricated conductor lines",
        shape="wide, straight conductor lines with slightly rough edges",
        feature="line width",
        size_px=(width * 0.97, width * 1.03),
        pitch_px=width + gap,
        count=stripes_in_view(across + roughness, width + gap, lines),
        distribution="evenly spaced",
        arrangement="parallel tracks at a constant pitch",
        aggregation="none; the lines are separate, continuous conductor tracks",
        surface="grainy metal on a smooth substrate",
        defects=("line-edge roughness",),
        contact="separate",
        surroundings="the insulating substrate between the lines",
        domains="two materials: metal lines and the substrate between them",
        composition="the metal lines are brighter than the substrate, a material (composition) contrast",
        functional="the conducting lines that carry signals across the device",
    )


def draw_electrode(canvas: Canvas, rng) -> Morphology:
    finger = rng.uniform(15, 50)
    gap = finger * rng.uniform(0.6, 1.5)
    pitch = finger + gap
    top, bottom = canvas.height * rng.uniform(0.05, 0.2), canvas.height * rng.uniform(0.8, 0.95)
    bus = rng.uniform(40, 90)
    xs = np.arange(rng.uniform(0, pitch), canvas.width, pitch)
    from_top = np.arange(len(xs)) % 2 == 0
    fingers = [
        rectangle_corners(x, top, x + finger, bottom - gap)
        if upper
        else rectangle_corners(x, top + gap, x + finger, bottom)
        for x, upper in zip(xs, from_top)
    ]
    buses = [
        rectangle_corners(-10, top - bus, canvas.width + 10, top),
        rectangle_corners(-10, bottom, canvas.width + 10, bottom + bus),
    ]
    canvas.add_relief(canvas.noise(rng, 20, 0.003))
    canvas.polygons(fingers + buses, heights=0.6, blur=1.5, materials=0.7)
    return Morphology(
        structure="interdigitated comb electrodes of a microdevice",
        shape="two comb-shaped electrodes whose straight fingers interlock",
        feature="finger width",
        size_px=(finger * 0.97, finger * 1.03),
        pitch_px=pitch,
        count=len(xs),
        distribution="evenly spaced",
        arrangement="fingers alternating from the upper and lower bus bars",
        aggregation="none; the electrode fingers are separate and regularly spaced",
        surface="smooth metal on a smooth substrate",
        contact="separate",
        surroundings="the insulating substrate in the gaps between the fingers",
        other_objects=("bus bars connecting the fingers",),
        domains="metal electrodes and the exposed substrate between them",
        composition="the metal electrodes appear brighter than the substrate (material contrast)",
        functional="the interdigitated fingers and gaps, the sensing or actuating region of the device",
    )


def draw_microfluidic(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(40, 120)
    turns = int(rng.integers(2, 5))
    span = canvas.height / (turns + 1)
    left, right = canvas.width * 0.15, canvas.width * 0.85
    points = [[-20, span]]
    for index in range(turns):
        row = span * (index + 1)
        end = right if index % 2 == 0 else left
        points += [[end, row], [end, row + span]]
    points = np.array(points[:-1] + [[canvas.width + 20, points[-1][1]]])
    canvas.add_relief(np.full(canvas.shape, 0.7, np.float32) + canvas.noise(rng, 20, 0.003))
    canvas.paths([points], width, heights=-0.2, dome=0.2, mode="min")
    chamber = rng.random() < 0.5
    if chamber:
        canvas.discs(points[1:2], [width * 1.8], heights=-0.2, dome=0.1, mode="min")
    return Morphology(
        structure="a serpentine microfluidic channel etched into a chip" + (" with a chamber" if chamber else ""),
        shape="a recessed channel of constant width winding back and forth",
        feature="channel width",
        size_px=(width * 0.97, width * 1.03),
        count=1,
        distribution="single",
        arrangement=f"one serpentine channel with {count_words(2 * turns - 1)} straight segments",
        aggregation="not applicable; the channel is a single continuous recess",
        surface="smooth chip surface and channel floor",
        contact="continuous",
        surroundings="the chip surface around the channel",
        domains="the raised chip surface and the recessed channel floor",
        functional="the channel"
        + (" and its mixing chamber" if chamber else "")
        + ", which guide fluid through the chip",
    )


def draw_waveguide(canvas: Canvas, rng) -> Morphology:
    width = rng.uniform(20, 70)
    row = canvas.height * rng.uniform(0.3, 0.7)
    canvas.add_relief(canvas.noise(rng, 15, 0.003))
    canvas.polygons(
        [rectangle_corners(-10, row - width / 2, canvas.width + 10, row + width / 2)], heights=0.8, blur=1.0
    )
    ring = rng.random() < 0.6
    if ring:
        radius = rng.uniform(100, 220)
        gap = rng.uniform(8, 25)
        centre = np.array(
            [
                [
                    rng.uniform(0.3, 0.7) * canvas.width,
                    row - width - gap - radius if row > canvas.height / 2 else row + width + gap + radius,
                ]
            ]
        )
        canvas.discs(centre, [radius + width / 2], heights=0.8, dome=0.01)
        canvas.discs(centre, [radius - width / 2], heights=0.0, dome=0.01, mode="min")
    return Morphology(
        structure="a ridge optical waveguide" + (" coupled to a ring resonator" if ring else ""),
        shape="a straight raised ridge of constant width" + (" passing next to a circular ring" if ring else ""),
        feature="waveguide width",
        size_px=(width * 0.97, width * 1.03),
        count=2 if ring else 1,
        distribution="designed" if ring else "single",
        arrangement="a straight bus waveguide"
        + (" with a ring resonator beside it" if ring else " crossing the field"),
        aggregation="not applicable; the waveguide is a single continuous ridge",
        surface="smooth sidewalls and top",
        contact="separate",
        surroundings="the cladding or substrate surface around the ridge",
        domains="the raised waveguide core and the surrounding substrate",
        functional="the waveguide core"
        + (" and the ring resonator, coupled across a narrow gap" if ring else ", which confines and guides light"),
    )
