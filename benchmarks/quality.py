"""The quality comparison of the paper's Tables 1, 2 and 4 (6 with --ablations), cross-validated on the built-in corpus.

    python -m benchmarks.quality --out benchmarks/results/quality            # 5 folds, every baseline (hours on a CPU)
    python -m benchmarks.quality --ablations --out benchmarks/results/quality  # also the five paper ablations
    python -m benchmarks.quality --quick --out results/quality                # smoke run: minutes
    python -m benchmarks.quality --resume --out benchmarks/results/quality   # go on after a stop (finished runs kept)
    python -m benchmarks.quality --folds 1,2 --models mvaema,blip_peer --out benchmarks/results/quality  # one piece

It runs the training script itself (`run_instruct_tuning.main`) once per test fold (`--folds k`): MVaEMa, the BLIP
peer and the supervised baselines train on the same folds, pixels and schedule, and are scored by the same
evaluation. After each fold it copies into `--out` the script's results.md and results.json, which cover every
finished (model, fold) run in `--out`/run, from this invocation and earlier ones, each row naming its folds; writes
quality.md (the tables under the machine, the wall time, the package version and the command) and quality.json (the
same facts, machine-readable); and prints the git commands that commit that fold on its own. The script's own
outputs (models, checkpoints, caches, each run's result.json) stay in `--out`/run.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch

import run_instruct_tuning
from benchmarks import common
from instruct_tuning.arguments import parse_folds, parse_models
from instruct_tuning.baselines import BASELINES
from instruct_tuning.variants import ABLATIONS, MVAEMA, PEER

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quality"
# 15 epochs by default: three more than the main job's, about 1.5 hours for all models' five folds on 2 CPU cores.
# The paper trains 50; the student is still learning at 15 (see docs/results.md), so --num-epochs raises the budget
# of every model alike.
FULL_EPOCHS = 15
FULL_FOLDS = 5
# Three folds is the fewest the split allows (test fold, the next fold for validation, the rest for training).
QUICK_FOLDS = 3
QUICK = ["--num_folds", str(QUICK_FOLDS), "--num_epochs", "2", "--synthetic_per_category", "3", "--batch_size", "16",
         "--max_eval_questions", "32"]
FULL_MODELS = [MVAEMA, PEER, *BASELINES]
QUICK_MODELS = [MVAEMA, PEER, "vit", "features"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the tables (default: benchmarks/results/quality)")
    parser.add_argument("--ablations", action="store_true", help="also train the five paper ablations (no_itc, no_itm, no_sa, "
                        "no_ca, no_csa)")
    parser.add_argument("--folds", help="comma-separated test folds to run, e.g. 1,2 (default: every fold); finished "
                        "runs of other folds in --out are kept and stay in the tables")
    parser.add_argument("--models", help="comma-separated models to train: " + ", ".join(FULL_MODELS + list(ABLATIONS))
                        + " (default: MVaEMa, the peer and every baseline; with --quick the baselines vit and "
                        "features; --ablations adds the five ablations)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 folds, 2 epochs, 3 images per category, "
                        "baselines vit and features, 32 generated answers per fold")
    parser.add_argument("--resume", action="store_true", help="keep the finished (model, fold) runs in --out/run and "
                        "continue the others from their last checkpoint; the wall time then covers this invocation only")
    parser.add_argument("--num-epochs", type=int, help=f"epochs of every model (default {FULL_EPOCHS}; the paper's "
                        "is 50); not with --quick")
    parser.add_argument("--synthetic-dir", type=Path, help="where the synthetic corpus is generated (default: the script's)")
    args = parser.parse_args(argv)
    if args.quick and args.num_epochs is not None:
        parser.error("--num-epochs sets the full benchmark's budget; --quick has its own (2 epochs)")
    if args.num_epochs is not None and args.num_epochs < 1:
        parser.error(f"--num-epochs must be at least 1, got {args.num_epochs}")
    if args.ablations and args.models:
        parser.error("--models names every model to train: add the ablations to it instead of --ablations")
    try:
        args.folds = parse_folds(args.folds, num_folds(args)) if args.folds else list(range(num_folds(args)))
        args.models = parse_models(args.models) if args.models else default_models(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def num_folds(args: argparse.Namespace) -> int:
    return QUICK_FOLDS if args.quick else FULL_FOLDS


def default_models(args: argparse.Namespace) -> list[str]:
    models = QUICK_MODELS if args.quick else FULL_MODELS
    return [MVAEMA, *ABLATIONS, *models[1:]] if args.ablations else list(models)


def script_arguments(args: argparse.Namespace, fold: int) -> list[str]:
    """The training script's command line for one test fold of this benchmark."""
    full = ["--num_folds", str(FULL_FOLDS), "--num_epochs", str(args.num_epochs or FULL_EPOCHS)]
    arguments = ["--folds", str(fold), "--models", ",".join(args.models), "--output_dir", str(args.out / "run"),
                 *(QUICK if args.quick else full)]
    if args.synthetic_dir:
        arguments += ["--synthetic_dir", str(args.synthetic_dir)]
    if args.resume:
        arguments.append("--resume")
    return arguments


