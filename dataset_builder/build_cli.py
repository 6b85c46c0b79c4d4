"""`mvaema-build-dataset`: build the instruction corpus, save it as parquet with a dataset card, optionally push it.

    mvaema-build-dataset --images SEM/ --cache teacher_cache.jsonl --out corpus/ [--push-to-hub me/sem-instruct]

OUT_DIR gets the layout the Hub repo gets (images stored once, QA pairs refer to them by `image_id`):

    README.md           dataset card (YAML: configs, features, licence; provenance, fold counts)
    build_report.json   every skipped file and unused teacher record, with the reason (kept local)
    qa/train-*.parquet      one row per QA pair
    images/train-*.parquet  one row per image, the image file's bytes embedded

The push is private unless `--public` is given, and refuses to write into an existing public repository
without `--public`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from .builder import BUILD_REPORT_FILENAME, IMAGES_CONFIG, QA_CONFIG, SEMInstruct
from .grounded_teacher import TEACHER_NAME as GROUNDED_TEACHER_NAME
from .question_families import SEM_CATEGORIES

logger = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).with_name("dataset_card.md")
# The Hub's recommended parquet file size, and `datasets.push_to_hub`'s default shard size.
MAX_SHARD_BYTES = 500 * 1024**2
CONFIG_FILES = {config: f"{config}/train-*.parquet" for config in (QA_CONFIG, IMAGES_CONFIG)}
# Ids of mvaema-synth's grounded teacher ("grounded-synthetic/v1", later versions alike): its corpora reuse the
# SEM folder names, but their images are not the SEM dataset.
SYNTHETIC_TEACHER_PREFIX = GROUNDED_TEACHER_NAME.split("/")[0]
PRETTY_NAMES = {
    "sem": "SEM micrograph instructions (MVaEMa)",
    "synthetic": "Synthetic SEM micrograph instructions (MVaEMa)",
    "other": "Electron micrograph instructions (MVaEMa)",
}
DEFAULT_LICENSES = {"sem": "cc-by-4.0", "synthetic": "cc-by-4.0", "other": "other"}


def images_features(category_names: list[str]) -> datasets.Features:
    return datasets.Features(
        {
            "image_id": datasets.Value("string"),
            "image": datasets.Image(),
            "category": datasets.ClassLabel(names=category_names),
            "fold": datasets.Value("int32"),
        }
    )


def save_prepared_corpus(qa: datasets.Dataset, out_dir: Path) -> tuple[datasets.Dataset, list[dict]]:
    """Write `qa/` (rows without the image) and `images/` (each image once, bytes embedded) parquet shards.

    Returns the QA table as written and the image rows (without bytes) for the card. Earlier shards in
    `out_dir/qa` and `out_dir/images` are removed first: a stale shard would silently join the corpus.
    """
    for config in (QA_CONFIG, IMAGES_CONFIG):
        shutil.rmtree(out_dir / config, ignore_errors=True)
        (out_dir / config).mkdir(parents=True)
    image_rows = unique_image_rows(qa)
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


def unique_image_rows(qa: datasets.Dataset) -> list[dict]:
    """The first row of every image: image_id, category, fold, and the file the row points at."""
    rows: dict[str, dict] = {}
    columns = qa.select_columns(["image_id", "image", "category", "fold"]).cast_column(
        "image", datasets.Image(decode=False)
    )
    for batch in columns.iter(batch_size=1000):
        for image_id, image, category, fold in zip(
            batch["image_id"], batch["image"], batch["category"], batch["fold"], strict=True
        ):
            rows.setdefault(image_id, {"image_id": image_id, "path": image["path"], "category": category, "fold": fold})
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


def image_source(category_names: list[str], teachers: set[str]) -> str:
    """Where the images come from: "synthetic" (every answer from mvaema-synth's grounded teacher), "sem"
    (the SEM dataset's folder names), or "other"."""
    if teachers and all(teacher.startswith(SYNTHETIC_TEACHER_PREFIX) for teacher in teachers):
        return "synthetic"
    return "sem" if set(category_names) == set(SEM_CATEGORIES) else "other"


def build_dataset_card(
    qa_table: datasets.Dataset, image_rows: list[dict], report: dict, source: str, license_id: str | None = None
) -> DatasetCard:
    """The Hub card: YAML front matter (configs, features, licence) and provenance, folds and counts.

    `license_id` (an SPDX id) defaults to CC BY 4.0 for the SEM dataset and for synthetic images, else "other".
    """
    category_names = qa_table.features["category"].names
    origin = image_source(category_names, set(qa_table.unique("teacher")))
    license_id = license_id or DEFAULT_LICENSES[origin]
    card_data = DatasetCardData(
        license=license_id,
        pretty_name=PRETTY_NAMES[origin],
        task_categories=["visual-question-answering", "image-classification"],
        tags=["electron-microscopy", "nanomaterials", "instruction-tuning"]
        + (["synthetic"] if origin == "synthetic" else []),
        size_categories=[_size_category(len(qa_table))],
        configs=[
            {
                "config_name": QA_CONFIG,
                "data_files": [{"split": "train", "path": CONFIG_FILES[QA_CONFIG]}],
                "default": True,
            },
            {"config_name": IMAGES_CONFIG, "data_files": [{"split": "train", "path": CONFIG_FILES[IMAGES_CONFIG]}]},
        ],
    )
    DatasetInfosDict(
        {
            QA_CONFIG: _config_info(qa_table.features, len(qa_table), qa_table.data.nbytes),
            IMAGES_CONFIG: _config_info(
                images_features(category_names),
                len(image_rows),
                sum(Path(row["path"]).stat().st_size for row in image_rows),
            ),
        }
    ).to_dataset_card_data(card_data)
    return DatasetCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        pretty_name=PRETTY_NAMES[origin],
        image_source=origin,
        license=license_id,
        **_card_context(qa_table, image_rows, report, source),
    )


def _config_info(features: datasets.Features, num_rows: int, num_bytes: int) -> datasets.DatasetInfo:
    splits = datasets.SplitDict()
    splits.add(datasets.SplitInfo(name="train", num_bytes=num_bytes, num_examples=num_rows))
    return datasets.DatasetInfo(features=features, splits=splits)


def _card_context(qa_table: datasets.Dataset, image_rows: list[dict], report: dict, source: str) -> dict:
    category_names = qa_table.features["category"].names
    num_folds = report["num_folds"]
    rows_per_category = Counter(qa_table["category"])
    images_per_category = Counter(row["category"] for row in image_rows)
    per_fold = {label: [0] * num_folds for label in images_per_category}
    for row in image_rows:
        per_fold[row["category"]][row["fold"]] += 1
    categories = [
        {
            "name": name,
            "rows": rows_per_category[label],
            "images": images_per_category[label],
            "per_fold": per_fold[label],
        }
        for label, name in enumerate(category_names)
        if label in per_fold
    ]
    return {
        "source": source,
        "num_rows": len(qa_table),
        "num_images": len(image_rows),
        "questions_per_image": round(len(qa_table) / max(1, len(image_rows))),
        "num_folds": num_folds,
        "seed": report["seed"],
        "near_duplicate_distance": report["near_duplicate_distance"],
        "near_duplicate_clusters": report["near_duplicate_clusters"],
        "images_in_near_duplicate_clusters": report["images_in_near_duplicate_clusters"],
        "small_classes": report["classes_with_fewer_groups_than_folds"],
        "category_names": category_names,
        "categories": categories,
        "teachers": dict(Counter(qa_table["teacher"]).most_common()),
        "prompt_versions": dict(Counter(qa_table["prompt_version"]).most_common()),
        "files_found": report["files_found"],
        "files_skipped": len(report["skipped_files"]),
        "exact_duplicates": len(report["exact_duplicates"]),
        "images_without_answers": len(report["images_without_answers"]),
        "records_used": report["records"]["used"],
        "records_failed": report["records"]["failed"],
        "cut_off_lines": len(report["cut_off_cache_lines"]),
    }


def _size_category(num_rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_rows < limit:
            return name
    return "1M<n<10M"


def push_prepared_corpus(out_dir: Path, repo_id: str, public: bool = False) -> str:
    """Upload the card and parquet shards of `out_dir` to a dataset repo, private unless `public`."""
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
    if not public and not api.repo_info(repo_id, repo_type="dataset").private:
        raise PermissionError(
            f"Dataset repo {repo_id} already exists and is public: pass --public to publish into it, "
            "or make it private on the Hub first."
        )
    shards = [CONFIG_FILES[QA_CONFIG], CONFIG_FILES[IMAGES_CONFIG]]
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=out_dir,
        allow_patterns=["README.md", *shards],
        delete_patterns=shards,  # shards of an earlier, larger build would otherwise stay in the configs
        commit_message="Upload SEM instruction corpus (mvaema-build-dataset)",
    )
    return commit.commit_url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mvaema-build-dataset", description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, type=Path, help="image folder: IMAGES/<Category>/<image>")
    parser.add_argument("--cache", required=True, action="append", type=Path, help="teacher cache JSONL (repeatable)")
    parser.add_argument(
        "--out", required=True, type=Path, help="output folder (its qa/ and images/ sub-folders are replaced)"
    )
    parser.add_argument("--num-folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt-version", help="keep only answers made with this prompt version (default: all)")
    parser.add_argument("--num-workers", type=int, help="threads decoding images (default: one per available core)")
    parser.add_argument("--cache-dir", type=Path, help="datasets cache (default: HF_DATASETS_CACHE)")
    parser.add_argument(
        "--license", help="SPDX licence id of the images for the card (default: cc-by-4.0 for SEM and synthetic)"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload to this Hub dataset repo")
    parser.add_argument("--public", action="store_true", help="make the Hub repo public (default: private)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        builder = SEMInstruct(
            args.images,
            args.cache,
            num_folds=args.num_folds,
            seed=args.seed,
            prompt_version=args.prompt_version,
            num_workers=args.num_workers,
            cache_dir=args.cache_dir,
        )
        builder.download_and_prepare()
        report = builder.build_report
        qa_table, image_rows = save_prepared_corpus(builder.as_dataset(split="train"), args.out)
        (args.out / BUILD_REPORT_FILENAME).write_text(
            json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        card = build_dataset_card(qa_table, image_rows, report, args.push_to_hub or str(args.out), args.license)
        card.save(args.out / "README.md")
        logger.info("Saved %d QA pairs about %d images to %s", len(qa_table), len(image_rows), args.out)
        if args.push_to_hub:
            url = push_prepared_corpus(args.out, args.push_to_hub, public=args.public)
            logger.info("Pushed to %s (%s)", url, "public" if args.public else "private")
    except (FileNotFoundError, ValueError, PermissionError) as error:
        print(f"mvaema-build-dataset: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.out / BUILD_REPORT_FILENAME}: {len(report['skipped_files'])} files skipped (reasons inside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
