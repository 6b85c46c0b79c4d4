"""Training throughput: the full MVaEMa step (ITC + ITM + LM, backward, Adam step) against the BLIP peer's VQA step.

    python -m benchmarks.training_throughput                          # CPU: batch 48 and a batch sweep, fp32
    python -m benchmarks.training_throughput --fast-paths             # MVaEMa with each fast path switched off
    python -m benchmarks.training_throughput --device cuda --dtypes fp32 bf16 --batch-sizes 48 256 1024 4096 8192

Both models train on the same real batches (see `benchmarks/common.py`) with the training script's optimiser
(Adam, lr 1e-3), in alternating rounds; samples/s counts question/answer pairs. `--fast-paths` measures what each
of MVaEMa's training fast paths gains by running the model with it switched off (outputs are the same either way,
tests/test_modeling.py proves it; the ITM subset is a documented choice of objective, see `itm_pairs_per_image`).
On a GPU it also profiles a step at batch 48 and at the largest batch: kernels launched, the time they keep the GPU
busy against the wall time, and the kernels that take most of it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import common
from instruct_tuning.variants import MVAEMA, PEER
from modeling_mvaema import layers_mvaema
from modeling_mvaema.modeling_mvaema import compile_for_training

CPU_BATCH_SIZES = [16, 48, 96, 192]
GPU_BATCH_SIZES = [48, 256, 1024, 4096, 8192]


# ----------------------------------------------------------------------------------------------------------------
# One contestant: a model, its optimiser and its batches
# ----------------------------------------------------------------------------------------------------------------
def training_step(model, optimizer, batch: dict, device: torch.device, dtype: str, forward_kwargs: dict) -> None:
    with common.autocast(device, dtype):
        loss = model(**batch, **forward_kwargs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def one_image_per_question(batch: dict) -> dict:
    """The batch as a per-question model sees it: each question's image repeated, image_keys keep micrographs
    apart (ITC positives and ITM negatives are unchanged)."""
    expanded = {name: tensor for name, tensor in batch.items() if name != "image_index"}
    expanded["pixel_values"] = batch["pixel_values"][batch["image_index"]]
    return expanded


@contextlib.contextmanager
def feed_forward_on_every_position():
    """Switch off the skipping of unread (padding) positions in the text feed-forward networks."""
    computing_all = layers_mvaema.residual_on_rows
    with mock.patch.object(layers_mvaema, "residual_on_rows", lambda states, block, rows: computing_all(states, block, None)):
        yield


def contestant(
    model, batches: list[dict], device: torch.device, dtype: str, forward_kwargs: dict | None = None,
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext, fused_adam: bool = False,
) -> Callable[[], None]:
    """A callable running one training step on each of `batches` (one timed call = len(batches) steps)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam or None)
    model.train()

    def run() -> None:
        with context():
            for batch in batches:
                training_step(model, optimizer, batch, device, dtype, forward_kwargs or {})

    return run


# ----------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------
def compare(
    contestants: dict[str, Callable[[], None]], samples_per_call: int, args, device: torch.device, label: dict
) -> list[dict]:
    seconds = common.interleaved_seconds(contestants, args.rounds, args.warmup, device)
    rows = []
    for name, values in seconds.items():
        step = common.median(values) / args.steps
        rows.append({**label, "model": name, "ms_per_step": step * 1e3, "samples_per_second": samples_per_call / common.median(values),
                     "spread": common.spread(values), "rounds": len(values)})
    return rows


def sweep(workload: common.Workload, args, device: torch.device, save: Callable[[list[dict]], None]) -> list[dict]:
    """Both models (and their compiled forms with --compile) at each batch size and dtype; `save` gets the rows so
    far after each one (a run cut short keeps what it measured)."""
    rows, out_of_memory = [], set()
    for batch_size in args.batch_sizes:
        batches = [common.to_device(b, device) for b in common.training_batches(workload, batch_size, args.steps)]
        for dtype in args.dtypes:
            contestants = {}
            for name in model_names(args):
                if (name, dtype) in out_of_memory:
                    continue
                contestants[name] = contestant(build(name, workload, device), batches, device, dtype)
            try:
                rows += compare(contestants, batch_size * args.steps, args, device, {"batch_size": batch_size, "dtype": dtype})
            except torch.OutOfMemoryError:
                rows += retry_alone(contestants, batch_size, args, device, dtype, out_of_memory)
            del contestants
            release(device)
            print_progress(rows, batch_size, dtype)
            save(with_ratios(rows))
    return with_ratios(rows)


