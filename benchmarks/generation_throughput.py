"""Generation: 32-token greedy answers per second, and single-question latency, MVaEMa against the BLIP peer.

    python -m benchmarks.generation_throughput                         # CPU: batches 1 (latency), 48, 192
    python -m benchmarks.generation_throughput --profile               # + what dominates a decoding step at 48
    python -m benchmarks.generation_throughput --device cuda --batch-sizes 1 48 1024 4096

Both models answer the same questions (with captions, as the paper's VQA evaluation) with the same settings: greedy,
no logits processor at all (no repetition rule, no suppressed token), and the end-of-answer token disabled so that
every answer has exactly 32 new tokens. MVaEMa encodes each image once for its questions (`image_index`); BLIP takes
one image per question, as it must. Batch 1 is one image and one question: the latency a user waits for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks import common
from instruct_tuning.variants import MVAEMA, PEER

NEW_TOKENS = 32
SETTINGS = dict(max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1, no_repeat_ngram_size=0, suppress_tokens=None)
CPU_BATCH_SIZES = [1, 48, 192]
GPU_BATCH_SIZES = [1, 48, 1024, 4096]


def question_batches(workload: common.Workload, batch_size: int, count: int) -> list[dict[str, torch.Tensor]]:
    """Evaluation-style batches: questions with captions, grouped by image, no answers."""
    inputs = ("pixel_values", "image_index", "input_ids", "attention_mask")
    batches = common.training_batches(workload, batch_size, count, seed=1, captions="always")
    return [{name: batch[name] for name in inputs} for batch in batches]


def answerer(name: str, model, batches: list[dict], device: torch.device, dtype: str):
    """A callable answering every batch once (greedy, 32 tokens); checks the answer length on its first call."""
    model.eval()
    without_end_of_answer(name, model)

    def generate(batch: dict) -> torch.Tensor:
        with torch.no_grad(), common.autocast(device, dtype):
            if name == MVAEMA:
                return model.generate(**batch, **SETTINGS)
            pixel_values = batch["pixel_values"][batch["image_index"]]
            return model.generate(input_ids=batch["input_ids"], pixel_values=pixel_values,
                                  attention_mask=batch["attention_mask"], **SETTINGS)

    def run() -> None:
        for batch in batches:
            generated = generate(batch)
            if generated.shape[1] != NEW_TOKENS + 1:  # the start token + 32
                raise RuntimeError(f"{name} generated {generated.shape[1] - 1} tokens, expected {NEW_TOKENS}")

    return run


def without_end_of_answer(name: str, model) -> None:
    """Disable the end-of-answer token, so that answers run to `max_new_tokens` with no logits processor (a
    `min_new_tokens` would add one). BLIP's `generate` passes its text config's [SEP] id as `eos_token_id` itself."""
    if name == MVAEMA:
        model.generation_config.eos_token_id = None
    else:
        model.config.text_config.sep_token_id = None


def sweep(workload: common.Workload, args, device: torch.device) -> list[dict]:
    rows = []
    models = {name: common.build_model(name, workload.processor, device) for name in (MVAEMA, PEER)}
    for batch_size in args.batch_sizes:
        batches = [common.to_device(b, device) for b in question_batches(workload, batch_size, args.calls)]
        for dtype in args.dtypes:
            contestants = {name: answerer(name, model, batches, device, dtype) for name, model in models.items()}
            seconds = common.interleaved_seconds(contestants, args.rounds, args.warmup, device)
            for name, values in seconds.items():
                per_call = common.median(values) / args.calls
                rows.append({"batch_size": batch_size, "dtype": dtype, "model": name,
                             "ms_per_batch": per_call * 1e3, "answers_per_second": batch_size / per_call,
                             "tokens_per_second": batch_size * NEW_TOKENS / per_call, "spread": common.spread(values)})
            peer = rows[-1] if rows[-1]["model"] == PEER else rows[-2]
            for row in rows[-2:]:
                row["ratio_vs_peer"] = row["answers_per_second"] / peer["answers_per_second"]
                print(f"  batch {batch_size} {dtype} {row['model']}: {row['answers_per_second']:.0f} answers/s", flush=True)
    return rows


def decoding_step_profile(workload: common.Workload, device: torch.device, top: int = 12) -> dict[str, list[dict]]:
    """torch.profiler's top operators (self time) over one 32-token generation at batch 48, per model."""
    from torch.profiler import ProfilerActivity, profile

    batch = common.to_device(question_batches(workload, 48, 1)[0], device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiles = {}
    for name in (MVAEMA, PEER):
        run = answerer(name, common.build_model(name, workload.processor, device), [batch], device, "fp32")
        run()
        with profile(activities=activities) as profiler:
            run()
        common.synchronize(device)
        events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)[:top]
        profiles[name] = [{"operator": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                           "self_device_ms": getattr(e, "self_device_time_total", 0) / 1e3} for e in events]
    return profiles


