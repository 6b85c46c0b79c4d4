"""A saved tiny MVaEMa with categories, and micrograph files good and bad, for the prediction and demo tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from model_fixtures import micrographs, tiny_model, tiny_processor
from PIL import Image

from dataset_builder.question_families import CLASSIFICATION_QUESTION, caption_for_category, category_answer_prefix

CATEGORIES = ["Fibres", "Nanowires", "Particles", "Porous_Sponge", "Powder", "Tips"]
SHIPPED_CODE_MARKER = "shipped_code_ran.txt"


def save_tiny_model(folder: Path) -> Path:
    """A tiny model and a processor that ranks `CATEGORIES`, saved as training saves them (answers of at most
    8 tokens keep generation fast)."""
    model, processor = tiny_model().eval(), tiny_processor()
    processor.category_names = list(CATEGORIES)
    processor.category_texts = [category_answer_prefix(category) for category in CATEGORIES]
    processor.category_captions = [caption_for_category(category) for category in CATEGORIES]
    processor.classification_question = CLASSIFICATION_QUESTION
    processor.classification_method = "itc"
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def plant_shipped_code(folder: Path, marker: Path) -> None:
    """Make the folder's copy of the model code write `marker` when Python imports it (as hostile code would act)."""
    shipped = folder / "modeling_mvaema.py"
    shipped.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n" + shipped.read_text())


def sixteen_bit_tiff(path: Path) -> Path:
    ramp = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 13 + 1000).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    return path


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    micrographs(1, seed=3)[0].resize((256, 192)).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_micrograph_folder(root: Path) -> dict[str, str | None]:
    """Category folders with a JPEG, a PNG, a 16-bit TIFF, a text file named .jpg, a truncated JPEG, a hidden file
    and a note. Returns each image-named file's relative path -> the word its error must contain (None: good)."""
    good_jpeg, good_png = micrographs(2)
    (root / "Particles").mkdir(parents=True)
    (root / "Nanowires" / "session_2").mkdir(parents=True)
    good_jpeg.save(root / "Particles" / "a.jpg")
    good_png.save(root / "Particles" / "b.png")
    sixteen_bit_tiff(root / "Nanowires" / "session_2" / "c.tif")
    (root / "Nanowires" / "fake.jpg").write_text("this is a text file, not a JPEG")
    truncated_jpeg(root / "Particles" / "cut.jpg")
    good_png.save(root / "Particles" / ".hidden.png")
    (root / "Particles" / "notes.txt").write_text("sample notes")
    return {
        "Particles/a.jpg": None,
        "Particles/b.png": None,
        "Nanowires/session_2/c.tif": None,
        "Nanowires/fake.jpg": "not an image",
        "Particles/cut.jpg": "truncated",
    }
