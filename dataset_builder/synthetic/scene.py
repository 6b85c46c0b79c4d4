"""What one synthetic micrograph shows, as data: the scene a drawer paints and the grounded teacher describes.

Sizes in `Morphology` are image pixels of the full 1024x768 frame; the instrument's `nm_per_pixel` turns them
into lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_WIDTH = 1024
IMAGE_HEIGHT = 768


@dataclass(frozen=True)
class Instrument:
    """Acquisition settings. The teacher may quote them only when the data bar prints them."""

    magnification: float
    nm_per_pixel: float
    high_voltage_kv: float
    working_distance_mm: float
    detector: str


@dataclass(frozen=True)
class DataBar:
    """The instrument's information bar at the bottom of the image, with its texts exactly as printed."""

    layout: str  # "table" (FEI-like header/value cells) or "inline" (JEOL/Zeiss-like single row)
    background: str  # "dark" or "bright"
    top_row: int
    scale_bar_nm: float
    scale_bar_pixels: int
    scale_label: str  # "2 µm"
    magnification_label: str  # "x 25,000"
    high_voltage_label: str  # "5.00 kV"
    working_distance_label: str  # "6.2 mm"
    detector: str


@dataclass(frozen=True)
class Look:
    """How the specimen was imaged and displayed; drawn independently of the category (except charging)."""

    gamma: float
    black_level: float
    white_level: float
    equalisation: float  # 0 = linear stretch, 1 = contrast-limited histogram equalisation
    noise: float  # shot-noise amplitude at mid grey
    directional_shading: float  # side-detector shadowing (ETD/SE2) versus in-lens flat lighting
    charging: bool

    @property
    def noise_level(self) -> str:
        return "low" if self.noise < 0.045 else "moderate" if self.noise < 0.075 else "high"


@dataclass(frozen=True)
class Morphology:
    """What a drawer put in the field of view. Sizes are image pixels; the phrases are worded to slot into the
    sentence templates of the grounded answers (answers.py), which give each field its own question."""

    structure: str  # what the image shows, after "The image shows <category>, specifically ..."
    shape: str  # overall shape and morphology
    feature: str  # what `size_px` measures: "particle diameter", "line width", ...
    size_px: tuple[float, float]
    count: int | None = None  # discrete structures in view; None for continuous ones (films, sponges)
    length_px: tuple[float, float] | None = None  # wires, fibres, rods, tips
    pitch_px: float | None = None  # centre-to-centre spacing of an ordered array
    # "evenly spaced", "clustered", "random", "aligned", "continuous", "single", "designed" (a device layout)
    distribution: str = "random"
    arrangement: str = ""  # detail of the distribution: "a hexagonal lattice"
    aggregation: str = "no aggregation or bundling"
    size_spread: float = 0.0  # coefficient of variation of the drawn sizes
    regular: bool = True  # outlines repeat from object to object
    populations: int = 1  # distinct size populations (multi-scale structure)
    surface: str = "smooth, without visible texture"
    defects: tuple[str, ...] = ()
    domains: str = "a single layer of structures on a flat substrate, with no distinct phases"
    composition: str = "uniform material contrast; brightness changes come from topography and edges"
    contact: str = "separate"  # "separate", "touching", "fused", "crossing", "continuous", "single"
    boundaries: str = "sharp"  # "sharp" or "soft"
    surroundings: str = "a flat substrate"
    other_objects: tuple[str, ...] = ()
    functional: str = ""
    view: str = "top-down view"


@dataclass(frozen=True)
class SyntheticScene:
    """Everything that determines one synthetic image (besides its pixel noise): what the teacher reads."""

    category: str
    subtype: str
    instrument: Instrument
    data_bar: DataBar | None
    morphology: Morphology
    look: Look
