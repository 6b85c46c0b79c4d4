"""Data pipeline: 1024x768 JPEG micrographs -> model-ready tensors, and a training epoch's loading, end to end.

    python -m benchmarks.data_pipeline                  # 120 synthetic micrographs, 1 and 2 threads
    python -m benchmarks.data_pipeline --images 400 --threads 1 2 4

Two ways from file to `pixel_values`:
- naive: what a `datasets` + transformers pipeline does per item: PIL decodes the full 1024x768 JPEG, then
  `BlipImageProcessorPil` (the processor's image half) resizes to 224 x 224, rescales and normalises;
- MVaEMa: `decode_for_model` (JPEG draft mode decodes at 1/2 scale, one bicubic resize to uint8), on a thread pool,
  once per image into the pixel store (`build_pixel_store`); normalisation happens per batch in the collator.
The two agree to under one grey level on average; the table reports the mean absolute difference.

The epoch rows time the training loader (`ImageGroupedBatchSampler` + `QACollator`, batch 48) over the whole corpus;
the naive epoch (decode + processor for every row, as an image-per-row dataset does) is timed over its first batches
and extrapolated to the epoch.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks import common
from instruct_tuning.data import ImageGroupedBatchSampler, QACollator, build_pixel_store, decode_for_model, index_loader

IMAGE_SIZE = 224
NAIVE_EPOCH_BATCHES = 3


def naive_pixels(path: Path, image_processor) -> torch.Tensor:
    """Full decode + the image processor: `(3, 224, 224)` float in [-1, 1]."""
    with Image.open(path) as image:
        return image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


def fast_pixels(path: Path) -> torch.Tensor:
    """`decode_for_model` + the collator's normalisation: `(3, 224, 224)` float in [-1, 1]."""
    return torch.from_numpy(decode_for_model({"path": str(path), "bytes": None}, IMAGE_SIZE)).float().div_(127.5).sub_(1.0)


