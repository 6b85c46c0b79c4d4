"""`SEMInstruct`: a folder of micrographs plus teacher caches -> a `datasets.Dataset` of QA pairs with leak-free folds.

    builder = SEMInstruct(image_root="SEM/", teacher_caches=["teacher_cache.jsonl"], num_folds=10, seed=0)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")      # one row per (image, sub-question)
    builder.build_report                              # what was skipped, superseded, unmatched, and why

How it works, and why:
- Every file `dataset_builder.images.scan_image_folder` finds under `IMAGE_ROOT/<Category>/` (the package's one
  folder rule: hidden names ignored, links followed) is decoded exactly once, on all cores (a thread pool). The
  same pass computes the content id (sha256 of the bytes, the teacher cache's `image_id`) and a perceptual
  hash; files that cannot be used are listed in the build report with the reason, never fatal.
- Teacher records are matched to images by content id, so moved or renamed folders still match.
- Folds are `StratifiedGroupKFold` over images, stratified by category and grouped by near-duplicate
  cluster (perceptual-hash distance <= 4, transitively joined; `folds`): ~12% of the SEM images are
  near-duplicates, and a re-saved or resized copy in the test fold would be a leak.
- Rows store the image *path* (compact, no re-encoding). Images whose pixels a plain `.convert("RGB")`
  would get wrong (16-bit greyscale is clipped to white; transparency turns black) are rendered once to an
  8-bit PNG in the image store next to the datasets cache (`image_store`), and the rows point there.
- A changed image folder, teacher cache or builder code gives a new cache directory (the builder `hash`
  is a fingerprint of file names, sizes and mtimes), so a stale dataset is never returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import datasets
import imagehash
import numpy as np
from datasets.builder import Key
from PIL import Image

from . import folds as folds_module
from . import image_store, prepared_corpus, question_families, teacher_cache
from . import images as images_module
from .folds import near_duplicate_clusters, stratified_group_folds
from .image_store import converts_faithfully, image_store_dir, store_rendering
from .images import BadImageError, FolderImage, SkippedImage, category_folders, open_micrograph, scan_image_folder
from .prepared_corpus import load_prepared_corpus, qa_features
from .question_families import QUESTION_FAMILIES, SEM_CATEGORIES, caption_for_category
from .teacher_cache import STATUS_OK, TeacherCache, TeacherRecord, image_content_id

# `load_prepared_corpus` is the other way to get the same rows (from a saved or pushed corpus): both loaders
# are importable from here.
__all__ = [
    "BuildReport",
    "SEMInstruct",
    "SEMInstructConfig",
    "category_names_for",
    "inspect_image_folder",
    "load_instruct_corpus",
    "load_prepared_corpus",
    "near_duplicate_clusters",
    "qa_features",
    "stratified_group_folds",
]

logger = logging.getLogger(__name__)

BUILD_REPORT_FILENAME = "build_report.json"
NEAR_DUPLICATE_DISTANCE = 4
# What happened to each teacher record read, as counted in the build report.
RECORD_OUTCOMES = ("read", "used", "superseded", "failed", "unknown_image", "other_prompt_version", "category_mismatch")
_FAMILY_ORDER = {family.key: index for index, family in enumerate(QUESTION_FAMILIES)}


@dataclass
class SEMInstructConfig(datasets.BuilderConfig):
    """`prompt_version=None` accepts every prompt version found (each row carries its version, and the
    build report counts them); a version string keeps only records made with that prompt."""

    image_root: str = ""
    teacher_caches: tuple[str, ...] = ()
    num_folds: int = 10
    seed: int = 0
    prompt_version: str | None = None
    near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE

    def __post_init__(self):
        super().__post_init__()
        if self.num_folds < 2:
            raise ValueError(f"num_folds={self.num_folds}: cross-validation needs at least 2 folds.")
        if not 0 <= self.near_duplicate_distance < 64:
            raise ValueError(
                f"near_duplicate_distance={self.near_duplicate_distance}: a 64-bit perceptual hash distance "
                "is between 0 and 63 (4 is the SEM dataset's near-duplicate threshold)."
            )


@dataclass
class ImageEntry:
    """One usable micrograph. `stored_path` is what the dataset row points at: the file itself, or its
    8-bit rendering when the file's mode would not survive a plain RGB conversion."""

    path: str
    relative_path: str  # under the image root, "/"-separated
    category: str
    image_id: str
    perceptual_hash: int
    stored_path: str