def retry_alone(contestants, batch_size, args, device, dtype, out_of_memory) -> list[dict]:
    """After an out-of-memory error, each model alone at this size; one that fails alone is skipped at larger sizes."""
    rows = []
    for name, run in contestants.items():
        release(device)
        try:
            rows += compare({name: run}, batch_size * args.steps, args, device, {"batch_size": batch_size, "dtype": dtype})
        except torch.OutOfMemoryError:
            out_of_memory.add((name, dtype))
            rows.append({"batch_size": batch_size, "dtype": dtype, "model": name, "out_of_memory": True})
    return rows


def model_names(args) -> list[str]:
    names = [MVAEMA, PEER]
    return names + [f"{name}+compile" for name in names] if args.compile else names


def build(name: str, workload: common.Workload, device: torch.device):
    base = name.removesuffix("+compile")
    model = common.build_model(base, workload.processor, device)
    if name.endswith("+compile"):
        if base == MVAEMA:
            compile_for_training(model)
        else:
            model.compile()
    return model


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add each row's samples/s relative to the peer's (the eager peer, or the compiled one for compiled rows)."""
    for row in rows:
        peer_name = PEER + ("+compile" if row["model"].endswith("+compile") else "")
        peer = [r for r in rows if r["model"] == peer_name and r["batch_size"] == row["batch_size"]
                and r["dtype"] == row["dtype"] and "samples_per_second" in r]
        if peer and "samples_per_second" in row:
            row["ratio_vs_peer"] = row["samples_per_second"] / peer[0]["samples_per_second"]
    return rows


def best_batches(rows: list[dict]) -> list[dict]:
    """Per model and dtype, the batch size with the highest samples/s, and its ratio to the peer's best."""
    best = {}
    for row in rows:
        key = (row["model"], row["dtype"])
        if "samples_per_second" in row and row["samples_per_second"] > best.get(key, {}).get("samples_per_second", 0):
            best[key] = row
    results = []
    for (model, dtype), row in best.items():
        peer = best.get((PEER + ("+compile" if model.endswith("+compile") else ""), dtype))
        results.append({"model": model, "dtype": dtype, "best_batch_size": row["batch_size"],
                        "samples_per_second": row["samples_per_second"],
                        "ratio_vs_peer_best": row["samples_per_second"] / peer["samples_per_second"] if peer else None})
    return results


def fast_path_gains(workload: common.Workload, args, device: torch.device) -> list[dict]:
    """MVaEMa with all fast paths, with each one switched off, and with all of them off (at `--fast-paths-batch`,
    in `--fast-paths-dtype`)."""
    size, dtype = args.fast_paths_batch, args.fast_paths_dtype
    batches = [common.to_device(b, device) for b in common.training_batches(workload, size, args.steps)]
    expanded = [one_image_per_question(batch) for batch in batches]
    every_pair = {"itm_pairs_per_image": 0}
    variants = {
        "all fast paths": (batches, {}, {}, contextlib.nullcontext),
        "LM head on every position": (batches, {}, {"return_logits": True}, contextlib.nullcontext),
        "ITM on every pair": (batches, every_pair, {}, contextlib.nullcontext),
        "feed-forward on padding too": (batches, {}, {}, feed_forward_on_every_position),
        "one vision pass per question": (expanded, {}, {}, contextlib.nullcontext),
        "no fast path": (expanded, every_pair, {"return_logits": True}, feed_forward_on_every_position),
    }
    contestants = {
        name: contestant(common.build_model(MVAEMA, workload.processor, device, **overrides), variant_batches,
                         device, dtype, forward_kwargs, context)
        for name, (variant_batches, overrides, forward_kwargs, context) in variants.items()
    }
    # Not a fast path of the model but of the step: one fused kernel for Adam instead of torch's multi-tensor default.
    contestants["fused Adam (added)"] = contestant(common.build_model(MVAEMA, workload.processor, device), batches,
                                                   device, dtype, fused_adam=True)
    contestants[PEER] = contestant(common.build_model(PEER, workload.processor, device), batches, device, dtype)
    rows = compare(contestants, size * args.steps, args, device, {"batch_size": size, "dtype": dtype})
    fastest = next(row for row in rows if row["model"] == "all fast paths")
    for row in rows:
        row["slowdown_vs_all_fast_paths"] = row["ms_per_step"] / fastest["ms_per_step"]
    return rows