def quality_report(facts: dict) -> str:
    """quality.md: what was measured where, then the script's tables."""
    machine = facts["environment"]
    header = [
        "# Quality benchmark", "",
        f"- Command: `{facts['command']}` (training script: `python run_instruct_tuning.py {' '.join(facts['script_arguments'])}`)",
        f"- Package: mvaema {machine.get('mvaema') or 'not installed (checkout)'}; torch {machine['torch']}, "
        f"transformers {machine['transformers']}, Python {machine['python']}",
        f"- Machine: {machine['device']} ({machine.get('cpu_model') or machine['device_name']}), {machine['cpu_cores']} CPU cores, "
        f"{machine['torch_threads']} torch threads; measured {machine['date']}",
        f"- Wall time: {facts['wall_time_seconds'] / 60:.1f} min for this invocation, which trained "
        f"{', '.join(facts['models'])} on test {fold_words(facts['folds_done'])}"
        + (" (resumed: finished runs kept, stopped ones continued)" if facts["resumed"] else ""),
        f"- The rows cover every finished run in `{facts['run_dir']}/runs`, from this invocation and earlier ones; "
        "the Folds column names each row's test folds.", "",
    ]
    return "\n".join(header) + "\n" + (Path(facts["run_dir"]) / "results.md").read_text()


def fold_words(folds: list[int]) -> str:
    return f"fold{'s' if len(folds) > 1 else ''} {', '.join(map(str, folds))}"


def write_tables(args: argparse.Namespace, facts: dict) -> list[Path]:
    """results.md/json (the script's, over every finished run), quality.md and quality.json into --out."""
    tables = [args.out / name for name in ("results.md", "results.json", "quality.md", "quality.json")]
    for name in ("results.md", "results.json"):
        shutil.copyfile(args.out / "run" / name, args.out / name)
    (args.out / "quality.md").write_text(quality_report(facts))
    common.write_json(args.out / "quality.json", facts)
    return tables


def commit_suggestion(args: argparse.Namespace, fold: int, tables: list[Path]) -> str:
    """The git commands that commit one finished fold on its own: its runs' result.json and the regenerated tables.
    The benchmark never runs git itself: what to commit, and when, is the user's call."""
    results = [args.out / "run" / "runs" / model / f"fold_{fold}" / "result.json" for model in args.models]
    paths = " ".join(shlex.quote(str(path)) for path in [*results, *tables] if path.exists())
    message = shlex.quote(f"Quality benchmark: {', '.join(args.models)}, fold {fold} of {num_folds(args)}")
    return (f"Fold {fold} finished. To commit it on its own (`runs/` is git-ignored, hence -f):\n"
            f"  git add -f {paths}\n  git commit -m {message} -- {paths}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    facts = {"command": " ".join(["python -m benchmarks.quality", *(argv if argv is not None else sys.argv[1:])]),
             "environment": common.environment(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
             "run_dir": str(args.out / "run"), "resumed": args.resume, "models": args.models, "folds_done": []}
    # One script invocation per fold: the tables are regenerated and the fold can be committed as soon as it is done,
    # so a stop loses at most the fold in progress (and --resume continues that one from its last checkpoint).
    for fold in args.folds:
        arguments = script_arguments(args, fold)
        run_instruct_tuning.main(arguments)
        facts.update(script_arguments=arguments, wall_time_seconds=time.perf_counter() - started,
                     folds_done=[*facts["folds_done"], fold])
        tables = write_tables(args, facts)
        print(f"Quality tables: {args.out / 'quality.md'}\n{commit_suggestion(args, fold, tables)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
