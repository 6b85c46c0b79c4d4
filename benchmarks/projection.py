"""Projected wall time of the paper's full protocol on a SEM-sized corpus, from measured throughput.

    python -m benchmarks.projection --training results/training.json --generation results/generation.json

The protocol: 21,169 micrographs x 25 QA pairs = 529,225 pairs; 10-fold cross-validation in which each run trains on
8 folds, validates on 1 and tests on 1; 50 epochs (an upper bound: early stopping ends runs sooner); every test
question answered once, with greedy 32-token answers. Validation is a forward pass without an optimiser step; it is
counted here at training speed, an upper bound (it costs about a third of a step).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import common

SEM_IMAGES = 21_169
QA_PAIRS_PER_IMAGE = 25
FOLDS = 10
EPOCHS = 50


@dataclass(frozen=True)
class Protocol:
    """Sample counts of the full protocol (every fold, every epoch)."""

    qa_pairs: int
    every_pair_every_fold_every_epoch: int  # the round figure: pairs x folds x epochs
    training_samples: int  # 8 of 10 folds train in each run
    validation_samples: int  # 1 of 10 folds validates after every epoch
    test_answers: int  # each pair is in exactly one test fold

    @classmethod
    def sem_sized(cls, images: int = SEM_IMAGES, pairs_per_image: int = QA_PAIRS_PER_IMAGE, folds: int = FOLDS,
                  epochs: int = EPOCHS) -> "Protocol":
        pairs = images * pairs_per_image
        return cls(
            qa_pairs=pairs,
            every_pair_every_fold_every_epoch=pairs * folds * epochs,
            # Each of the `folds` runs trains on (folds - 2) / folds of the pairs: pairs x (folds - 2) per epoch.
            training_samples=pairs * (folds - 2) * epochs,
            validation_samples=pairs * epochs,
            test_answers=pairs,
        )


def projected_hours(protocol: Protocol, training_samples_per_second: float, answers_per_second: float) -> dict:
    train = protocol.training_samples / training_samples_per_second / 3600
    validate = protocol.validation_samples / training_samples_per_second / 3600
    test = protocol.test_answers / answers_per_second / 3600
    return {"training_hours": train, "validation_hours_upper_bound": validate, "test_generation_hours": test,
            "total_hours": train + validate + test}


def project(training: dict, generation: dict, protocol: Protocol) -> list[dict]:
    """One projection per (model, dtype) at batch 48 and at the model's best training batch."""
    rows = []
    for best in training["best_batch"]:
        model, dtype = best["model"], best["dtype"]
        at_48 = _find(training["sweep"], model, dtype, 48, "samples_per_second")
        answers = _best_answers(generation["sweep"], model.removesuffix("+compile"), dtype)
        if answers is None:
            continue
        for batch_size, rate in dict([(48, at_48), (best["best_batch_size"], best["samples_per_second"])]).items():
            if rate is not None:
                rows.append({"model": model, "dtype": dtype, "batch_size": batch_size, "training_samples_per_second": rate,
                             "answers_per_second": answers, **projected_hours(protocol, rate, answers)})
    return rows


def _find(rows: list[dict], model: str, dtype: str, batch_size: int, key: str) -> float | None:
    for row in rows:
        if (row["model"], row["dtype"], row["batch_size"]) == (model, dtype, batch_size) and key in row:
            return row[key]
    return None


def _best_answers(rows: list[dict], model: str, dtype: str) -> float | None:
    rates = [row["answers_per_second"] for row in rows if row["model"] == model and row["dtype"] == dtype]
    return max(rates) if rates else None


def print_projection(protocol: Protocol, rows: list[dict]) -> None:
    print(f"\nSEM-sized protocol: {SEM_IMAGES:,} images x {QA_PAIRS_PER_IMAGE} QA pairs = {protocol.qa_pairs:,} pairs; "
          f"{FOLDS} folds x {EPOCHS} epochs = {protocol.every_pair_every_fold_every_epoch:,} pair-epochs, of which "
          f"{protocol.training_samples:,} training samples (8 of 10 folds), {protocol.validation_samples:,} validation "
          f"samples, {protocol.test_answers:,} test answers")
    common.print_table(
        "Projected wall time of the full protocol (50 epochs, no early stopping)",
        ["model", "dtype", "batch", "train samples/s", "answers/s", "train h", "val h (<=)", "test h", "total h"],
        [[r["model"], r["dtype"], r["batch_size"], f"{r['training_samples_per_second']:.0f}", f"{r['answers_per_second']:.0f}",
          f"{r['training_hours']:.1f}", f"{r['validation_hours_upper_bound']:.1f}", f"{r['test_generation_hours']:.2f}",
          f"{r['total_hours']:.1f}"] for r in rows],
    )


def run(training: dict, generation: dict) -> dict:
    protocol = Protocol.sem_sized()
    rows = project(training, generation, protocol)
    print_projection(protocol, rows)
    return {"protocol": asdict(protocol), "projection": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training", type=Path, required=True, help="JSON from benchmarks.training_throughput --out")
    parser.add_argument("--generation", type=Path, required=True, help="JSON from benchmarks.generation_throughput --out")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = run(json.loads(args.training.read_text()), json.loads(args.generation.read_text()))
    common.write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
