"""Checkpoints of a training run: what a resumed run needs to continue exactly where a killed one stopped.

A run folder holds at most one `checkpoint-epoch-<N>` (model, optimiser and RNG states saved by accelerate, plus
`training_state.json`), `best/` (the model with the lowest validation loss so far) and, once evaluated, `result.json`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

TRAINING_STATE_FILE = "training_state.json"


@dataclass
class TrainingState:
    """What, besides model/optimiser/RNG (saved by accelerate), a resumed run needs to continue identically."""

    epoch: int = 0
    global_step: int = 0
    best_validation_loss: float = math.inf
    epochs_without_improvement: int = 0
    scheduler: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-epoch-*"), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: TrainingState) -> None:
    """Write to a temporary folder, then rename: a kill during the save leaves the previous checkpoint intact."""
    final = run_dir / f"checkpoint-epoch-{state.epoch}"
    partial = run_dir / "checkpoint-partial"
    accelerator.save_state(str(partial), safe_serialization=True)
    if accelerator.is_main_process:
        (partial / TRAINING_STATE_FILE).write_text(json.dumps(asdict(state)))
        os.replace(partial, final)
        for old in run_dir.glob("checkpoint-epoch-*"):
            if old != final:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> TrainingState:
    """Restore model, optimiser and RNG states into the prepared objects; returns the loop's own state."""
    accelerator.load_state(str(checkpoint))
    return TrainingState(**json.loads((checkpoint / TRAINING_STATE_FILE).read_text()))
