"""The training script's epoch at the main job's settings: this tree against another commit, in one run.

    python -m benchmarks.training_epoch --against HEAD~5            # this tree vs five commits back, MVaEMa and the peer
    python -m benchmarks.training_epoch --against HEAD~3 --rounds 3 --epochs 2 --out benchmarks/results/cpu/epoch.json

What is timed is what `run_instruct_tuning.py` spends on an epoch of the built-in corpus (fold 0, its batch, one
question per micrograph, 4 question groups per micrograph, augmentation on): the script's own `training_loaders`
(sampler, `QACollator` with its augmentation), its own `train_epoch` loop (forward, backward, the scheduled optimizer
step) and the epoch's validation loss, with the optimizer the script builds. `training_throughput.py` times the model
step alone on pre-collated batches; this one includes collation, which the training process does in line.

Each (tree, model) measurement is a fresh child process that imports the package from that tree (`git worktree` of
`--against`, made in a temporary folder and removed afterwards) and trains `--epochs` epochs after its setup; the
children alternate (this tree, the other, this tree, ...) for `--rounds` rounds, so that load from elsewhere falls on
both, and each figure is the median epoch over rounds. The BLIP peer's epoch, trained by the same loop on the same
batches, is measured beside MVaEMa's in each tree, as every benchmark here does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mvaema", "blip_peer")


# ----------------------------------------------------------------------------------------------------------------
# The child: one tree, one model, a few epochs (imports nothing from this tree but the tree under test)
# ----------------------------------------------------------------------------------------------------------------
def measure_epochs(tree: Path, model_name: str, epochs: int, threads: int, scratch: Path) -> dict:
    """Seconds of each epoch (training loop + validation loss) of `model_name`, with `tree`'s package."""
    sys.path.insert(0, str(tree))
    import torch

    torch.set_num_threads(threads)
    import instruct_tuning
    from instruct_tuning import training
    from instruct_tuning.arguments import ScriptArguments
    from instruct_tuning.checkpoints import TrainingState
    from instruct_tuning.data import build_pixel_store, load_corpus, prepare_fold
    from instruct_tuning.factories import build_model, build_processor

    if not Path(instruct_tuning.__file__).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"imported {instruct_tuning.__file__}, not the package of {tree}")
    args = ScriptArguments(output_dir=str(scratch / "outputs"), num_epochs=epochs)
    accelerator = training.make_accelerator(args)
    corpus = load_corpus(args, accelerator)
    processor = build_processor(corpus, args)
    pixel_store = build_pixel_store(corpus, processor.image_processor.size["height"], scratch / "dataset_cache")
    data = prepare_fold(corpus, 0, args.num_folds, processor, pixel_store)
    torch.manual_seed(args.seed)
    model = build_model(model_name, processor, args.overrides)
    # The optimizer the script builds: `training.adam` where the tree has it, torch's Adam before that.
    build_optimizer = getattr(training, "adam", lambda parameters, rate: torch.optim.Adam(parameters, lr=rate))
    optimizer = build_optimizer(model.parameters(), args.learning_rate)
    train_loader, collator, validation_loader = training.training_loaders(data, args, 0)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    run = training.RunContext(model_name, 0, args, accelerator, scratch / "run")
    state = TrainingState()
    seconds, samples_per_second = [], []
    for epoch in range(epochs):
        train_loader.set_epoch(epoch)
        collator.set_epoch(epoch)
        started = time.perf_counter()
        samples_per_second.append(training.train_epoch(run, model, optimizer, train_loader, state))
        training.validation_loss(accelerator.unwrap_model(model), validation_loader, accelerator.device)
        seconds.append(time.perf_counter() - started)
        state.epoch += 1
    return {"epoch_seconds": seconds, "train_samples_per_second": samples_per_second,
            "batches_per_epoch": len(train_loader), "batch_size": args.batch_size, "threads": threads}


