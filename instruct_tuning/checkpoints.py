"""Checkpoints of a training run: what a resumed run needs to continue exactly where a killed one stopped.

A run folder holds at most one complete `checkpoint-epoch-<N>` (model, optimiser and RNG states saved by accelerate,
plus `training_state.json`), `best/` (the model with the lowest finite validation loss so far) and, once evaluated,
`result.json`. Each of them is written under a temporary name, flushed and renamed, so a kill or a full disk
leaves the previous complete one in place. `best/` and each checkpoint list the files the run wrote into them
(`OWN_FILES_LIST`, with their sizes); a folder is only ever deleted or replaced while it holds nothing else. The
top of `--output_dir` keeps the same list for what every run replaces there (`TOP_LEVEL_OUTPUTS`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator
from filelock import FileLock

from instruct_tuning.arguments import ArgumentError
from instruct_tuning.atomic_io import (
    REPLACED_SUFFIX,
    fsync_path,
    fsync_tree,
    recover_directory,
    replace_directory,
    write_text_atomically,
)
from instruct_tuning.variants import MVAEMA, PEER

TRAINING_STATE_FILE = "training_state.json"
PARTIAL_CHECKPOINT = "checkpoint-partial"
BEST_DIR = "best"
RESULT_FILE = "result.json"
OWN_FILES_LIST = "files-written-by-the-run.json"
TOP_LEVEL_LOCK = ".top-level-outputs.lock"
# What every run writes at the top of --output_dir (reporting.write_reports and save_model_with_card, over every
# finished run in the folder): replaced by the next run, so each must be a run's own.
TOP_LEVEL_OUTPUTS = ("results.json", "results.md", *(f"confusion_matrix_{variant}.png" for variant in (MVAEMA, PEER)),
                     "model")


@dataclass
class TrainingState:
    """What, besides model/optimiser/RNG (saved by accelerate), a resumed run needs to continue identically."""

    epoch: int = 0
    global_step: int = 0
    best_validation_loss: float = math.inf
    epochs_without_improvement: int = 0
    nonfinite_steps: int = 0
    scheduler: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-epoch-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return checkpoints[-1] if checkpoints else None


def discard_partial_checkpoint(accelerator: Accelerator, run_dir: Path) -> None:
    """Remove what a killed save left in `checkpoint-partial`: it is never reused."""
    if accelerator.is_main_process:
        shutil.rmtree(run_dir / PARTIAL_CHECKPOINT, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainingState) -> None:
    """Write to `checkpoint-partial`, flush, then rename: a kill during the save leaves the previous checkpoint."""
    final = run_dir / f"checkpoint-epoch-{state.epoch}"
    partial = run_dir / PARTIAL_CHECKPOINT
    discard_partial_checkpoint(accelerator, run_dir)
    accelerator.save_state(str(partial), safe_serialization=True)
    accelerator.wait_for_everyone()  # each process writes its own RNG state: all of them must be done
    if accelerator.is_main_process:
        older = [old for old in run_dir.glob("checkpoint-epoch-*") if old != final]
        check_only_own_files(older)
        write_text_atomically(partial / TRAINING_STATE_FILE, json.dumps(asdict(state)))
        record_own_files(partial)
        fsync_tree(partial)
        os.replace(partial, final)
        fsync_path(run_dir)
        for old in older:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> TrainingState:
    """Restore model, optimiser and RNG states into the prepared objects; returns the loop's own state."""
    accelerator.load_state(str(checkpoint))
    return TrainingState(**json.loads((checkpoint / TRAINING_STATE_FILE).read_text()))


def save_best(model, run_dir: Path) -> None:
    """`save_pretrained` into a staging folder, then swap it in for `best/` (call on the main process only)."""
    recover_directory(run_dir / BEST_DIR)
    check_only_own_files([run_dir / BEST_DIR])
    staged = run_dir / f"{BEST_DIR}.partial"
    shutil.rmtree(staged, ignore_errors=True)
    model.save_pretrained(staged)
    record_own_files(staged)
    replace_directory(staged, run_dir / BEST_DIR)


def best_model_dir(run_dir: Path) -> Path:
    """`best/`, put back if a swap was killed half way; a clear error when no epoch ever had a finite loss."""
    best = run_dir / BEST_DIR
    recover_directory(best)
    if not best.exists():
        raise FloatingPointError(f"{run_dir}: no epoch had a finite validation loss, so there is no best model; lower "
                                 "--learning_rate or check the corpus, then run again without --resume")
    return best


