"""What every benchmark shares: the workload (a synthetic corpus through the real data pipeline), the two models at
the paper's size, interleaved timing with medians, and the result tables and JSON files.

Fairness rules, applied by every benchmark here:
- MVaEMa and the peer (transformers' `BlipForQuestionAnswering` at the same size, `instruct_tuning/peer.py`) are
  measured in the same process, on the same batches, in alternating rounds, so that load from other processes on
  a shared machine hits both alike; each figure is the median over rounds after warm-up.
- Batches are real: the built-in synthetic corpus (1024x768 JPEGs, grounded answers) goes through the dataset
  builder, a WordPiece tokenizer trained on it, the pixel store, `ImageGroupedBatchSampler` (4 questions per image,
  as the training script) and `QACollator` (captions dropped from half the prompts, tensors trimmed to the batch's
  longest text). The vocabulary of both models is forced to the paper-size 8192 whatever the tokenizer's size.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from dataset_builder.synthetic import IMAGES_DIR_NAME
from instruct_tuning.data import (
    ImageGroupedBatchSampler,
    PixelStore,
    QACollator,
    QATable,
    build_pixel_store,
    corpus_categories,
    synthetic_corpus,
    tokenize_split,
)
from instruct_tuning.factories import attach_categories, model_config, train_processor
from instruct_tuning.factories import model_from_config as fresh_model
from instruct_tuning.variants import MVAEMA
from modeling_mvaema import MVaEMaConfig, MVaEMaProcessor

PAPER_VOCAB_SIZE = 8192
QUESTIONS_PER_IMAGE = 4
QA_PAIRS_PER_SYNTHETIC_IMAGE = 22  # 10 question families, 22 sub-questions
REPO_ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------------------------
# Workload
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Workload:
    """A tokenised synthetic corpus and its pixel store, ready for batching."""

    corpus: object  # datasets.Dataset, one row per QA pair
    processor: MVaEMaProcessor
    pixel_store: PixelStore
    table: QATable
    image_root: Path


def per_category_for(num_pairs: int) -> int:
    """Synthetic images per category (10 categories) so that the corpus holds at least `num_pairs` QA pairs and
    every category has enough images for 10 stratified folds."""
    return max(12, math.ceil(num_pairs / (10 * QA_PAIRS_PER_SYNTHETIC_IMAGE)))


def prepare_workload(cache_dir: Path, per_category: int, seed: int = 0) -> Workload:
    """Generate (once) the synthetic corpus under `cache_dir`, build the dataset, the processor and the pixel store.

    Everything is cached in `cache_dir`, so subprocesses (memory measurements) and reruns reuse it.
    """
    corpus_dir = Path(cache_dir) / f"synthetic-{per_category}x10-seed{seed}"
    corpus = synthetic_corpus(corpus_dir, per_category, seed, num_folds=10, cache_dir=corpus_dir / "hf")
    processor = _processor(corpus, corpus_dir / "processor")
    pixel_store = build_pixel_store(corpus, 224, corpus_dir / "pixels")
    table = tokenize_split(corpus, processor, pixel_store)
    return Workload(corpus, processor, pixel_store, table, corpus_dir / IMAGES_DIR_NAME)


def _processor(corpus, saved: Path) -> MVaEMaProcessor:
    """The training script's processor factory at the paper's vocabulary, saved for reruns and subprocesses, with the
    corpus's categories (the token tables hold each pair's position among them)."""
    if saved.exists():
        processor = MVaEMaProcessor.from_pretrained(saved)
    else:
        processor = train_processor(corpus, vocab_size=PAPER_VOCAB_SIZE)
        processor.save_pretrained(saved)
    return attach_categories(processor, corpus_categories(corpus))


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def training_batches(
    workload: Workload, batch_size: int, count: int, seed: int = 0, captions: str = "drop"
) -> list[dict[str, torch.Tensor]]:
    """`count` distinct batches as the training script makes them (captions dropped from half the prompts), or with
    `captions="always"` as the VQA evaluation asks its questions. Further epochs are drawn when one is too short."""
    table, batches = workload.table, []
    sampler = ImageGroupedBatchSampler(table.image_index, batch_size, QUESTIONS_PER_IMAGE, seed, drop_last=True)
    collator = QACollator(table, workload.pixel_store, captions=captions, caption_drop_rate=0.5, seed=seed)
    if len(sampler) == 0:
        raise ValueError(
            f"batch {batch_size} exceeds the benchmark corpus ({len(table)} QA pairs); prepare a larger "
            "workload (per_category_for(batch_size))."
        )
    for epoch in range(math.ceil(count / len(sampler))):
        sampler.set_epoch(epoch)
        collator.set_epoch(epoch)
        batches.extend(collator(indices) for indices in sampler)
    return batches[:count]


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------
def paper_config(processor: MVaEMaProcessor, **overrides) -> MVaEMaConfig:
    """The paper-size MVaEMa config (hidden 64, 6 + 6 layers, 4 heads, 224 px, patch 32) with vocabulary 8192."""
    config = model_config(processor, MVAEMA, **overrides)
    config.text_config.vocab_size = PAPER_VOCAB_SIZE
    return config


def build_model(name: str, processor: MVaEMaProcessor, device: torch.device, seed: int = 0, **overrides):
    """MVaEMa (`MVAEMA`) or the BLIP peer (`PEER`) at the paper's size on `device`; `overrides` are config fields."""
    return model_from_config(name, paper_config(processor, **overrides), device, seed)


