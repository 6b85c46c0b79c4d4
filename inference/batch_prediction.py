"""Answering question families and ranking categories for every micrograph of a folder tree, into a JSONL file
that a rerun resumes.

Each output line is one image: `{"path", "category_folder", "answers": {family: [{"question", "answer"}]},
"categories": [{"label", "score"}] (top 5), "error"}`, where `path` is relative to the image folder. A line is
written whole and flushed per batch, so a killed run loses at most the line it was writing; the rerun repairs that
line and skips every image already in the file.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from dataset_builder.images import IMAGE_SUFFIXES, BadImageError, open_micrograph, scan_image_folder, visible_files
from dataset_builder.question_families import QuestionFamily

from .assistant import MicrographAssistant

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MicrographFile:
    path: Path
    relative_path: str  # "/"-separated, relative to the image folder: the key of the output line
    category_folder: str | None  # the category folder it lies in, when the tree has them


def find_micrographs(image_root: str | os.PathLike) -> list[MicrographFile]:
    """Image files under `image_root`: by category folder (`scan_image_folder`'s rule) when the root holds only
    folders, else every visible image file of the tree. Names starting with "." are ignored at any depth."""
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--images {image_root}: folder not found")
    visible = [entry for entry in root.iterdir() if not entry.name.startswith(".")]
    if visible and all(entry.is_dir() for entry in visible):
        scan = scan_image_folder(root)
        for skipped in scan.skipped:
            logger.warning("skipped %s: %s", skipped.path, skipped.reason)
        return [MicrographFile(image.path, image.relative_path, image.category) for image in scan.images]
    return [MicrographFile(path, path.relative_to(root).as_posix(), None) for path in _visible_image_files(root)]


def _visible_image_files(root: Path) -> list[Path]:
    """Image-named files under `root` by the package's folder rule (`dataset_builder.images.visible_files`)."""
    files = []
    for path in visible_files(root):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            files.append(path)
        else:
            logger.warning("skipped %s: not an image file name", path.relative_to(root).as_posix())
    return sorted(files)


def read_finished_paths(output: Path) -> set[str]:
    """The image paths already in `output`. A last line cut off by a kill is removed from the file (its image is
    predicted again); a broken line before the last one is an error, so that no finished result is overwritten."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    complete_end = data.rfind(b"\n") + 1
    if complete_end < len(data):
        logger.warning("%s: removing an incomplete last line (a run was interrupted); its image is predicted again",
                       output)
        with output.open("r+b") as handle:
            handle.truncate(complete_end)
    finished = set()
    for number, line in enumerate(data[:complete_end].decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            finished.add(json.loads(line)["path"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"--out {output}: line {number} is not a prediction row ({error}); give a new --out file or "
                "remove that line"
            ) from None
    return finished


def predict_folder(
    assistant: MicrographAssistant,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    families: Sequence[QuestionFamily],
    batch_size: int = 8,
    num_beams: int = 1,
    method: str | None = None,
) -> dict[str, int]:
    """Append one line per not yet predicted image of `image_root` to `output`; returns counts of what was done."""
    output = Path(output)
    images = find_micrographs(image_root)
    finished = read_finished_paths(output)
    todo = [image for image in images if image.relative_path not in finished]
    counts = {"found": len(images), "already_done": len(images) - len(todo), "predicted": 0, "bad_files": 0}
    if not assistant.category_names:
        logger.warning("the saved processor has no categories: rows will have no category ranking")
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("a", encoding="utf-8") as sink, logging_redirect_tqdm(), tqdm(
        total=len(todo), unit="image", desc="micrographs"
    ) as progress:
        for batch in _batches(todo, batch_size):
            rows = _predict_batch(assistant, batch, families, num_beams, method)
            sink.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            sink.flush()
            counts["bad_files"] += sum(row["error"] is not None for row in rows)
            counts["predicted"] += sum(row["error"] is None for row in rows)
            progress.update(len(batch))
    return counts


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _predict_batch(assistant, batch: list[MicrographFile], families, num_beams: int, method: str | None) -> list[dict]:
    rows, opened = [], []
    for image_file in batch:
        row = {"path": image_file.relative_path, "category_folder": image_file.category_folder,
               "answers": None, "categories": None, "error": None}
        try:
            opened.append((row, open_micrograph(image_file.path)))
        except BadImageError as error:
            row["error"] = error.reason
            logger.warning("bad file %s: %s", image_file.relative_path, error.reason)
        rows.append(row)
    if opened:
        images = [image for _, image in opened]
        answers = _answer_families(assistant, images, families, num_beams)
        rankings = assistant.rank_categories(images, method=method) or [None] * len(images)
        for (row, _), image_answers, ranking in zip(opened, answers, rankings, strict=True):
            row["answers"], row["categories"] = image_answers, ranking
    return rows


def _answer_families(assistant, images, families, num_beams: int) -> list[dict]:
    """Per image, `{family key: [{"question", "answer"}]}` for every question of `families` (one generate call)."""
    questions = [(family.key, question) for family in families for question in family.questions]
    texts = [question for _, question in questions] * len(images)
    image_index = [index for index in range(len(images)) for _ in questions]
    answers = iter(assistant.answer(images, texts, image_index=image_index, num_beams=num_beams))
    per_image = []
    for _ in images:
        by_family: dict[str, list[dict]] = {family.key: [] for family in families}
        for key, question in questions:
            by_family[key].append({"question": question, "answer": next(answers)})
        per_image.append(by_family)
    return per_image
