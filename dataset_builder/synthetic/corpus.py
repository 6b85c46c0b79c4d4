"""A synthetic SEM corpus with grounded teacher answers, so the whole pipeline runs offline.

Layout written under `--out DIR`, the same as a real corpus after a teacher run:

    DIR/images/<Category>/s<seed>_<index>.jpg   RGB JPEG, 1024x768, data bar on ~60% of the images
    DIR/teacher_cache.jsonl                     one TeacherRecord per image x question family
    DIR/facts.jsonl                             what each image shows, keyed by image_id (facts.py)

Every image is drawn from its own random stream, seeded by (seed, category, index), so a corpus is the
same byte for byte for the same arguments whatever the number of workers. Reruns are cheap and safe:
images whose answers are all cached are skipped, so a rerun after a crash finishes the job and a rerun
with a larger `--per-category` only adds images. A skipped image without facts (a corpus from before facts were
kept, or a crash between the two files) gets them from its scene drawn again from the seed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..question_families import PROMPT_VERSION, QUESTION_FAMILIES, SEM_CATEGORIES
from ..teacher_cache import TeacherCache, TeacherRecord, image_content_id
from .facts import FACTS_FILE_NAME, append_facts, load_synthetic_facts, scene_facts
from .grounded_teacher import TEACHER_NAME, grounded_records
from .render import draw_micrograph

logger = logging.getLogger(__name__)

CACHE_FILE_NAME = "teacher_cache.jsonl"
IMAGES_DIR_NAME = "images"
DEFAULT_JPEG_QUALITY = 92
# Records are appended (and fsynced) in batches: one fsync per image would dominate the run time.
APPEND_EVERY_IMAGES = 64


@dataclass(frozen=True)
class SyntheticCorpus:
    """Where a synthetic corpus lives and what one `generate_synthetic_corpus` call did."""

    image_root: Path
    cache_path: Path
    facts_path: Path
    counts: dict[str, int]  # images per category that the call asked for (written or already present)
    images_written: int
    images_skipped: int  # already on disk with every answer cached
    records_written: int
    elapsed_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images_written / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


@dataclass(frozen=True)
class _ImageJob:
    seed: int
    category: str
    index: int
    image_path: str  # relative to the image root, with forward slashes, as stored in the cache
    jpeg_quality: int


def _random_streams(job: _ImageJob) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the pixels and for the phrasing, fixed by (seed, category, index) alone."""
    sequence = np.random.SeedSequence([job.seed, SEM_CATEGORIES.index(job.category), job.index])
    pixels, phrasing = sequence.spawn(2)
    return np.random.default_rng(pixels), np.random.default_rng(phrasing)


def _render(job: _ImageJob, image_root: Path) -> tuple[list[TeacherRecord], dict]:
    """Draw, write and answer one image, and say what it shows; runs in worker processes."""
    pixels_rng, phrasing_rng = _random_streams(job)
    image, scene = draw_micrograph(job.category, pixels_rng)
    path = image_root / job.image_path
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=job.jpeg_quality)
    image_id = image_content_id(path)
    return grounded_records(scene, image_id, job.image_path, phrasing_rng), scene_facts(scene, image_id, job.image_path)


def _redrawn_facts(job: _ImageJob, image_root: Path) -> dict | None:
    """The facts of an image already on disk, from its scene drawn again; None when this code draws other bytes
    (another generator version or JPEG quality), since the scene would then not be the one on disk."""
    image, scene = draw_micrograph(job.category, _random_streams(job)[0])
    encoded = io.BytesIO()
    image.save(encoded, "JPEG", quality=job.jpeg_quality)
    image_id = hashlib.sha256(encoded.getvalue()).hexdigest()
    if image_id != image_content_id(image_root / job.image_path):
        return None
    return scene_facts(scene, image_id, job.image_path)


def _answered_image_id(job: _ImageJob, image_root: Path, completed: set[tuple[str, str, str, str]]) -> str | None:
    """The image's content id when it is on disk with every answer cached, else None."""
    path = image_root / job.image_path
    if not path.is_file():
        return None
    image_id = image_content_id(path)
    answered = all((image_id, family.key, PROMPT_VERSION, TEACHER_NAME) in completed for family in QUESTION_FAMILIES)
    return image_id if answered else None