def clear_run_outputs(run_dir: Path) -> None:
    """What an earlier run left in this run folder (best model, checkpoints, result), removed before a fresh run so
    that nothing stale is ever loaded as this run's."""
    recover_directory(run_dir / BEST_DIR)
    kept = [run_dir / BEST_DIR, *run_dir.glob("checkpoint-epoch-*")]
    check_only_own_files(kept)
    scratch = [run_dir / name for name in (f"{BEST_DIR}.partial", BEST_DIR + REPLACED_SUFFIX, PARTIAL_CHECKPOINT)]
    for folder in [*kept, *scratch]:
        shutil.rmtree(folder, ignore_errors=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)


def record_own_files(folder: Path, entries: tuple[str, ...] | None = None) -> None:
    """List the files of `folder` (or of its `entries` only), just written by the run, with their sizes, in the
    folder itself."""
    write_text_atomically(folder / OWN_FILES_LIST, json.dumps(_file_sizes(folder, entries)))


def record_top_level_outputs(output_dir: Path) -> None:
    """After a run wrote its tables and model: mark them as the run's, so that the next run may replace them."""
    record_own_files(output_dir, TOP_LEVEL_OUTPUTS)


def check_only_own_files(folders: list[Path]) -> None:
    """Raise `ArgumentError` naming the files of `folders` that the run did not write, or changed since (a user's
    notes, weights copied in): deleting or replacing those folders would lose them."""
    foreign = [f"{folder}/{name}" for folder in folders if folder.is_dir() for name in _foreign_files(folder)]
    _refuse(foreign, "delete them; move them out of the run folder")


@contextmanager
def top_level_outputs_lock(output_dir: Path) -> Iterator[None]:
    """Held (an OS file lock, `TOP_LEVEL_LOCK`) while a run checks the tables and model at the top of `output_dir`
    and while it summarises and replaces them. Runs of other folds or models into one folder, side by side (the
    quality benchmark's pieces), then never take another's half-written tables for a user's files, and the last to
    finish writes tables that include every finished run. A folder that does not exist yet holds no tables to wait
    for, and is not created here (a run refused at start-up leaves nothing behind)."""
    if not output_dir.is_dir():
        yield
        return
    with FileLock(output_dir / TOP_LEVEL_LOCK):
        yield


def check_top_level_outputs(output_dir: Path) -> None:
    """Before any work: raise `ArgumentError` naming the files among `TOP_LEVEL_OUTPUTS` of `output_dir` that no run
    wrote (a user's results.md, a model of their own), or that were changed since: this run would overwrite them."""
    foreign = _foreign_files(output_dir, TOP_LEVEL_OUTPUTS) if output_dir.is_dir() else []
    _refuse([f"{output_dir}/{name}" for name in foreign], "overwrite them; move them out of --output_dir")


def _refuse(foreign: list[str], consequence: str) -> None:
    if foreign:
        raise ArgumentError(
            f"--output_dir: {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''} were not written by a "
            f"training run (or were changed since), and this run would {consequence} or choose another --output_dir"
        )


def _foreign_files(folder: Path, entries: tuple[str, ...] | None = None) -> list[str]:
    try:
        own = json.loads((folder / OWN_FILES_LIST).read_text())
    except (OSError, ValueError):  # no list (or a damaged one): nothing in the folder is known to be the run's
        own = {}
    own = own if isinstance(own, dict) else {}
    return sorted(name for name, size in _file_sizes(folder, entries).items() if own.get(name) != size)


def _file_sizes(folder: Path, entries: tuple[str, ...] | None = None) -> dict[str, int]:
    """{path relative to `folder`: size} of the files and links under `folder`, or under its `entries` only (the
    rest of the folder, such as the run folders below --output_dir, is not walked)."""
    roots = [folder / name for name in entries] if entries is not None else list(folder.iterdir())
    files = [path for root in roots for path in _files_at(root)]
    return {str(path.relative_to(folder)): path.lstat().st_size for path in files if path.name != OWN_FILES_LIST}


def _files_at(root: Path) -> list[Path]:
    """`root` itself when it is a file or a link, else the files and links below it (none when it is missing)."""
    if root.is_symlink() or root.is_file():
        return [root]
    return [path for path in root.rglob("*") if path.is_file() or path.is_symlink()]