@dataclass
class BuildReport:
    """Everything the build did not use, and why; written as `build_report.json` next to the prepared data."""

    image_root: str
    teacher_caches: list[str]
    num_folds: int
    seed: int
    prompt_version: str | None
    near_duplicate_distance: int
    files_found: int = 0
    images_used: int = 0
    images_rendered_to_8bit: int = 0
    rendered_originals: dict[str, str] = field(default_factory=dict)  # image id -> original, relative to the root
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    exact_duplicates: list[dict[str, str]] = field(default_factory=list)
    images_without_answers: list[str] = field(default_factory=list)
    near_duplicate_clusters: int = 0
    images_in_near_duplicate_clusters: int = 0
    largest_near_duplicate_cluster: int = 0
    classes_with_fewer_groups_than_folds: dict[str, int] = field(default_factory=dict)
    images_per_category_and_fold: dict[str, list[int]] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECORD_OUTCOMES, 0))
    cut_off_cache_lines: list[dict[str, object]] = field(default_factory=list)
    unknown_image_examples: list[str] = field(default_factory=list)
    rows: int = 0
    rows_per_category: dict[str, int] = field(default_factory=dict)
    rows_per_teacher: dict[str, int] = field(default_factory=dict)
    rows_per_prompt_version: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: SEMInstructConfig) -> BuildReport:
        return cls(
            config.image_root,
            list(config.teacher_caches),
            config.num_folds,
            config.seed,
            config.prompt_version,
            config.near_duplicate_distance,
        )

    def summary(self) -> str:
        records = self.records
        return (
            f"{self.rows} QA pairs from {self.images_used - len(self.images_without_answers)} images "
            f"({self.files_found} files found, {len(self.skipped_files)} skipped, "
            f"{len(self.exact_duplicates)} exact duplicates, {len(self.images_without_answers)} without answers); "
            f"teacher records: {records['used']} used, {records['superseded']} superseded, {records['failed']} failed, "
            f"{records['unknown_image']} for unknown images, {records['other_prompt_version']} other prompt version, "
            f"{records['category_mismatch']} category mismatch, {len(self.cut_off_cache_lines)} cut-off lines; "
            f"{self.near_duplicate_clusters} near-duplicate clusters"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


class SEMInstruct(datasets.GeneratorBasedBuilder):
    """Instruction-tuning QA pairs for electron micrographs; see the module docstring."""

    BUILDER_CONFIG_CLASS = SEMInstructConfig
    VERSION = datasets.Version("1.0.0")

    def __init__(
        self,
        image_root: str | os.PathLike,
        teacher_caches: str | os.PathLike | Iterable[str | os.PathLike],
        num_folds: int = 10,
        seed: int = 0,
        prompt_version: str | None = None,
        near_duplicate_distance: int = NEAR_DUPLICATE_DISTANCE,
        num_workers: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs,
    ):
        root = _existing_image_root(image_root)
        caches = _existing_caches(teacher_caches)
        # `_info()` runs inside `super().__init__` and needs the label names.
        self.category_names = category_names_for(root)
        self.num_workers = num_workers
        super().__init__(
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            dataset_name="sem_instruct",
            hash=input_fingerprint(root, caches),
            image_root=str(root),
            teacher_caches=caches,
            num_folds=num_folds,
            seed=seed,
            prompt_version=prompt_version,
            near_duplicate_distance=near_duplicate_distance,
            **kwargs,
        )

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Question/answer pairs about electron micrographs, written by a multimodal teacher.",
            features=qa_features(self.category_names),
            license="Images: the image folder's licence (CC BY 4.0 for the SEM dataset of Aversa et al. 2018).",
        )

    @property
    def build_report(self) -> dict:
        """The report of the prepared dataset (call after `download_and_prepare()`)."""
        report_path = Path(self.cache_dir) / BUILD_REPORT_FILENAME
        if not report_path.exists():
            raise FileNotFoundError(f"{report_path} does not exist: call download_and_prepare() first.")
        return json.loads(report_path.read_text(encoding="utf-8"))

    def rendered_originals(self) -> dict[str, Path]:
        """image id -> original file, for the images whose rows point at their 8-bit rendering."""
        report = self.build_report
        return {image_id: Path(report["image_root"]) / path for image_id, path in report["rendered_originals"].items()}

    def _split_generators(self, dl_manager):
        report = BuildReport.for_config(self.config)
        images = inspect_image_folder(
            Path(self.config.image_root), image_store_dir(self._cache_dir_root), report, self.num_workers
        )
        if not images:
            reasons = "; ".join(f"{item['path']}: {item['reason']}" for item in report.skipped_files[:5])
            raise ValueError(
                f"No usable image under {self.config.image_root}: expected IMAGE_ROOT/<Category>/<image> with "
                f"JPEG, PNG or TIFF files ({len(report.skipped_files)} files skipped, e.g. {reasons or 'none'})."
            )
        folds = assign_folds_to_images(images, self.category_names, self.config, report)
        records_by_image = select_records(images, self.config, report)
        examples = [
            (entry, int(fold), records_by_image.get(entry.image_id, []))
            for entry, fold in zip(images, folds, strict=True)
        ]
        count_rows(examples, report)
        if report.rows == 0:
            raise ValueError(
                f"No QA pair: none of the {report.records['read']} teacher records matched a usable image under "
                f"{self.config.image_root} (outcomes: {report.records}; records for unknown images, e.g. "
                f"{report.unknown_image_examples[:3]}). Point the builder at the folder the teacher was run on."
            )
        (Path(self._output_dir) / BUILD_REPORT_FILENAME).write_text(report.to_json(), encoding="utf-8")
        log_report(report)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"examples": examples})]

    def _generate_examples(self, examples: list[tuple[ImageEntry, int, list[TeacherRecord]]]):
        index = 0
        for entry, fold, records in examples:
            for record in records:
                for question, answer in zip(record.questions, record.answers, strict=True):
                    if not answer.strip():
                        continue
                    yield (
                        Key(0, index),
                        {
                            "image": entry.stored_path,
                            "image_id": entry.image_id,
                            "category": entry.category,
                            "family": record.family,
                            "question": question,
                            "answer": answer,
                            "caption": caption_for_category(entry.category),
                            "teacher": record.teacher,
                            "prompt_version": record.prompt_version,
                            "fold": fold,
                        },
                    )
                    index += 1


