"""What there is to ask: the images of a folder (found by the package's one folder rule, identified by
content hash) times the question families, less what the cache already holds."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..images import BadImageError, SkippedImage, scan_image_folder
from ..question_families import PROMPT_VERSION, QuestionFamily
from ..teacher_cache import STATUS_FAILED, STATUS_OK, TeacherCache, TeacherRecord, image_content_id
from .protocol import Usage

logger = logging.getLogger(__name__)

TeacherKey = tuple[str, str, str, str]  # (image_id, family, prompt_version, teacher), as in TeacherRecord.key


@dataclass(frozen=True)
class TeacherImage:
    """An image the teacher is asked about."""

    path: Path
    image_path: str  # relative to the image root, with "/" separators
    category: str
    image_id: str  # sha256 of the file's bytes


@dataclass
class TeacherImageScan:
    images: list[TeacherImage]
    skipped: list[SkippedImage]
    duplicates: int  # byte-identical copies of an earlier file: asked once, under the first file's path


def scan_teacher_images(image_root: str | os.PathLike) -> TeacherImageScan:
    """Every image under `image_root/<Category>/`, by `dataset_builder.images.scan_image_folder`'s rule
    (hidden names ignored, links followed once), hashed; byte-identical copies are asked about once."""
    folder = scan_image_folder(image_root)
    skipped = [SkippedImage(printable_path(entry.path), entry.reason) for entry in folder.skipped]
    images: list[TeacherImage] = []
    seen_ids: set[str] = set()
    duplicates = 0
    for found in folder.images:
        if not is_utf8(found.relative_path):
            skipped.append(SkippedImage(printable_path(found.relative_path), UNSTORABLE_NAME_REASON))
            continue
        try:
            image_id = image_content_id(found.path)
        except OSError as error:
            skipped.append(SkippedImage(found.relative_path, f"cannot read file ({error.strerror})"))
            continue
        if image_id in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(image_id)
        images.append(TeacherImage(found.path, found.relative_path, found.category, image_id))
    return TeacherImageScan(images, skipped, duplicates)


# Answers are stored under the image's path in a UTF-8 cache: a name that is not UTF-8 (bytes of another
# encoding, which Python reads as lone surrogates) could be paid for but never stored, on every run.
UNSTORABLE_NAME_REASON = (
    "the file name is not valid UTF-8, so answers about it could not be stored; nothing was sent: "
    "rename the file (e.g. convmv -f latin1 -t utf8)"
)


def is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(name: str) -> str:
    """`name` with the bytes that are not UTF-8 shown as \\xNN escapes: safe to print, log and store."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def read_image_size(path: Path) -> tuple[int, int]:
    """Width and height from the file header alone (fast, for estimates); `BadImageError` if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(path, f"cannot read the image header ({error})") from error


@dataclass(frozen=True)
class TeacherJob:
    """One request: one image, one question family."""

    image: TeacherImage
    family: QuestionFamily

    def key(self, teacher_id: str) -> TeacherKey:
        return (self.image.image_id, self.family.key, PROMPT_VERSION, teacher_id)

    def record(
        self,
        teacher_id: str,
        *,
        answers: Sequence[str] = (),
        error: str | None = None,
        usage: Usage = Usage(),
        cost_usd: float = 0.0,
    ) -> TeacherRecord:
        return TeacherRecord(
            image_id=self.image.image_id,
            image_path=self.image.image_path,
            category=self.image.category,
            family=self.family.key,
            prompt_version=PROMPT_VERSION,
            teacher=teacher_id,
            questions=list(self.family.questions),
            answers=list(answers),
            status=STATUS_FAILED if error else STATUS_OK,
            error=error,
            usage=usage.as_dict(),
            cost_usd=cost_usd,
        )


def pending_jobs(
    images: Iterable[TeacherImage],
    families: Sequence[QuestionFamily],
    teacher_id: str,
    done: AbstractSet[TeacherKey],
) -> list[TeacherJob]:
    """Jobs without a successful answer yet, image by image (so each image is encoded once for all families)."""
    jobs = (TeacherJob(image, family) for image in images for family in families)
    return [job for job in jobs if job.key(teacher_id) not in done]


def completed_keys(cache: TeacherCache) -> set[TeacherKey]:
    records, read_report = cache.read()
    for line_number, problem in read_report.bad_lines:
        logger.warning(
            "%s line %d ignored (cut off by a crash, or not a teacher record): %s", cache.path, line_number, problem
        )
    return {record.key for record in records if record.status == STATUS_OK}
