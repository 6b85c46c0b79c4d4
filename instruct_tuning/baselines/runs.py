"""One baseline on one fold as the training script runs it: MVaEMa's settings, its run folder layout, its --resume.

The settings are the script's own (learning rate, warm-up, epoch budget, both patiences, train-time augmentation,
and the seed `--seed` + fold that MVaEMa's batches of that fold are drawn from), and the networks take MVaEMa's
vision config, so a baseline row differs from MVaEMa's in the model only. An epoch of a baseline shows each training
micrograph as often as an epoch of MVaEMa does (`passes_per_epoch`).
"""

from __future__ import annotations

import json
from pathlib import Path

from instruct_tuning.arguments import ScriptArguments
from instruct_tuning.atomic_io import write_text_atomically
from instruct_tuning.augmentation import MicrographAugmentation
from instruct_tuning.baselines.registry import train_and_evaluate_baseline
from instruct_tuning.baselines.training import BaselineSettings
from instruct_tuning.checkpoints import RESULT_FILE
from instruct_tuning.data import FoldData, QATable, image_views_per_epoch
from instruct_tuning.factories import model_config
from modeling_mvaema import MVaEMaConfig
from modeling_mvaema.configuration_mvaema import MVaEMaVisionConfig


def mvaema_vision_config(args: ScriptArguments, processor) -> MVaEMaVisionConfig:
    """The vision config of the MVaEMa this run trains (`--init_from`'s, or the default with `--model_overrides`)."""
    if args.init_from:
        return MVaEMaConfig.from_pretrained(args.init_from).vision_config
    return model_config(processor, **args.overrides).vision_config


def passes_per_epoch(args: ScriptArguments, train: QATable) -> int:
    """`--baseline_passes_per_epoch`, or by default how often MVaEMa's epoch shows a training micrograph of `train`
    (its question groups: 4 on the built-in corpus), rounded."""
    if args.baseline_passes_per_epoch is not None:
        return args.baseline_passes_per_epoch
    views = image_views_per_epoch(train.image_index, args.questions_per_image, args.groups_per_image)
    return max(1, round(views))


def baseline_settings(args: ScriptArguments, fold: int, vision_config: MVaEMaVisionConfig, device,
                      passes: int = 1) -> BaselineSettings:
    """The script's optimisation settings for fold `fold`, `passes` passes over the training images an epoch
    (`passes_per_epoch`). A batch holds `--batch_size` images."""
    augmentation = MicrographAugmentation(vision_config.image_size) if args.augment else None
    return BaselineSettings(
        learning_rate=args.learning_rate, warmup_steps=args.warmup_steps, lr_scheduler_type=args.lr_scheduler_type,
        batch_size=args.batch_size,
        num_epochs=args.num_epochs, lr_patience=args.lr_patience, early_stopping_patience=args.early_stopping_patience,
        seed=args.seed + fold, eval_batch_size=args.eval_batch_size, vision_config=vision_config,
        device=str(device), augmentation=augmentation, passes_per_epoch=passes,
    )


def run_baseline(name: str, data: FoldData, settings: BaselineSettings, run_dir: Path, resume: bool) -> dict:
    """Train and score baseline `name` on `data`'s fold; the result is kept in `run_dir`/result.json. With `resume`
    a finished result is read back instead of training again. Call it on the main process only."""
    result_file = run_dir / RESULT_FILE
    if resume and result_file.exists():
        return json.loads(result_file.read_text())
    result_file.unlink(missing_ok=True)
    result = train_and_evaluate_baseline(name, data.train, data.validation, data.test, data.pixel_store,
                                         data.class_names, settings)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(result_file, json.dumps(result, indent=2))
    return result
