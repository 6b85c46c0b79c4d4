"""Instrument settings and the data bar printed under the image (texts, scale bar, layout)."""

from __future__ import annotations

import math
import os
from functools import lru_cache

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from .registry import Subtype
from .scene import IMAGE_HEIGHT, IMAGE_WIDTH, DataBar, Instrument

# Zeiss and FEI define magnification against a 127 mm wide Polaroid 545 print: field width = 127 mm / mag.
REFERENCE_FIELD_WIDTH_NM = 127e6

# Share of images with an instrument data bar, per category: about 60% overall as in the real dataset, with
# per-category shares that differ as they do there.
DATA_BAR_SHARE = {
    "Biological": 0.45,
    "Fibres": 0.55,
    "Films_Coated_Surface": 0.7,
    "MEMS_devices_and_electrodes": 0.5,
    "Nanowires": 0.7,
    "Particles": 0.65,
    "Patterned_surface": 0.55,
    "Porous_Sponge": 0.7,
    "Powder": 0.6,
    "Tips": 0.55,
}
# Insulating specimens (tissue, polymer fibres, oxide powders) charge under the beam more often.

DETECTORS_BY_LAYOUT = {"table": ("ETD", "TLD"), "inline": ("SEI", "LEI", "InLens", "SE2")}

HIGH_VOLTAGES_KV = (1.0, 2.0, 3.0, 5.0, 5.0, 10.0, 15.0, 20.0)


def format_length(nm: float, digits: int = 2) -> str:
    """A length in the unit a microscopist would use, to `digits` significant figures: "85 nm", "1.2 µm"."""
    unit, scale = ("mm", 1e6) if nm >= 1e6 else ("µm", 1e3) if nm >= 1e3 else ("nm", 1.0)
    return f"{float(f'{nm / scale:.{digits}g}'):g} {unit}"


def log_uniform(rng, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def sample_instrument(rng, subtype: Subtype) -> Instrument:
    magnification = float(f"{log_uniform(rng, *subtype.magnification):.3g}")
    detector = str(rng.choice([name for names in DETECTORS_BY_LAYOUT.values() for name in names]))
    return Instrument(
        magnification=magnification,
        nm_per_pixel=REFERENCE_FIELD_WIDTH_NM / magnification / IMAGE_WIDTH,
        high_voltage_kv=float(rng.choice(HIGH_VOLTAGES_KV)),
        working_distance_mm=round(rng.uniform(3.0, 12.0), 1),
        detector=detector,
    )


def _scale_bar(nm_per_pixel: float) -> tuple[float, int]:
    """The longest 1-2-5 length that draws at most 260 px; 1-2-5 steps guarantee at least 104 px."""
    lengths = [step * 10**power for power in range(8) for step in (1, 2, 5)]
    length = max(nm for nm in lengths if nm / nm_per_pixel <= 260)
    return float(length), round(length / nm_per_pixel)


def sample_data_bar(rng, instrument: Instrument) -> DataBar:
    layout = next(name for name, detectors in DETECTORS_BY_LAYOUT.items() if instrument.detector in detectors)
    scale_nm, scale_pixels = _scale_bar(instrument.nm_per_pixel)
    return DataBar(
        layout=layout,
        background=str(rng.choice(["dark", "bright"], p=[0.6, 0.4])),
        top_row=IMAGE_HEIGHT - 2 * int(rng.integers(35, 53)),
        scale_bar_nm=scale_nm,
        scale_bar_pixels=scale_pixels,
        scale_label=format_length(scale_nm, digits=1),
        magnification_label=f"x {instrument.magnification:,.0f}",
        high_voltage_label=f"{instrument.high_voltage_kv:.2f} kV",
        working_distance_label=f"{instrument.working_distance_mm:.1f} mm",
        detector=instrument.detector,
    )


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # DejaVu Sans ships with matplotlib (a dependency) and, unlike PIL's built-in font, has the "µ" glyph.
    return ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), size)


def render_data_bar(bar: DataBar, field_width_nm: float) -> Image.Image:
    height = IMAGE_HEIGHT - bar.top_row
    ink, paper = (235, 10) if bar.background == "dark" else (15, 225)
    image = Image.new("L", (IMAGE_WIDTH, height), paper)
    draw = ImageDraw.Draw(image)
    if bar.layout == "table":
        cells = (
            ("HV", bar.high_voltage_label),
            ("mag", bar.magnification_label),
            ("WD", bar.working_distance_label),
            ("det", bar.detector),
            ("HFW", format_length(field_width_nm, digits=3)),
        )
        for index, (header, value) in enumerate(cells):
            x = 10 + index * 135
            draw.text((x, 8), header, font=_font(15), fill=ink)
            draw.text((x, 30), value, font=_font(19), fill=ink)
            draw.line((x + 128, 6, x + 128, 58), fill=ink, width=1)
        right = IMAGE_WIDTH - 30
        _draw_scale_bar(draw, bar, right - bar.scale_bar_pixels, 48, ink, label_above=True)
    else:
        x = 16
        for text in (bar.detector, bar.high_voltage_label, bar.magnification_label):
            draw.text((x, height / 2), text, font=_font(21), fill=ink, anchor="lm")
            x += draw.textlength(text, font=_font(21)) + 36
        x = _draw_scale_bar(draw, bar, x, height / 2, ink, label_above=False) + 36
        draw.text((x, height / 2), f"WD {bar.working_distance_label}", font=_font(21), fill=ink, anchor="lm")
    return image


def _draw_scale_bar(draw: ImageDraw.ImageDraw, bar: DataBar, x: float, y: float, ink: int, label_above: bool) -> float:
    """Draws the bar (with end ticks) and its label; returns the right-most x used."""
    end = x + bar.scale_bar_pixels
    draw.rectangle((x, y - 3, end, y + 3), fill=ink)
    draw.line((x, y - 9, x, y + 9), fill=ink, width=2)
    draw.line((end, y - 9, end, y + 9), fill=ink, width=2)
    if label_above:
        draw.text(((x + end) / 2, y - 14), bar.scale_label, font=_font(19), fill=ink, anchor="mb")
        return end
    draw.text((end + 12, y), bar.scale_label, font=_font(21), fill=ink, anchor="lm")
    return end + 12 + draw.textlength(bar.scale_label, font=_font(21))