def model_from_config(name: str, config: MVaEMaConfig, device: torch.device, seed: int = 0):
    """MVaEMa with `config`, or the BLIP peer of the same size, as the training script builds them, on `device`."""
    torch.manual_seed(seed)
    return fresh_model(name, config).to(device)


def parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(
    contestants: dict[str, Callable[[], None]], rounds: int, warmup: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of each contestant, one figure per round, contestants alternating within each round.

    `warmup` untimed calls of each come first (allocator, caches, lazy initialisation, compilation).
    """
    for run in contestants.values():
        for _ in range(warmup):
            run()
        synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in contestants}
    for round_index in range(rounds):
        # Alternate the order too, so that neither contestant always runs right after the other.
        names = list(contestants) if round_index % 2 == 0 else list(reversed(contestants))
        for name in names:
            synchronize(device)
            started = time.perf_counter()
            contestants[name]()
            synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """Relative spread of repeated timings, `min..max` around the median, e.g. '-3%/+12%'."""
    middle = statistics.median(values)
    return f"-{(1 - min(values) / middle) * 100:.0f}%/+{(max(values) / middle - 1) * 100:.0f}%"


# ----------------------------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------------------------
def resident_mib(field: str) -> float:
    """A memory figure of this process from /proc/self/status: "VmRSS" (now) or "VmHWM" (peak since the process
    started or since `reset_peak_resident`). Unlike getrusage's ru_maxrss, VmHWM does not inherit the peak of the
    process image that forked this one before `exec`, which would be the parent benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}: peak memory is measured on Linux only.")


def reset_peak_resident() -> None:
    """Restart VmHWM from the current RSS (Linux >= 4.0), so that the next peak is that of what runs next."""
    Path("/proc/self/clear_refs").write_text("5")


def cuda_peak_of(run: Callable[[], None], device: torch.device) -> dict:
    """CUDA memory held before `run` (model, optimiser state once created, inputs) and at its peak."""
    run()  # creates optimiser state and warms the allocator
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"allocated_before_mib": before / 2**20, "peak_allocated_mib": peak / 2**20,
            "peak_increase_mib": (peak - before) / 2**20}


def save_memory_inputs(path: Path, processor: MVaEMaProcessor, batches: list[dict]) -> Path:
    """What a memory-measuring subprocess needs (the config and the batches), so that it skips the corpus setup, whose
    own peak would hide the model's."""
    torch.save({"config": paper_config(processor).to_dict(), "batches": batches}, path)
    return path


def load_memory_inputs(path: Path) -> tuple[MVaEMaConfig, list[dict]]:
    saved = torch.load(path, weights_only=False)
    return MVaEMaConfig.from_dict(saved["config"]), saved["batches"]


def run_child(module: str, arguments: list[str]) -> dict:
    """Run `python -m module arguments` in a fresh process (its peak RSS is its own) and return the JSON object it
    prints last."""
    completed = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"benchmarks: `{module} {' '.join(arguments)}` failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    """Where and with what the numbers were measured."""
    import transformers

    described = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_cores": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "mvaema": _package_version(),
    }
    if device.type == "cpu":
        described["cpu_model"] = _cpu_model()
    return described


def _package_version() -> str | None:
    try:
        return importlib.metadata.version("mvaema")
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """A plain fixed-width table on stdout."""
    cells = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.rjust(width) if index else cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def write_json(path: Path | None, results: dict) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    if results.get("complete", True):
        print(f"\nwrote {path}")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks: --device cuda, but torch sees no CUDA device on this machine.")
    return torch.device(name)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast around the forward pass (the backward follows its casts), or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")


def run_benchmark(argv: list[str] | None, parse_args: Callable[[list[str] | None], argparse.Namespace],
                  run: Callable[[argparse.Namespace], dict],
                  memory_child: Callable[[str, argparse.Namespace], None] | None = None) -> int:
    """A benchmark's `main`: parse, then either serve as the memory-measuring child of `peak_memory`, or run with the
    synthetic corpus in `--cache-dir` (default: a temporary folder) and write the results to `--out`."""
    args = parse_args(argv)
    if memory_child is not None and args.memory_child:
        memory_child(args.memory_child, args)
        return 0
    with tempfile.TemporaryDirectory(prefix="mvaema-bench-") as scratch:
        args.cache_dir = args.cache_dir or Path(scratch)
        write_json(args.out, run(args))
    return 0