class OperatorCounter(TorchDispatchMode):
    """Counts the ATen operators a step dispatches: on a GPU at small batch every one is a kernel launch or more,
    so this count predicts launch-bound speed better than FLOPs do."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operator_counts(workload: common.Workload, device: torch.device) -> dict[str, int]:
    batch = common.to_device(common.training_batches(workload, 48, 1)[0], device)
    counts = {}
    for name in (MVAEMA, PEER):
        run = contestant(common.build_model(name, workload.processor, device), [batch], device, "fp32")
        run()
        with OperatorCounter() as counter:
            run()
        counts[name] = counter.count
    return counts


def kernel_profile(workload: common.Workload, args, device: torch.device) -> list[dict]:
    """On a GPU: CUDA kernels launched per training step and the time they keep the GPU busy, against the step's
    wall time measured without the profiler. Busy time far under wall time means the step is bound by the host
    (Python, dispatch, launches, synchronisations), not by the GPU's arithmetic or memory."""
    from torch.profiler import ProfilerActivity, profile

    rows = []
    for batch_size in sorted({48, max(args.batch_sizes)}):
        batches = [common.to_device(b, device) for b in common.training_batches(workload, batch_size, args.steps)]
        for dtype in args.dtypes:
            for name in (MVAEMA, PEER):
                run = contestant(common.build_model(name, workload.processor, device), batches, device, dtype)
                wall = common.median(common.interleaved_seconds({name: run}, 3, 1, device)[name]) / args.steps
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
                    run()
                    common.synchronize(device)
                kernels = gpu_kernels(profiler.events())
                busy = sum(event.self_device_time_total for event in kernels) / 1e3 / args.steps
                rows.append({"batch_size": batch_size, "dtype": dtype, "model": name, "wall_ms_per_step": wall * 1e3,
                             "kernels_per_step": len(kernels) / args.steps, "gpu_busy_ms_per_step": busy,
                             "gpu_busy_fraction": busy / (wall * 1e3), "top_kernels": top_kernels(kernels, args.steps)})
                print(f"  profile batch {batch_size} {dtype} {name}: {wall * 1e3:.1f} ms/step, "
                      f"{len(kernels) / args.steps:.0f} kernels, GPU busy {busy:.1f} ms", flush=True)
                del run
                release(device)
    return rows


def gpu_kernels(events) -> list:
    """The profiler events that are GPU kernels. The optimizer's step also shows on the GPU track, as a range
    ("Optimizer.step#Adam.step") around its kernels: an annotation, and counting it would count that time twice."""
    from torch.autograd import DeviceType

    return [event for event in events if event.device_type == DeviceType.CUDA
            and not getattr(event, "is_user_annotation", False) and "#" not in event.name]


def top_kernels(kernels: list, steps: int, top: int = 12) -> list[dict]:
    """The kernels that take most GPU time per step, grouped by name (names cut to 90 characters)."""
    totals: dict[str, list[float]] = {}
    for event in kernels:
        entry = totals.setdefault(event.name[:90], [0.0, 0])
        entry[0] += event.self_device_time_total / 1e3 / steps
        entry[1] += 1 / steps
    ranked = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)[:top]
    return [{"kernel": name, "ms_per_step": ms, "launches_per_step": launches} for name, (ms, launches) in ranked]


