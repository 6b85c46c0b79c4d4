"""Every benchmark, one after the other, on one shared synthetic corpus; then the projection of the full protocol.

    python -m benchmarks.run_all                                      # CPU, into benchmarks/results/cpu
    python -m benchmarks.run_all --quick --out results/smoke           # smallest settings (the CI smoke run)
    python -m benchmarks.run_all --device cuda --out results/gpu      # GPU (see benchmarks/gpu/run_on_device.sh)

Writes training.json, generation.json, data_pipeline.json, projection.json and summary.json into `--out`
(default benchmarks/results/cpu).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from benchmarks import common, data_pipeline, generation_throughput, projection, training_throughput

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cpu"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--quick", action="store_true", help="smallest settings of every benchmark")
    parser.add_argument("--compile", action="store_true", help="also time both models under torch.compile")
    parser.add_argument("--rounds", type=int, help="timed rounds per model (default: each benchmark's)")
    parser.add_argument("--skip", nargs="+", default=[], choices=["training", "generation", "data_pipeline"])
    parser.add_argument("--cache-dir", type=Path, help="synthetic corpus location (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the JSON results (default: benchmarks/results/cpu)")
    return parser.parse_args(argv)


def shared_arguments(args: argparse.Namespace, name: str) -> list[str]:
    arguments = ["--cache-dir", str(args.cache_dir), "--out", str(args.out / f"{name}.json")]
    if args.quick:
        arguments.append("--quick")
    return arguments


def model_arguments(args: argparse.Namespace) -> list[str]:
    arguments = ["--device", args.device, "--memory"]
    if args.threads:
        arguments += ["--threads", str(args.threads)]
    if args.rounds:
        arguments += ["--rounds", str(args.rounds)]
    return arguments


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mvaema-bench-") as scratch:
        args.cache_dir = args.cache_dir or Path(scratch)
        if "training" not in args.skip:
            extra = ["--fast-paths"] + (["--compile"] if args.compile else [])
            training_throughput.main(model_arguments(args) + extra + shared_arguments(args, "training"))
        if "generation" not in args.skip:
            generation_throughput.main(model_arguments(args) + ["--profile"] + shared_arguments(args, "generation"))
        if "data_pipeline" not in args.skip:
            data_pipeline.main(shared_arguments(args, "data_pipeline"))
    write_summary(args.out, torch.device(args.device))
    return 0


def write_summary(out: Path, device: torch.device) -> None:
    """The headline figures of whatever ran, and the protocol projection when both model benchmarks did."""
    loaded = {name: json.loads((out / f"{name}.json").read_text())
              for name in ("training", "generation", "data_pipeline") if (out / f"{name}.json").exists()}
    summary = {"environment": common.environment(device)}
    if "training" in loaded:
        summary["training_batch48"] = [{k: row.get(k) for k in ("model", "dtype", "samples_per_second", "ratio_vs_peer")}
                                       for row in loaded["training"]["sweep"] if row["batch_size"] == 48]
        summary["training_best_batch"] = loaded["training"]["best_batch"]
    if "generation" in loaded:
        summary["generation"] = [{k: row.get(k) for k in ("model", "dtype", "batch_size", "answers_per_second",
                                                           "ms_per_batch", "ratio_vs_peer")}
                                 for row in loaded["generation"]["sweep"]]
    if "data_pipeline" in loaded:
        summary["data_pipeline"] = {"decoding": loaded["data_pipeline"]["decoding"],
                                    "epoch": loaded["data_pipeline"]["epoch"]}
    if "training" in loaded and "generation" in loaded:
        summary["projection"] = projection.run(loaded["training"], loaded["generation"])
        common.write_json(out / "projection.json", summary["projection"])
    common.write_json(out / "summary.json", summary)


if __name__ == "__main__":
    raise SystemExit(main())