def peak_memory(workload: common.Workload, args, device: torch.device) -> list[dict]:
    rows = []
    for name in (MVAEMA, PEER):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            batches = [common.to_device(b, device) for b in question_batches(workload, 48, 1)]
            run = answerer(name, common.build_model(name, workload.processor, device), batches, device, "fp32")
            rows.append({"model": name, "batch_size": 48, **common.cuda_peak_of(run, device)})
        else:
            inputs = common.save_memory_inputs(args.cache_dir / "memory-generation.pt", workload.processor, question_batches(workload, 48, 2))
            child = common.run_child("benchmarks.generation_throughput", ["--memory-child", name, "--memory-inputs", str(inputs),
                                                                    "--threads", str(torch.get_num_threads())])
            rows.append({"model": name, "batch_size": 48, **child})
    return rows


def memory_child(name: str, args) -> None:
    """Entry of the subprocess that `peak_memory` starts: load the inputs, generate, print the peak RSS as JSON."""
    config, batches = common.load_memory_inputs(args.memory_inputs)
    cpu = torch.device("cpu")
    run = answerer(name, common.model_from_config(name, config, cpu), batches, cpu, "fp32")
    common.reset_peak_resident()
    before = common.resident_mib("VmRSS")
    run()
    peak = common.resident_mib("VmHWM")
    print(json.dumps({"rss_before_mib": before, "peak_rss_mib": peak, "peak_increase_mib": peak - before}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"default {CPU_BATCH_SIZES} on CPU, {GPU_BATCH_SIZES} on GPU")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], help="default fp32 on CPU, fp32 bf16 on GPU")
    parser.add_argument("--calls", type=int, default=2, help="distinct batches per timed call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile one generation at batch 48")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at batch 48")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: batches 1 and 48, 2 rounds")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--per-category", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--memory-child", choices=[MVAEMA, PEER], help=argparse.SUPPRESS)
    parser.add_argument("--memory-inputs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device == "cuda"
    args.batch_sizes = args.batch_sizes or ([1, 48] if args.quick else GPU_BATCH_SIZES if on_gpu else CPU_BATCH_SIZES)
    args.dtypes = args.dtypes or (["fp32", "bf16"] if on_gpu else ["fp32"])
    if args.quick:
        args.rounds, args.calls = 2, 1
    args.per_category = args.per_category or common.per_category_for(max(args.batch_sizes))
    return args


def run(args: argparse.Namespace) -> dict:
    device = common.resolve_device(args.device)
    print(f"generation on {args.device}: batches {args.batch_sizes}, {args.dtypes}, {NEW_TOKENS} greedy tokens", flush=True)
    workload = common.prepare_workload(args.cache_dir, args.per_category)
    results = {"environment": common.environment(device), "settings": {**{k: str(v) for k, v in vars(args).items()},
                                                                      "generate": SETTINGS}}
    results["sweep"] = sweep(workload, args, device)
    if args.profile:
        results["profile_batch48"] = decoding_step_profile(workload, device)
    if args.memory:
        results["peak_memory"] = peak_memory(workload, args, device)
    results["environment"]["load_average_after"] = common.environment(device)["load_average"]
    print_results(results)
    return results


def print_results(results: dict) -> None:
    common.print_table(
        f"Greedy generation, {NEW_TOKENS} new tokens per answer (batch 1 = single-question latency)",
        ["batch", "dtype", "model", "ms/batch", "answers/s", "spread", "vs peer"],
        [[r["batch_size"], r["dtype"], r["model"], f"{r['ms_per_batch']:.1f}", f"{r['answers_per_second']:.1f}",
          r["spread"], f"{r['ratio_vs_peer']:.2f}x"] for r in results["sweep"]],
    )
    for name, events in results.get("profile_batch48", {}).items():
        common.print_table(f"Top operators of one generation at batch 48: {name}", ["operator", "calls", "self CPU ms"],
                           [[e["operator"][:60], e["calls"], f"{e['self_cpu_ms']:.1f}"] for e in events])
    if "peak_memory" in results:
        common.print_table("Peak memory of a generation at batch 48", ["model", "measure", "MiB"],
                           [[r["model"], key, f"{value:.0f}"] for r in results["peak_memory"]
                            for key, value in r.items() if key.endswith("_mib")])


def main(argv: list[str] | None = None) -> int:
    return common.run_benchmark(argv, parse_args, run, memory_child)


if __name__ == "__main__":
    raise SystemExit(main())