def load_instruct_corpus(
    image_root: str | os.PathLike,
    teacher_caches: str | os.PathLike | Iterable[str | os.PathLike],
    num_folds: int = 10,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    **config,
) -> datasets.Dataset:
    """Build (or reuse the cached build of) `SEMInstruct` and return its train split."""
    builder = SEMInstruct(image_root, teacher_caches, num_folds=num_folds, seed=seed, cache_dir=cache_dir, **config)
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


# ---------------------------------------------------------------------------------------------- inputs


def _existing_image_root(image_root: str | os.PathLike) -> Path:
    root = Path(image_root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder {root} does not exist; pass the folder that holds <Category>/<image>.")
    return root


def _existing_caches(teacher_caches: str | os.PathLike | Iterable[str | os.PathLike]) -> tuple[str, ...]:
    if isinstance(teacher_caches, (str, os.PathLike)):
        teacher_caches = [teacher_caches]
    caches = tuple(str(Path(cache).expanduser().resolve()) for cache in teacher_caches)
    if not caches:
        raise ValueError("No teacher cache given: pass the JSONL file(s) written by mvaema-teacher or mvaema-synth.")
    missing = [cache for cache in caches if not Path(cache).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Teacher cache not found: {', '.join(missing)}. Check the path (or run mvaema-teacher)."
        )
    return caches


def category_names_for(image_root: Path) -> tuple[str, ...]:
    """The SEM label order when every folder is an SEM category (ids then match across corpora), else the
    sorted folder names."""
    folders = category_folders(image_root)
    if not folders:
        raise ValueError(
            f"No category sub-folder in {image_root}: expected IMAGE_ROOT/<Category>/<image> "
            f"(e.g. {image_root}/Nanowires/L1_0a1b.jpg)."
        )
    return SEM_CATEGORIES if set(folders) <= set(SEM_CATEGORIES) else tuple(folders)


def input_fingerprint(image_root: Path, teacher_caches: Sequence[str]) -> str:
    """Changes whenever a file the build reads (an image `scan_image_folder` finds, linked ones included, or a
    teacher cache) or the code that builds rows changes.

    Name, size and mtime stand in for the content: stat-ing 21k files takes milliseconds, hashing them minutes.
    """
    digest = hashlib.sha256()
    scan = scan_image_folder(image_root)
    for image in scan.images:
        stat = image.path.stat()
        digest.update(f"{image.relative_path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for skipped in scan.skipped:
        digest.update(f"{skipped.path}\0skipped\n".encode())
    for cache in teacher_caches:
        stat = os.stat(cache)
        digest.update(f"{cache}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    for module in (images_module, image_store, folds_module, prepared_corpus, question_families, teacher_cache):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- images


def inspect_image_folder(
    image_root: Path, store_dir: Path, report: BuildReport, num_workers: int | None = None
) -> list[ImageEntry]:
    """Decode every image `scan_image_folder` finds once; return the usable images (sorted by path, exact
    duplicates dropped) and name every file that was not used in `report`."""
    scan = scan_image_folder(image_root)
    report.files_found = scan.files_found
    report.skipped_files.extend({"path": item.path, "reason": item.reason} for item in scan.skipped)
    store_dir.mkdir(parents=True, exist_ok=True)
    inspect = partial(_inspect_image, store_dir=store_dir)
    entries_by_id: dict[str, ImageEntry] = {}
    for result in _map_in_threads(inspect, scan.images, num_workers):
        if isinstance(result, SkippedImage):
            report.skipped_files.append({"path": result.path, "reason": result.reason})
        elif result.image_id in entries_by_id:
            same_as = entries_by_id[result.image_id].relative_path
            report.exact_duplicates.append({"path": result.relative_path, "same_as": same_as})
        else:
            entries_by_id[result.image_id] = result
            if result.stored_path != result.path:
                report.rendered_originals[result.image_id] = result.relative_path
    report.images_rendered_to_8bit = len(report.rendered_originals)
    report.images_used = len(entries_by_id)
    return list(entries_by_id.values())


def _map_in_threads(function, items: list, num_workers: int | None) -> Iterator:
    """`map(function, items)` in input order on `num_workers` threads (default: every available core).

    Threads, not processes: Pillow's decoders, `convert` and `resize`, hashlib and numpy release the GIL, so
    threads keep every core busy without a process pool's start-up imports, pickling, or fork hazards in a
    caller that already runs torch threads.
    """
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if num_workers <= 1:
        yield from map(function, items)
        return
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        yield from pool.map(function, items)


def _inspect_image(image: FolderImage, store_dir: Path) -> ImageEntry | SkippedImage:
    path = str(image.path)
    try:
        decoded = open_micrograph(path)
        with Image.open(path) as header:  # header only, no second decode: which mode did the file have?
            faithful = converts_faithfully(header)
    except BadImageError as error:
        return SkippedImage(image.relative_path, error.reason)
    image_id = image_content_id(path)
    stored_path = path if faithful else store_rendering(decoded, store_dir, image_id)
    return ImageEntry(
        path, image.relative_path, image.category, image_id, _hash_to_int(imagehash.phash(decoded)), stored_path
    )


def _hash_to_int(image_hash: imagehash.ImageHash) -> int:
    return int.from_bytes(np.packbits(image_hash.hash.flatten()).tobytes(), "big")


# ---------------------------------------------------------------------------------------------- folds


def assign_folds_to_images(
    images: list[ImageEntry], category_names: Sequence[str], config: SEMInstructConfig, report: BuildReport
) -> np.ndarray:
    """Folds over every usable image, answered or not, so that folds stay put while the teacher catches up."""
    labels = np.array([category_names.index(entry.category) for entry in images])
    clusters = near_duplicate_clusters(
        np.array([entry.perceptual_hash for entry in images], dtype=np.uint64), config.near_duplicate_distance
    )
    folds = stratified_group_folds(labels, clusters, config.num_folds, config.seed, category_names)

    cluster_sizes = np.bincount(clusters)
    report.near_duplicate_clusters = int((cluster_sizes > 1).sum())
    report.images_in_near_duplicate_clusters = int(cluster_sizes[cluster_sizes > 1].sum())
    report.largest_near_duplicate_cluster = int(cluster_sizes.max())
    for label, name in enumerate(category_names):
        in_class = labels == label
        if not in_class.any():
            continue
        report.images_per_category_and_fold[name] = np.bincount(folds[in_class], minlength=config.num_folds).tolist()
        groups_in_class = len(np.unique(clusters[in_class]))
        if groups_in_class < config.num_folds:
            report.classes_with_fewer_groups_than_folds[name] = groups_in_class
    return folds


# ---------------------------------------------------------------------------------------------- records


def select_records(
    images: list[ImageEntry], config: SEMInstructConfig, report: BuildReport
) -> dict[str, list[TeacherRecord]]:
    """The latest successful record per (image, family, prompt version, teacher), grouped by image id.

    "Latest" is the newest `created_at`; on a tie the record read last (later cache, later line) wins.
    """
    images_by_id = {entry.image_id: entry for entry in images}
    latest: dict[tuple[str, str, str, str], TeacherRecord] = {}
    for record in _read_caches(config.teacher_caches, report):
        report.records["read"] += 1
        reason = _rejection_reason(record, images_by_id, config.prompt_version)
        if reason:
            report.records[reason] += 1
            if reason == "unknown_image" and len(report.unknown_image_examples) < 20:
                report.unknown_image_examples.append(record.image_path)
            continue
        previous = latest.get(record.key)
        if previous is not None:
            report.records["superseded"] += 1
            if previous.created_at > record.created_at:
                continue
        latest[record.key] = record
    report.records["used"] = len(latest)

    records_by_image: dict[str, list[TeacherRecord]] = defaultdict(list)
    for record in latest.values():
        records_by_image[record.image_id].append(record)
    for records in records_by_image.values():
        records.sort(
            key=lambda r: (_FAMILY_ORDER.get(r.family, len(_FAMILY_ORDER)), r.family, r.teacher, r.prompt_version)
        )
    report.images_without_answers = [entry.relative_path for entry in images if entry.image_id not in records_by_image]
    return records_by_image


def _read_caches(teacher_caches: Sequence[str], report: BuildReport) -> Iterator[TeacherRecord]:
    for cache_path in teacher_caches:
        records, read_report = TeacherCache(cache_path).read()
        report.cut_off_cache_lines.extend(
            {"cache": cache_path, "line": line, "error": error} for line, error in read_report.bad_lines
        )
        yield from records


def _rejection_reason(record: TeacherRecord, images_by_id: dict[str, ImageEntry], prompt_version: str | None) -> str:
    if record.status != STATUS_OK:
        return "failed"
    if record.image_id not in images_by_id:
        return "unknown_image"
    if prompt_version is not None and record.prompt_version != prompt_version:
        return "other_prompt_version"
    # The teacher was told the category in its caption: answers written for another label would teach that label.
    if record.category != images_by_id[record.image_id].category:
        return "category_mismatch"
    return ""


def count_rows(examples: list[tuple[ImageEntry, int, list[TeacherRecord]]], report: BuildReport) -> None:
    per_category, per_teacher, per_version = Counter(), Counter(), Counter()
    for entry, _, records in examples:
        for record in records:
            pairs = sum(1 for answer in record.answers if answer.strip())
            per_category[entry.category] += pairs
            per_teacher[record.teacher] += pairs
            per_version[record.prompt_version] += pairs
    report.rows = sum(per_category.values())
    report.rows_per_category = dict(sorted(per_category.items()))
    report.rows_per_teacher = dict(per_teacher.most_common())
    report.rows_per_prompt_version = dict(per_version.most_common())


def log_report(report: BuildReport) -> None:
    logger.info("SEMInstruct build: %s", report.summary())
    for skipped in report.skipped_files:
        logger.warning("Skipped %s: %s", skipped["path"], skipped["reason"])
    if len(report.rows_per_prompt_version) > 1:
        logger.warning(
            "Rows from %d prompt versions are mixed (%s); pass prompt_version=... to keep one.",
            len(report.rows_per_prompt_version),
            ", ".join(report.rows_per_prompt_version),
        )
    if report.classes_with_fewer_groups_than_folds:
        logger.warning(
            "Classes with fewer image groups than folds appear in only that many folds: %s",
            report.classes_with_fewer_groups_than_folds,
        )