def images_per_second(function, paths: list[Path], threads: int, rounds: int) -> tuple[float, str]:
    """Median images/s of `function` over `paths` on `threads` threads, and the spread of the rounds."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(function, paths))
        seconds.append(time.perf_counter() - started)
    return len(paths) / common.median(seconds), common.spread(seconds)


def decoding(workload: common.Workload, args) -> tuple[list[dict], float]:
    paths = sorted(workload.image_root.glob("*/*.jpg"))[: args.images]
    image_processor = workload.processor.image_processor
    rows = []
    for threads in args.threads:
        for name, function in (("naive (PIL full decode + BlipImageProcessorPil)", lambda p: naive_pixels(p, image_processor)),
                               ("decode_for_model (draft mode)", fast_pixels)):
            rate, spread = images_per_second(function, paths, threads, args.rounds)
            rows.append({"path": name, "threads": threads, "images": len(paths), "images_per_second": rate, "spread": spread})
            print(f"  {name}, {threads} thread(s): {rate:.0f} images/s", flush=True)
    difference = np.mean([(fast_pixels(p) - naive_pixels(p, image_processor)).abs().mean().item() * 127.5 for p in paths[:20]])
    return rows, float(difference)


def pixel_store_build(workload: common.Workload, args) -> list[dict]:
    """`build_pixel_store` over the whole corpus (distinct images), uncached, per thread count."""
    rows = []
    for threads in args.threads:
        seconds = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as cache:
                started = time.perf_counter()
                store = build_pixel_store(workload.corpus, IMAGE_SIZE, Path(cache), num_threads=threads)
                seconds.append(time.perf_counter() - started)
        count = len(store.image_keys)
        rows.append({"threads": threads, "images": count, "seconds": common.median(seconds),
                     "images_per_second": count / common.median(seconds), "spread": common.spread(seconds)})
        print(f"  build_pixel_store, {threads} thread(s): {count / common.median(seconds):.0f} images/s", flush=True)
    return rows


def epochs(workload: common.Workload, args) -> dict:
    """One epoch of the training loader (batch 48) against the naive per-row loading, extrapolated."""
    table = workload.table
    sampler = ImageGroupedBatchSampler(table.image_index, 48, common.QUESTIONS_PER_IMAGE, seed=0, drop_last=True)
    collator = QACollator(table, workload.pixel_store, captions="drop", caption_drop_rate=0.5)
    seconds = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        for _batch in index_loader(table, sampler, collator):
            pass
        seconds.append(time.perf_counter() - started)
    fast = common.median(seconds)

    corpus, processor = workload.corpus, workload.processor
    started = time.perf_counter()
    for indices in itertools.islice(iter(sampler), NAIVE_EPOCH_BATCHES):
        rows = corpus.select(indices)  # decodes each row's image, as an image-per-row dataset does
        processor(images=rows["image"], questions=rows["question"], captions=rows["caption"],
                  answers=rows["answer"], return_tensors="pt")
    naive = (time.perf_counter() - started) / NAIVE_EPOCH_BATCHES * len(sampler)
    return {"batches": len(sampler), "qa_pairs": len(sampler) * 48, "loader_epoch_seconds": fast,
            "loader_spread": common.spread(seconds), "naive_epoch_seconds_extrapolated": naive,
            "speedup": naive / fast}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=120, help="micrographs decoded per measurement")
    parser.add_argument("--threads", type=int, nargs="+", help="thread counts (default: 1 and the core count)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 40 images, 1 round")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--per-category", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.threads = args.threads or sorted({1, common.cpu_cores()})
    if args.quick:
        args.images, args.rounds = 40, 1
    args.per_category = max(args.per_category, -(-args.images // 10))
    return args


def run(args: argparse.Namespace) -> dict:
    print(f"data pipeline: {args.images} JPEGs of 1024x768 -> 224 px tensors, threads {args.threads}", flush=True)
    workload = common.prepare_workload(args.cache_dir, args.per_category)
    results = {"environment": common.environment(torch.device("cpu")), "settings": {k: str(v) for k, v in vars(args).items()}}
    results["decoding"], results["mean_abs_difference_grey_levels"] = decoding(workload, args)
    results["pixel_store"] = pixel_store_build(workload, args)
    results["epoch"] = epochs(workload, args)
    results["environment"]["load_average_after"] = common.environment(torch.device("cpu"))["load_average"]
    print_results(results)
    return results


def print_results(results: dict) -> None:
    naive = {r["threads"]: r["images_per_second"] for r in results["decoding"] if r["path"].startswith("naive")}
    common.print_table("JPEG 1024x768 -> model-ready 224 px tensor", ["path", "threads", "images/s", "spread", "vs naive"],
                       [[r["path"], r["threads"], f"{r['images_per_second']:.0f}", r["spread"],
                         f"{r['images_per_second'] / naive[r['threads']]:.1f}x"] for r in results["decoding"]])
    print(f"mean |decode_for_model - naive| = {results['mean_abs_difference_grey_levels']:.2f} grey levels (of 255)")
    common.print_table("build_pixel_store over the corpus (uncached)", ["threads", "images", "seconds", "images/s", "spread"],
                       [[r["threads"], r["images"], f"{r['seconds']:.2f}", f"{r['images_per_second']:.0f}", r["spread"]]
                        for r in results["pixel_store"]])
    epoch = results["epoch"]
    common.print_table(f"One training epoch of loading, batch 48 ({epoch['batches']} batches, {epoch['qa_pairs']} QA pairs)",
                       ["loader", "seconds"],
                       [["pixel store + QACollator", f"{epoch['loader_epoch_seconds']:.2f}"],
                        ["naive per-row decode + processor (extrapolated)", f"{epoch['naive_epoch_seconds_extrapolated']:.1f}"],
                        ["speed-up", f"{epoch['speedup']:.0f}x"]])


def main(argv: list[str] | None = None) -> int:
    return common.run_benchmark(argv, parse_args, run)


if __name__ == "__main__":
    raise SystemExit(main())
