"""The prepared corpus: the layout `mvaema-build-dataset` writes and the Hub repo gets, its writer and its reader.

    qa/train-*.parquet      one row per QA pair (`qa_features` without the image)
    images/train-*.parquet  one row per image: the original file's bytes, named by `image_id`

Each image is stored once and the QA pairs refer to it by `image_id`, the SHA-256 of the file's bytes. The
reader trusts nothing in the files: a corpus from the Hub is input from strangers, and its images are written
into the image store every corpus on this machine shares.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
from PIL import Image

from .image_store import converts_faithfully, image_store_dir, store_once, store_rendering
from .images import IMAGE_SUFFIXES, BadImageError, open_micrograph

QA_CONFIG = "qa"
IMAGES_CONFIG = "images"
CONFIG_FILES = {config: f"{config}/train-*.parquet" for config in (QA_CONFIG, IMAGES_CONFIG)}
# The Hub's recommended parquet file size, and `datasets.push_to_hub`'s default shard size.
MAX_SHARD_BYTES = 500 * 1024**2
IMAGE_ID_PATTERN = re.compile(r"[0-9a-f]{64}")
# The suffix an extracted image gets when its row names no file (an image id is never an executable name).
NAMELESS_SUFFIX = ".img"


def qa_features(category_names: Sequence[str]) -> datasets.Features:
    """One QA pair: the row schema of `SEMInstruct` and of `load_prepared_corpus`."""
    return datasets.Features(
        {
            "image": datasets.Image(),
            "image_id": datasets.Value("string"),
            "category": datasets.ClassLabel(names=list(category_names)),
            "family": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "caption": datasets.Value("string"),
            "teacher": datasets.Value("string"),
            "prompt_version": datasets.Value("string"),
            "fold": datasets.Value("int32"),
        }
    )


def images_features(category_names: list[str]) -> datasets.Features:
    return datasets.Features(
        {
            "image_id": datasets.Value("string"),
            "image": datasets.Image(),
            "category": datasets.ClassLabel(names=category_names),
            "fold": datasets.Value("int32"),
        }
    )


# ---------------------------------------------------------------------------------------------- writer


def save_prepared_corpus(
    qa: datasets.Dataset, out_dir: Path, original_files: Mapping[str, str | os.PathLike] | None = None
) -> tuple[datasets.Dataset, list[dict]]:
    """Write `qa/` (rows without the image) and `images/` (each image once, the original file's bytes) shards
    into `out_dir`, which must not hold them yet.

    `original_files` maps the id of every image whose rows point at an 8-bit rendering to its original file
    (`rendered_originals` of the build report): the corpus ships originals, so that every image's bytes hash to
    its id. Returns the QA table as written and the image rows (without bytes) for the card.
    """
    for config in (QA_CONFIG, IMAGES_CONFIG):
        (out_dir / config).mkdir(parents=True)
    image_rows = unique_image_rows(qa, original_files or {})
    table = qa.remove_columns("image")
    num_shards = max(1, math.ceil(table.data.nbytes / MAX_SHARD_BYTES))
    for index in range(num_shards):
        table.shard(num_shards, index, contiguous=True).to_parquet(_shard_path(out_dir, QA_CONFIG, index, num_shards))

    features = images_features(qa.features["category"].names)
    shards = _shards_by_size(image_rows)
    for index, shard in enumerate(shards):
        columns = {name: [row[name] for row in shard] for name in ("image_id", "category", "fold")}
        columns["image"] = [{"bytes": Path(row["path"]).read_bytes(), "path": Path(row["path"]).name} for row in shard]
        datasets.Dataset.from_dict(columns, features=features).to_parquet(
            _shard_path(out_dir, IMAGES_CONFIG, index, len(shards))
        )
    return table, image_rows


def unique_image_rows(
    qa: datasets.Dataset, original_files: Mapping[str, str | os.PathLike] | None = None
) -> list[dict]:
    """The first row of every image: image_id, category, fold, and its original file (`original_files`, else
    the file the row points at)."""
    original_files = original_files or {}
    rows: dict[str, dict] = {}
    columns = qa.select_columns(["image_id", "image", "category", "fold"]).cast_column(
        "image", datasets.Image(decode=False)
    )
    for batch in columns.iter(batch_size=1000):
        for image_id, image, category, fold in zip(
            batch["image_id"], batch["image"], batch["category"], batch["fold"], strict=True
        ):
            path = str(original_files.get(image_id, image["path"]))
            rows.setdefault(image_id, {"image_id": image_id, "path": path, "category": category, "fold": fold})
    return list(rows.values())


def _shards_by_size(image_rows: list[dict]) -> list[list[dict]]:
    shards: list[list[dict]] = [[]]
    shard_bytes = 0
    for row in image_rows:
        size = Path(row["path"]).stat().st_size
        if shards[-1] and shard_bytes + size > MAX_SHARD_BYTES:
            shards.append([])
            shard_bytes = 0
        shards[-1].append(row)
        shard_bytes += size
    return shards


def _shard_path(out_dir: Path, config: str, index: int, num_shards: int) -> Path:
    return out_dir / config / f"train-{index:05d}-of-{num_shards:05d}.parquet"


# ---------------------------------------------------------------------------------------------- reader


def load_prepared_corpus(
    path_or_repo: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> datasets.Dataset:
    """The QA pairs of a corpus saved by `mvaema-build-dataset` (a local folder or a Hub dataset id), with
    the same features as `SEMInstruct` rows.

    The images are extracted to the image store under the datasets cache (once), 16-bit and transparent ones
    rendered to 8-bit PNG as the builder does, and each QA row's `image` points at its file. Every image row
    is checked before its file is written: its id must be a SHA-256 hex digest equal to the hash of its bytes,
    and its file suffix an image suffix; a row that fails stops the load with a ValueError naming it. A Hub id
    is fetched with `snapshot_download`, which honours `HF_HUB_OFFLINE` (then only a cached copy is used).
    """
    folder = _prepared_corpus_folder(path_or_repo)
    qa = _read_parquet_config(folder, QA_CONFIG, cache_dir)
    images = _read_parquet_config(folder, IMAGES_CONFIG, cache_dir)
    image_paths = _extract_images(images, image_store_dir(cache_dir), folder / IMAGES_CONFIG)
    missing = set(qa.unique("image_id")) - image_paths.keys()
    if missing:
        raise ValueError(
            f"{folder}: {len(missing)} QA image ids have no row in the '{IMAGES_CONFIG}' config "
            f"(e.g. {sorted(missing)[0]}); the upload is incomplete, rebuild it with mvaema-build-dataset."
        )
    features = qa_features(qa.features["category"].names)
    qa = qa.map(
        lambda batch: {"image": [image_paths[image_id] for image_id in batch["image_id"]]},
        batched=True,
        features=datasets.Features({**qa.features, "image": datasets.Value("string")}),
    )
    return qa.cast_column("image", datasets.Image()).select_columns(list(features))


def _prepared_corpus_folder(path_or_repo: str | os.PathLike) -> Path:
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        return local
    text = str(path_or_repo)
    if local.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1:
        raise FileNotFoundError(f"{text} is neither a folder nor a Hub dataset id (namespace/name).")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(
            snapshot_download(
                text, repo_type="dataset", allow_patterns=[f"{QA_CONFIG}/*", f"{IMAGES_CONFIG}/*", "README.md"]
            )
        )
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"Dataset {text} is not in the local Hub cache and HF_HUB_OFFLINE is set (or the Hub is unreachable): "
            "download it once with network access, or pass the folder written by mvaema-build-dataset."
        ) from error


def _read_parquet_config(folder: Path, config_name: str, cache_dir) -> datasets.Dataset:
    files = sorted(str(path) for path in (folder / config_name).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{folder / config_name} holds no parquet file: expected the layout written by mvaema-build-dataset "
            f"({QA_CONFIG}/*.parquet and {IMAGES_CONFIG}/*.parquet)."
        )
    return datasets.load_dataset(
        "parquet", data_files={"train": files}, split="train", cache_dir=str(cache_dir) if cache_dir else None
    )


def _extract_images(images: datasets.Dataset, store_dir: Path, source: Path) -> dict[str, str]:
    """image_id -> the stored file its QA rows show; each row is checked before its file is written."""
    store_dir.mkdir(parents=True, exist_ok=True)
    encoded = images.select_columns(["image_id", "image"]).cast_column("image", datasets.Image(decode=False))
    paths: dict[str, str] = {}
    row = 0
    for batch in encoded.iter(batch_size=64):
        for image_id, image in zip(batch["image_id"], batch["image"], strict=True):
            target = _checked_target(store_dir, source, row, image_id, image)
            original = store_once(target, lambda image=image: image["bytes"])
            paths[image_id] = _shown_file(Path(original), store_dir, image_id, source)
            row += 1
    return paths


def _checked_target(store_dir: Path, source: Path, row: int, image_id, image: dict) -> Path:
    """Where the image of `row` goes in the store, or a ValueError naming the row and what is wrong with it."""

    def refuse(problem: str) -> ValueError:
        return ValueError(
            f"{source}: row {row} (image_id {image_id!r}) {problem}; this corpus was altered or corrupted and "
            "the load stopped there: rebuild it with mvaema-build-dataset or ask its author."
        )

    if not isinstance(image_id, str) or not IMAGE_ID_PATTERN.fullmatch(image_id):
        raise refuse("is not an image id (the 64 lower-case hex digits of a SHA-256)")
    if not image.get("bytes"):
        raise refuse("holds no image bytes")
    actual = hashlib.sha256(image["bytes"]).hexdigest()
    if actual != image_id:
        raise refuse(f"holds bytes whose SHA-256 is {actual}, not its image_id")
    suffix = Path(image.get("path") or "").suffix.lower() or NAMELESS_SUFFIX
    if suffix not in IMAGE_SUFFIXES | {NAMELESS_SUFFIX}:
        raise refuse(f"names a {suffix!r} file, not an image ({', '.join(sorted(IMAGE_SUFFIXES))})")
    target = (store_dir / f"{image_id}{suffix}").resolve()
    if target.parent != store_dir.resolve():
        raise refuse(f"would be written to {target}, outside the image store {store_dir}")
    return target


def _shown_file(original: Path, store_dir: Path, image_id: str, source: Path) -> str:
    """The file QA rows point at: the original, or its 8-bit rendering when a plain RGB conversion would fail it."""
    try:
        with Image.open(original) as header:
            if converts_faithfully(header):
                return str(original)
        return store_rendering(open_micrograph(original), store_dir, image_id)
    except (BadImageError, OSError) as error:
        raise ValueError(f"{source}: image {image_id} is not a usable image ({error}); rebuild the corpus.") from error