# ----------------------------------------------------------------------------------------------------------------
# The parent: worktree, alternating children, medians and ratios
# ----------------------------------------------------------------------------------------------------------------
def run_child(tree: Path, model_name: str, args: argparse.Namespace, scratch: Path) -> dict:
    """One child in `tree`; `scratch` (one per tree, kept across its children) holds its outputs and the decoded
    pixel store, so that only the first child of a tree decodes the corpus."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child-tree", str(tree), "--child-model", model_name,
               "--epochs", str(args.epochs), "--threads", str(args.threads), "--child-scratch", str(scratch)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    completed = subprocess.run(command, cwd=tree, capture_output=True, text=True, env=environment, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"training_epoch: the {model_name} child in {tree} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def worktree_of(ref: str, scratch: Path) -> Path:
    """A checkout of `ref` (any commit-ish) in `scratch`, made with `git worktree add --detach`."""
    path = scratch / "against"
    subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(path), ref], cwd=REPO_ROOT, check=True)
    return path


def commit_of(tree: Path) -> str:
    described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=tree, capture_output=True, text=True)
    return described.stdout.strip()


def median_epoch(measurements: list[dict], skip_first: bool) -> float:
    """The median epoch over every child's epochs; the first epoch of each child is left out when later ones exist
    (it pays for lazy initialisation: allocator growth, first-call dispatch)."""
    values = [s for m in measurements for s in (m["epoch_seconds"][1:] if skip_first else m["epoch_seconds"])]
    return statistics.median(values)


def compare(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="mvaema-against-") as scratch:
        against = worktree_of(args.against, Path(scratch))
        try:
            trees = {"this tree": REPO_ROOT, args.against: against}
            scratches = {label: Path(scratch) / f"scratch-{index}" for index, label in enumerate(trees)}
            commits = {label: commit_of(tree) for label, tree in trees.items()}
            measured = {(label, model): [] for label in trees for model in args.models}
            for round_index in range(args.rounds):
                for model in args.models:
                    for label, tree in trees.items():
                        measured[label, model].append(run_child(tree, model, args, scratches[label]))
                        print(f"round {round_index + 1}/{args.rounds} {model:9s} {label:>12s}: epochs "
                              + ", ".join(f"{s:.1f} s" for s in measured[label, model][-1]["epoch_seconds"]), flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(against)], cwd=REPO_ROOT, check=False)
    skip_first = args.epochs > 1
    rows = []
    for (label, model), measurements in measured.items():
        rows.append({"tree": label, "commit": commits[label], "model": model,
                     "epoch_seconds": median_epoch(measurements, skip_first),
                     "samples_per_second": statistics.median(
                         s for m in measurements for s in m["train_samples_per_second"]),
                     "batches_per_epoch": measurements[0]["batches_per_epoch"], "children": len(measurements),
                     "epoch_seconds_of_each_child": [m["epoch_seconds"] for m in measurements]})
    by_key = {(row["tree"], row["model"]): row for row in rows}
    for row in rows:
        row["vs_against"] = by_key[args.against, row["model"]]["epoch_seconds"] / row["epoch_seconds"]
        if "blip_peer" in args.models:
            row["epoch_vs_peer"] = row["epoch_seconds"] / by_key[row["tree"], "blip_peer"]["epoch_seconds"]
    return {"benchmark": "training_epoch", "against": args.against, "epochs_per_child": args.epochs,
            "rounds": args.rounds, "threads": args.threads, "first_epoch_of_each_child_skipped": skip_first,
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
            "rows": rows}


def print_results(results: dict) -> None:
    print(f"\nOne epoch of the main job (fold 0, {results['rows'][0]['batches_per_epoch']} batches of {results['rows'][0].get('batch_size', 48)} + the "
          f"validation loss), {results['threads']} threads, median of {results['rounds']} rounds")
    header = ["model", "tree", "commit", "epoch s", "train samples/s", f"speed-up vs {results['against']}", "epoch / peer's"]
    print("  ".join(f"{h:>16s}" for h in header))
    for row in results["rows"]:
        values = [row["model"], row["tree"], row["commit"], f"{row['epoch_seconds']:.1f}", f"{row['samples_per_second']:.0f}",
                  f"{row['vs_against']:.2f}x", f"{row['epoch_vs_peer']:.2f}" if "epoch_vs_peer" in row else "-"]
        print("  ".join(f"{v:>16s}" for v in values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with (default HEAD: this tree's "
                        "uncommitted changes against its last commit)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=2, help="epochs per child (the first is not counted when > 1)")
    parser.add_argument("--rounds", type=int, default=2, help="children per (tree, model), alternating")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of each child")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child-tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-model", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--child-scratch", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child_tree is not None:
        print(json.dumps(measure_epochs(args.child_tree, args.child_model, args.epochs, args.threads, args.child_scratch)))
        return 0
    results = compare(args)
    print_results(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
