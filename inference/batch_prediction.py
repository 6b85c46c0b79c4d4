"""Answering question families and ranking categories for every micrograph of a folder tree, into a JSONL file
that a rerun resumes.

Each output line is one image: `{"path", "category_folder", "caption", "answers": {family: [{"question",
"answer"}]}, "categories": [{"label", "score"}] (top 5), "error"}`, where `path` is relative to the image folder and
`caption` the caption every question of the image was asked after: by default the caption of the category the model
ranks first (self-captioning), null when turned off. A line is
written whole and flushed per batch, so a killed run loses at most the line it was writing; the rerun repairs that
line and skips every image already in the file. An existing output file is trimmed only once every line of it has
been read as a prediction row: any other file (a CSV, an image, model weights) is refused untouched, and so is an
output path that is a symbolic link, a folder, or inside the image folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
    """Image files under `image_root`: by category folder (`scan_image_folder`'s rule) when the root holds folders
    and no image file, else every visible image file of the tree. Names starting with "." are ignored at any depth.

    Other files beside the category folders (notes, a teacher cache, predictions of an earlier run) do not decide the
    layout, so a rerun finds the same layout whatever such files appeared since."""
    root = Path(image_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"--images {image_root}: folder not found")
    visible = [entry for entry in root.iterdir() if not entry.name.startswith(".")]
    root_images = [entry for entry in visible if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES]
    if any(entry.is_dir() for entry in visible) and not root_images:
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


def check_output_path(output: str | os.PathLike, image_root: str | os.PathLike) -> None:
    """Raise `ValueError` for an output path the run must not write to; reads and changes nothing."""
    output, image_root = Path(output).expanduser(), Path(image_root).expanduser()
    if output.is_symlink():
        raise ValueError(f"--out {output}: is a symbolic link; give the path of a regular file (the run would "
                         "write wherever the link points)")
    if output.is_dir():
        raise ValueError(f"--out {output}: is a folder; give a file path such as {output / 'predictions.jsonl'}")
    if output.exists() and not output.is_file():
        raise ValueError(f"--out {output}: is not a regular file")
    if (output.parent.resolve() / output.name).is_relative_to(image_root.resolve()):
        raise ValueError(f"--out {output}: lies inside --images {image_root}; write the predictions outside the "
                         "image folder")


# Every row this module writes starts so: a last line cut off by a kill is told from a file that is not ours by it.
ROW_START = b'{"path": '


def read_finished_paths(output: Path) -> set[str]:
    """The image paths already in `output`. A last line cut off by a kill is removed from the file (its image is
    predicted again), but only after every complete line was read as a prediction row; a line that is not one is an
    error, so that no finished result, and no file that is not a prediction file, is changed."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    complete_end = data.rfind(b"\n") + 1
    lines = data[:complete_end].split(b"\n")
    finished = {_row_path(line, number, output) for number, line in enumerate(lines, start=1) if line.strip()}
    cut_off = data[complete_end:]
    if cut_off:
        if cut_off[: len(ROW_START)] != ROW_START[: len(cut_off)]:
            raise _not_a_row(output, len(lines), "it does not start like one and has no line end")
        logger.warning("%s: removing an incomplete last line (a run was interrupted); its image is predicted again",
                       output)
        with output.open("r+b") as handle:
            handle.truncate(complete_end)
    return finished


def load_json(data: bytes) -> object:
    """`json.loads` of UTF-8 bytes where every problem, a deep nesting included, is a one-line `ValueError`."""
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _row_path(line: bytes, number: int, output: Path) -> str:
    try:
        row = load_json(line)
    except ValueError as error:
        raise _not_a_row(output, number, str(error)) from None
    if not isinstance(row, dict) or not isinstance(row.get("path"), str):
        raise _not_a_row(output, number, 'not an object with a "path" string')
    return row["path"]


def _not_a_row(output: Path, number: int, problem: str) -> ValueError:
    return ValueError(f"--out {output}: line {number} is not a prediction row ({problem}); give a new --out file or "
                      "remove that line")


# A file name whose bytes are not UTF-8 reaches Python with lone surrogates in place of those bytes
# (surrogateescape). UTF-8 cannot encode them, so they are written as JSON "\udcXX" escapes, which json.loads turns
# back into the same name: the rerun recognises the file and os.fsencode(path) gives its bytes.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_line(row: dict) -> str:
    text = json.dumps(row, ensure_ascii=False)
    return LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"


def _open_for_appending(output: Path):
    # O_NOFOLLOW: a link planted after `check_output_path` is refused by the kernel instead of written through.
    descriptor = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    return os.fdopen(descriptor, "a", encoding="utf-8")


def predict_folder(
    assistant: MicrographAssistant,
    image_root: str | os.PathLike,
    output: str | os.PathLike,
    families: Sequence[QuestionFamily],
    batch_size: int = 8,
    num_beams: int = 1,
    method: str | None = None,
    self_caption: bool = True,
) -> dict[str, int]:
    """Append one line per not yet predicted image of `image_root` to `output`; returns counts of what was done."""
    check_output_path(output, image_root)
    output = Path(output).expanduser()
    images = find_micrographs(image_root)
    finished = read_finished_paths(output)
    todo = [image for image in images if image.relative_path not in finished]
    counts = {"found": len(images), "already_done": len(images) - len(todo), "predicted": 0, "bad_files": 0}
    if not assistant.category_names:
        logger.warning("the saved processor has no categories: rows will have no category ranking")
    output.parent.mkdir(parents=True, exist_ok=True)
    with _open_for_appending(output) as sink, logging_redirect_tqdm(), tqdm(
        total=len(todo), unit="image", desc="micrographs"
    ) as progress:
        for batch in _batches(todo, batch_size):
            rows = _predict_batch(assistant, batch, families, num_beams, method, self_caption)
            sink.write("".join(_json_line(row) for row in rows))
            sink.flush()
            counts["bad_files"] += sum(row["error"] is not None for row in rows)
            counts["predicted"] += sum(row["error"] is None for row in rows)
            progress.update(len(batch))
    return counts


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _predict_batch(assistant, batch: list[MicrographFile], families, num_beams: int, method: str | None,
                   self_caption: bool) -> list[dict]:
    rows, opened = [], []
    for image_file in batch:
        row = {"path": image_file.relative_path, "category_folder": image_file.category_folder, "caption": None,
               "answers": None, "categories": None, "error": None}
        try:
            opened.append((row, open_micrograph(image_file.path)))
        except BadImageError as error:
            row["error"] = error.reason
            logger.warning("bad file %s: %s", image_file.relative_path, error.reason)
        rows.append(row)
    if opened:
        images = [image for _, image in opened]
        rankings = assistant.rank_categories(images, method=method) or [None] * len(images)
        captions = [None] * len(images)
        if self_caption and assistant.can_self_caption:
            captions = assistant.own_captions(rankings)
        answers = _answer_families(assistant, images, captions, families, num_beams)
        for (row, _), caption, image_answers, ranking in zip(opened, captions, answers, rankings, strict=True):
            row["caption"], row["answers"], row["categories"] = caption, image_answers, ranking
    return rows


def _answer_families(assistant, images, captions: list[str | None], families, num_beams: int) -> list[dict]:
    """Per image, `{family key: [{"question", "answer"}]}` for every question of `families`, each asked after its
    image's caption (one generate call)."""
    questions = [(family.key, question) for family in families for question in family.questions]
    texts = [question for _, question in questions] * len(images)
    image_index = [index for index in range(len(images)) for _ in questions]
    question_captions = [captions[index] for index in image_index]
    answers = iter(assistant.answer(images, texts, question_captions, image_index=image_index, num_beams=num_beams))
    per_image = []
    for _ in images:
        by_family: dict[str, list[dict]] = {family.key: [] for family in families}
        for key, question in questions:
            by_family[key].append({"question": question, "answer": next(answers)})
        per_image.append(by_family)
    return per_image
