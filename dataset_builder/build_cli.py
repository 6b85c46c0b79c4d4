"""`mvaema-build-dataset`: build the instruction corpus, save it as parquet with a dataset card, optionally push it.

    mvaema-build-dataset --images SEM/ --cache teacher_cache.jsonl --out corpus/ [--push-to-hub me/sem-instruct]

OUT_DIR gets the layout the Hub repo gets (images stored once, QA pairs refer to them by `image_id`):

    README.md           dataset card (YAML: configs, features, licence; provenance, fold counts)
    build_report.json   every skipped file and unused teacher record, with the reason (kept local)
    qa/train-*.parquet      one row per QA pair
    images/train-*.parquet  one row per image, the image file's bytes embedded

OUT_DIR is written as a new folder next to it and swapped in at the end: an existing OUT_DIR is replaced only
when it holds nothing but these files, and it may neither contain nor lie inside the image folder or a cache.
The push is private unless `--public` is given, and refuses to write into an existing public repository
without `--public`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .builder import BUILD_REPORT_FILENAME, SEMInstruct
from .output_folder import check_output_folder, replaced_on_success
from .prepared_corpus import IMAGES_CONFIG, QA_CONFIG, save_prepared_corpus
from .publishing import build_dataset_card, push_prepared_corpus

logger = logging.getLogger(__name__)

CARD_FILENAME = "README.md"


def is_own_output(entry: Path) -> bool:
    """Whether an entry of an existing output folder is one this command writes."""
    if entry.name in (CARD_FILENAME, BUILD_REPORT_FILENAME):
        return entry.is_file() and not entry.is_symlink()
    if entry.name in (QA_CONFIG, IMAGES_CONFIG) and entry.is_dir() and not entry.is_symlink():
        return all(shard.suffix == ".parquet" and shard.is_file() for shard in entry.iterdir())
    return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mvaema-build-dataset", description=__doc__.split("\n")[0])
    parser.add_argument("--images", required=True, type=Path, help="image folder: IMAGES/<Category>/<image>")
    parser.add_argument("--cache", required=True, action="append", type=Path, help="teacher cache JSONL (repeatable)")
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder, replaced whole at the end (refused if it holds other files or overlaps an input)",
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
        inputs = [("--images", args.images), *(("--cache", cache) for cache in args.cache)]
        if args.cache_dir is not None:
            inputs.append(("--cache-dir", args.cache_dir))
        check_output_folder(args.out, inputs, is_own_output)
        report, num_rows, num_images = build_into(args)
        if args.push_to_hub:
            url = push_prepared_corpus(args.out, args.push_to_hub, public=args.public)
            logger.info("Pushed to %s (%s)", url, "public" if args.public else "private")
    except (FileNotFoundError, ValueError, PermissionError) as error:
        print(f"mvaema-build-dataset: error: {error}", file=sys.stderr)
        return 1
    logger.info("Saved %d QA pairs about %d images to %s", num_rows, num_images, args.out)
    print(f"{args.out / BUILD_REPORT_FILENAME}: {len(report['skipped_files'])} files skipped (reasons inside)")
    return 0


def build_into(args: argparse.Namespace) -> tuple[dict, int, int]:
    """Build the corpus and write it (shards, report, card) as the new `args.out`; (report, rows, images)."""
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
    with replaced_on_success(args.out) as staging:
        qa_table, image_rows = save_prepared_corpus(
            builder.as_dataset(split="train"), staging, builder.rendered_originals()
        )
        (staging / BUILD_REPORT_FILENAME).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        card = build_dataset_card(qa_table, image_rows, report, args.push_to_hub or str(args.out), args.license)
        card.save(staging / CARD_FILENAME)
    return report, len(qa_table), len(image_rows)


if __name__ == "__main__":
    sys.exit(main())
