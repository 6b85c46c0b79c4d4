"""The facts each synthetic micrograph shows, kept beside the corpus so that generated answers can be checked.

Why: BLEU only compares wording; the scene a micrograph was drawn from knows what is true (sub-type, sizes,
count, distribution, contact, the data bar's settings). `facts.jsonl` holds one JSON object per image, keyed
by `image_id` (the SHA-256 of the image file, the same id the teacher cache and the built dataset's `image_id`
column hold), so facts join with QA rows. `metrics/grounded_facts` scores answers against them.

Lengths are in nm, read with the instrument's true scale; `field_width_nm` turns them into shares of the image
width (what the grounded teacher quotes when no scale bar is shown). The data bar's fields are None when the
image has no data bar: then nothing of it can be read from the image.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..question_families import readable_category
from ..teacher_cache import TeacherCache
from .scene import IMAGE_WIDTH, SyntheticScene

FACTS_FILE_NAME = "facts.jsonl"


def scene_facts(scene: SyntheticScene, image_id: str, image_path: str) -> dict:
    """What `scene` shows, as a JSON-serialisable dict of plain values."""
    morphology, bar = scene.morphology, scene.data_bar
    nm_per_pixel = scene.instrument.nm_per_pixel
    return {
        "image_id": image_id,
        "image_path": image_path,
        "category": scene.category,
        "category_name": readable_category(scene.category),
        "subtype": scene.subtype,
        "structure": morphology.structure,
        "feature": morphology.feature,
        "feature_size_nm": [value * nm_per_pixel for value in morphology.size_px],
        "length_nm": [value * nm_per_pixel for value in morphology.length_px] if morphology.length_px else None,
        "pitch_nm": morphology.pitch_px * nm_per_pixel if morphology.pitch_px else None,
        "field_width_nm": IMAGE_WIDTH * nm_per_pixel,
        "count": morphology.count,
        "distribution": morphology.distribution,
        "contact": morphology.contact,
        "boundaries": morphology.boundaries,
        "data_bar": bar is not None,
        "detector": bar.detector if bar else None,
        "high_voltage_kv": scene.instrument.high_voltage_kv if bar else None,
        # The bar prints the magnification rounded to a whole number ("x 25,000").
        "magnification": round(scene.instrument.magnification) if bar else None,
        "scale_bar": bar.scale_label if bar else None,
        "scale_bar_nm": bar.scale_bar_nm if bar else None,
    }


def load_synthetic_facts(directory: str | os.PathLike) -> dict[str, dict]:
    """`image_id -> facts` of the synthetic corpus in `directory` (the folder holding `facts.jsonl`).

    A line cut off by a crash is skipped: the next `generate_synthetic_corpus` run writes that image's facts again.
    """
    path = Path(directory) / FACTS_FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: generate the corpus with this version of mvaema-synth (a rerun on an existing "
            "corpus writes the facts without changing its images or answers)."
        )
    facts: dict[str, dict] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            facts[entry["image_id"]] = entry
    return facts


def append_facts(path: Path, entries: Iterable[dict]) -> None:
    """Append whole lines and fsync, like the teacher cache: facts written before their answers survive a crash."""
    payload = "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries)
    if not payload:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        TeacherCache._terminate_cut_off_line(handle)
        handle.write(payload.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
