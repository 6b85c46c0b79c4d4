"""Procedural SEM micrographs whose content is known exactly, so that a grounded teacher can describe them.

Why: the real SEM dataset and a cloud teacher are out of reach offline, yet the pipeline (teacher cache ->
dataset -> training -> evaluation) needs micrographs with answers that can be checked. Each image is drawn
from a `SyntheticScene` (instrument settings, the data bar, and a `Morphology` that says what is
in view at which size in pixels); the grounded teacher answers from that same scene.

The generator reproduces the three difficulties of the paper's Figure 2:
- intra-class variance: 3-6 sub-types per category (the sub-types of the hierarchical SEM release where it
  names them), magnification over three decades, tilt, contrast, noise and charging;
- inter-class similarity: particles, powders, porous sponges and films are built from the same primitives,
  and every image's grey levels are mapped onto a "look" drawn independently of its category (as an SEM
  operator's auto brightness/contrast does), so global grey-level statistics do not give the class away;
- multi-scale structure: satellites on grains, pores inside pore walls, grains inside films.

Rendering: drawers paint relief (height) and material maps with PIL at half resolution; a secondary-electron
model turns them into signal (edge brightening, detector-side shading, composition contrast), which is
upsampled, normalised to the look, and given shot noise, scan-line noise and charging, as on a real SEM.

Layout: `scene` (what an image shows, as data), `canvas` (relief and material maps), `geometry` (placement and
outlines), `drawers/` (one module per SEM category), `registry` (category -> sub-types -> drawer),
`instrument` (settings and data bar), `imaging` (signal, contrast, noise), `render` (one image),
`phrasing`, `answers` and `grounded_teacher` (the answers), `facts` (what each image shows, kept beside the
corpus for `metrics/grounded_facts`), `corpus` and `cli` (`mvaema-synth`).
"""

from .canvas import Canvas
from .cli import main
from .corpus import CACHE_FILE_NAME, DEFAULT_JPEG_QUALITY, IMAGES_DIR_NAME, SyntheticCorpus, generate_synthetic_corpus
from .facts import FACTS_FILE_NAME, load_synthetic_facts, scene_facts
from .grounded_teacher import TEACHER_NAME, answer_family, grounded_records
from .instrument import DATA_BAR_SHARE, format_length
from .registry import SUBTYPES, Subtype
from .render import draw_micrograph, sample_acquisition
from .scene import IMAGE_HEIGHT, IMAGE_WIDTH, DataBar, Instrument, Look, Morphology, SyntheticScene

__all__ = [
    "CACHE_FILE_NAME",
    "Canvas",
    "DATA_BAR_SHARE",
    "DEFAULT_JPEG_QUALITY",
    "DataBar",
    "FACTS_FILE_NAME",
    "IMAGES_DIR_NAME",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "Instrument",
    "Look",
    "Morphology",
    "SUBTYPES",
    "Subtype",
    "SyntheticCorpus",
    "SyntheticScene",
    "TEACHER_NAME",
    "answer_family",
    "draw_micrograph",
    "format_length",
    "generate_synthetic_corpus",
    "grounded_records",
    "load_synthetic_facts",
    "main",
    "sample_acquisition",
    "scene_facts",
]