def _known_fact_ids(facts_path: Path) -> set[str]:
    return set(load_synthetic_facts(facts_path.parent)) if facts_path.is_file() else set()


@contextmanager
def _mapper(workers: int) -> Iterator:
    """An order-preserving map: in-process for one worker, over a process pool otherwise."""
    if workers == 1:
        yield map
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield partial(pool.map, chunksize=4)


def _validate(per_category: int, seed: int, workers: int, categories: Sequence[str], jpeg_quality: int) -> None:
    if not isinstance(per_category, int) or per_category < 1:
        raise ValueError(f"per_category must be a positive integer (got {per_category!r})")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (got {seed!r})")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer (got {workers!r})")
    unknown = [category for category in categories if category not in SEM_CATEGORIES]
    if unknown or not categories:
        raise ValueError(
            f"unknown or no categories {unknown or list(categories)}; choose from {', '.join(SEM_CATEGORIES)}"
        )
    if not 1 <= jpeg_quality <= 95:
        raise ValueError(f"jpeg_quality must be within 1..95 (got {jpeg_quality})")


def _write_redrawn_facts(mapped, jobs: list[_ImageJob], image_root: Path, facts_path: Path, progress: bool) -> None:
    redrawn = list(
        tqdm(
            mapped(partial(_redrawn_facts, image_root=image_root), jobs),
            total=len(jobs),
            unit="facts",
            disable=not progress or not jobs,
        )
    )
    append_facts(facts_path, [facts for facts in redrawn if facts is not None])
    mismatched = [job.image_path for job, facts in zip(jobs, redrawn, strict=True) if facts is None]
    if mismatched:
        logger.warning(
            "No facts for %d image(s) of %s, e.g. %s: drawn again from the seed they differ from the files on disk "
            "(another generator version or JPEG quality), so their scenes are unknown.",
            len(mismatched),
            image_root,
            ", ".join(mismatched[:3]),
        )


def generate_synthetic_corpus(
    out_dir: str | os.PathLike,
    per_category: int,
    seed: int = 0,
    *,
    workers: int = 1,
    categories: Sequence[str] = SEM_CATEGORIES,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    progress: bool = False,
) -> SyntheticCorpus:
    """Write `per_category` synthetic micrographs for each of `categories` under `out_dir`, with answers.

    Images already on disk whose answers are all in the cache are kept as they are.
    """
    _validate(per_category, seed, workers, categories, jpeg_quality)
    out_dir = Path(out_dir)
    image_root = out_dir / IMAGES_DIR_NAME
    cache = TeacherCache(out_dir / CACHE_FILE_NAME)
    facts_path = out_dir / FACTS_FILE_NAME
    jobs = [
        _ImageJob(seed, category, index, f"{category}/s{seed}_{index:05d}.jpg", jpeg_quality)
        for category in categories
        for index in range(per_category)
    ]
    completed = cache.completed_keys()
    answered_ids = {job: _answered_image_id(job, image_root, completed) for job in jobs}
    pending = [job for job in jobs if answered_ids[job] is None]
    known_facts = _known_fact_ids(facts_path)
    without_facts = [job for job in jobs if answered_ids[job] not in known_facts | {None}]

    start = time.perf_counter()
    records_written, batch, facts_batch = 0, [], []
    with _mapper(workers) as mapped:
        results = mapped(partial(_render, image_root=image_root), pending)
        for done, (records, facts) in enumerate(
            tqdm(results, total=len(pending), unit="image", disable=not progress), start=1
        ):
            batch.extend(records)
            if facts["image_id"] not in known_facts:
                facts_batch.append(facts)
            if done % APPEND_EVERY_IMAGES == 0 or done == len(pending):
                # Facts first: an image whose answers are cached then always has its facts, or gets them redrawn.
                append_facts(facts_path, facts_batch)
                cache.append_many(batch)
                records_written, batch, facts_batch = records_written + len(batch), [], []
        _write_redrawn_facts(mapped, without_facts, image_root, facts_path, progress)
    return SyntheticCorpus(
        image_root=image_root,
        cache_path=cache.path,
        facts_path=facts_path,
        counts=dict(Counter(job.category for job in jobs)),
        images_written=len(pending),
        images_skipped=len(jobs) - len(pending),
        records_written=records_written,
        elapsed_seconds=time.perf_counter() - start,
    )