def peak_memory(workload: common.Workload, args, device: torch.device) -> list[dict]:
    """Peak memory of a training step at batch 48: max RSS of a fresh process per model on CPU, peak allocated
    CUDA memory on GPU."""
    rows = []
    for name in (MVAEMA, PEER):
        if device.type == "cuda":
            rows.append({"model": name, "batch_size": 48, **cuda_peak(name, workload, device)})
        else:
            inputs = common.save_memory_inputs(args.cache_dir / "memory-training.pt", workload.processor, common.training_batches(workload, 48, 3))
            child = common.run_child("benchmarks.training_throughput", ["--memory-child", name, "--memory-inputs", str(inputs),
                                                                    "--threads", str(torch.get_num_threads())])
            rows.append({"model": name, "batch_size": 48, **child})
    return rows


def cuda_peak(name: str, workload: common.Workload, device: torch.device) -> dict:
    release(device)
    batches = [common.to_device(b, device) for b in common.training_batches(workload, 48, 2)]
    run = contestant(common.build_model(name, workload.processor, device), batches, device, "fp32")
    return common.cuda_peak_of(run, device)


def memory_child(name: str, args) -> None:
    """Entry of the subprocess that `peak_memory` starts: load the inputs, train, print the peak RSS as JSON."""
    import json

    config, batches = common.load_memory_inputs(args.memory_inputs)
    cpu = torch.device("cpu")
    run = contestant(common.model_from_config(name, config, cpu), batches, cpu, "fp32")
    common.reset_peak_resident()
    before = common.resident_mib("VmRSS")
    run()
    peak = common.resident_mib("VmHWM")
    print(json.dumps({"rss_before_mib": before, "peak_rss_mib": peak, "peak_increase_mib": peak - before}))


