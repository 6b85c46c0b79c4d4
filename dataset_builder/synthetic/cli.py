"""`mvaema-synth`: write a synthetic SEM corpus (images + grounded teacher cache) from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..question_families import SEM_CATEGORIES
from .corpus import DEFAULT_JPEG_QUALITY, generate_synthetic_corpus


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvaema-synth",
        description="Write a synthetic SEM corpus (images + grounded teacher cache) for running MVaEMa offline.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory (images/ and teacher_cache.jsonl)")
    parser.add_argument("--per-category", required=True, type=int, help="images per category")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0); same seed, same bytes")
    parser.add_argument("--workers", type=int, default=1, help="processes to render with (default 1)")
    parser.add_argument(
        "--categories",
        nargs="+",
        choices=SEM_CATEGORIES,
        default=list(SEM_CATEGORIES),
        metavar="CATEGORY",
        help="subset of the SEM categories (default: all ten)",
    )
    parser.add_argument(
        "--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, help=f"JPEG quality (default {DEFAULT_JPEG_QUALITY})"
    )
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        corpus = generate_synthetic_corpus(
            args.out,
            args.per_category,
            args.seed,
            workers=args.workers,
            categories=args.categories,
            jpeg_quality=args.jpeg_quality,
            progress=args.progress,
        )
    except ValueError as error:
        parser.error(str(error))
    print(
        f"{corpus.images_written} images written ({corpus.images_skipped} already complete), "
        f"{corpus.records_written} teacher records -> {corpus.cache_path}, facts -> {corpus.facts_path} "
        f"in {corpus.elapsed_seconds:.1f} s ({corpus.images_per_second:.1f} images/s)",
        file=sys.stdout,
    )
    return 0