def print_progress(rows: list[dict], batch_size: int, dtype: str) -> None:
    for row in rows:
        if row["batch_size"] == batch_size and row["dtype"] == dtype:
            figure = "out of memory" if row.get("out_of_memory") else f"{row['samples_per_second']:.0f} samples/s"
            print(f"  batch {batch_size} {dtype} {row['model']}: {figure}", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, one per core)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help=f"default {CPU_BATCH_SIZES} on CPU, {GPU_BATCH_SIZES} on GPU")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], help="default fp32 on CPU, fp32 bf16 on GPU")
    parser.add_argument("--steps", type=int, default=3, help="distinct batches per timed call (one step each)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per model (the median is reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model before timing")
    parser.add_argument("--fast-paths", action="store_true", help="also measure MVaEMa with each fast path off")
    parser.add_argument("--fast-paths-batch", type=int, default=48, help="batch size of the --fast-paths table")
    parser.add_argument("--fast-paths-dtype", choices=["fp32", "bf16"], default="fp32", help="its dtype")
    parser.add_argument("--compile", action="store_true", help="also measure both models under torch.compile")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory at batch 48")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: batch 48 only, 2 steps, 2 rounds")
    parser.add_argument("--cache-dir", type=Path, help="where the synthetic corpus is generated (default: a temp dir)")
    parser.add_argument("--per-category", type=int, help="synthetic images per category (default: enough for the batches)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--memory-child", choices=[MVAEMA, PEER], help=argparse.SUPPRESS)
    parser.add_argument("--memory-inputs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = args.device == "cuda"
    args.batch_sizes = args.batch_sizes or ([48] if args.quick else GPU_BATCH_SIZES if on_gpu else CPU_BATCH_SIZES)
    args.dtypes = args.dtypes or (["fp32", "bf16"] if on_gpu else ["fp32"])
    if args.quick:
        args.steps, args.rounds = 2, 2
    args.per_category = args.per_category or common.per_category_for(max(args.batch_sizes + [args.fast_paths_batch]))
    return args


def run(args: argparse.Namespace) -> dict:
    """Every requested measurement; prints the tables and returns the results."""
    device = common.resolve_device(args.device)
    print(f"training throughput on {args.device}: batches {args.batch_sizes}, {args.dtypes}, "
          f"{args.rounds} rounds x {args.steps} steps", flush=True)
    workload = common.prepare_workload(args.cache_dir, args.per_category)
    results = {"environment": common.environment(device), "settings": {k: str(v) for k, v in vars(args).items()}}

    def save_sweep(rows: list[dict]) -> None:
        common.write_json(args.out, {**results, "sweep": rows, "complete": False})

    results["sweep"] = sweep(workload, args, device, save_sweep)
    results["best_batch"] = best_batches(results["sweep"])
    results["operators_per_step_batch48"] = operator_counts(workload, device)
    if args.fast_paths:
        results["fast_paths"] = fast_path_gains(workload, args, device)
    if args.memory:
        results["peak_memory"] = peak_memory(workload, args, device)
    if device.type == "cuda" and not args.compile:
        results["kernel_profile"] = kernel_profile(workload, args, device)
    results["environment"]["load_average_after"] = common.environment(device)["load_average"]
    results["complete"] = True
    print_results(results)
    return results


def print_results(results: dict) -> None:
    rows = [[r["batch_size"], r["dtype"], r["model"], "OOM" if r.get("out_of_memory") else f"{r['ms_per_step']:.1f}",
             "" if r.get("out_of_memory") else f"{r['samples_per_second']:.0f}", r.get("spread", ""),
             f"{r['ratio_vs_peer']:.2f}x" if "ratio_vs_peer" in r else ""] for r in results["sweep"]]
    common.print_table("Training step (ITC+ITM+LM for MVaEMa, VQA for the peer; Adam included)",
                       ["batch", "dtype", "model", "ms/step", "samples/s", "spread", "vs peer"], rows)
    common.print_table("Best batch", ["model", "dtype", "batch", "samples/s", "vs peer's best"],
                       [[r["model"], r["dtype"], r["best_batch_size"], f"{r['samples_per_second']:.0f}",
                         f"{r['ratio_vs_peer_best']:.2f}x" if r["ratio_vs_peer_best"] else ""] for r in results["best_batch"]])
    counts = results["operators_per_step_batch48"]
    common.print_table("ATen operators dispatched per training step (batch 48)", ["model", "operators"],
                       [[name, count] for name, count in counts.items()])
    if "fast_paths" in results:
        first = results["fast_paths"][0]
        common.print_table(f"MVaEMa fast paths at batch {first['batch_size']}, {first['dtype']} (each row switches one off)",
                           ["variant", "ms/step", "samples/s", "spread", "slower by"],
                           [[r["model"], f"{r['ms_per_step']:.1f}", f"{r['samples_per_second']:.0f}", r["spread"],
                             f"{r['slowdown_vs_all_fast_paths']:.2f}x"] for r in results["fast_paths"]])
    if "kernel_profile" in results:
        common.print_table("Where a GPU training step goes (kernels from torch.profiler; wall time without it)",
                           ["batch", "dtype", "model", "wall ms/step", "kernels/step", "GPU busy ms", "busy"],
                           [[r["batch_size"], r["dtype"], r["model"], f"{r['wall_ms_per_step']:.1f}",
                             f"{r['kernels_per_step']:.0f}", f"{r['gpu_busy_ms_per_step']:.1f}",
                             f"{r['gpu_busy_fraction']:.0%}"] for r in results["kernel_profile"]])
        largest = max(r["batch_size"] for r in results["kernel_profile"])
        for r in results["kernel_profile"]:
            if r["batch_size"] == largest:
                common.print_table(f"Top kernels per step, batch {largest}, {r['dtype']}, {r['model']}",
                                   ["kernel", "ms/step", "launches"],
                                   [[k["kernel"], f"{k['ms_per_step']:.2f}", f"{k['launches_per_step']:.0f}"]
                                    for k in r["top_kernels"]])
    if "peak_memory" in results:
        common.print_table("Peak memory of a training step at batch 48", ["model", "measure", "MiB"],
                           [[r["model"], key, f"{value:.0f}"] for r in results["peak_memory"]
                            for key, value in r.items() if key.endswith("_mib")])


def main(argv: list[str] | None = None) -> int:
    return common.run_benchmark(argv, parse_args, run, memory_child)


if __name__ == "__main__":
    raise SystemExit(main())
