"""Supervised training of a baseline image classifier with MVaEMa's schedule, and its Table 2 metrics.

The schedule is the training script's: Adam at the script's learning rate with linear warm-up, the rate halved
after `lr_patience` epochs without a lower validation loss, early stopping after `early_stopping_patience`, and
the weights of the epoch with the lowest validation loss kept. A baseline learns from each distinct image (the QA
pairs of an image all carry the same category) `passes_per_epoch` times an epoch: the training script makes that as
many times as MVaEMa's epoch shows each micrograph, so that both learn from as many views of it between two
validations.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from instruct_tuning.evaluation import distinct_images
from instruct_tuning.training import adam, learning_rate_schedule, scheduled_optimizer_step, steps_with_each_batch
from metrics.zero_shot_classification.zero_shot_classification import ZeroShotClassification
from modeling_mvaema.configuration_mvaema import MVaEMaVisionConfig


@dataclass
class BaselineSettings:
    """The training script's optimisation settings. `batch_size` counts images; `vision_config` is MVaEMa's (its
    image_size must be the pixel store's); `device` None trains where the pixel store lives. `augmentation` (a
    `MicrographAugmentation`, or None) varies each training batch of a network, reproducibly from (seed, epoch);
    evaluation never augments, nor does the features baseline (it fits on fixed features, not on batches).
    `passes_per_epoch`: passes over the training images in one epoch (a validation, a patience step)."""

    learning_rate: float = 1e-3
    warmup_steps: int = 100
    lr_scheduler_type: str = "reduce_lr_on_plateau"
    batch_size: int = 48
    num_epochs: int = 15
    lr_patience: int = 5
    early_stopping_patience: int = 10
    seed: int = 0
    eval_batch_size: int = 128
    vision_config: MVaEMaVisionConfig = field(default_factory=MVaEMaVisionConfig)
    device: str | None = None
    augmentation: torch.nn.Module | None = None
    passes_per_epoch: int = 1

    def __post_init__(self):
        for name in ("batch_size", "num_epochs", "eval_batch_size", "passes_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"baseline setting {name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"baseline setting warmup_steps must be >= 0 (0: no warm-up), got {self.warmup_steps}")


@dataclass
class LabelledImages:
    """Distinct images of one split: their pixel-store `image_index` [N] and `labels` [N], their categories'
    positions among the corpus's own (`FoldData.class_names`), so a classifier has one output per category it sees."""

    image_index: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_table(cls, table) -> "LabelledImages":
        return cls(*distinct_images(table))

    def __len__(self) -> int:
        return len(self.image_index)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one training epoch: batch order, then augmentation, from (seed, epoch) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def training_batches(images: LabelledImages, batch_size: int, generator: torch.Generator,
                     passes: int = 1) -> list[torch.Tensor]:
    """Index batches of one epoch, `passes` passes over the images, each in its own order drawn from `generator`."""
    return [batch for _ in range(passes) for batch in torch.randperm(len(images), generator=generator).split(batch_size)]


@torch.no_grad()
def predict_logits(model, images: LabelledImages, pixel_store, device, batch_size: int) -> torch.Tensor:
    """Class logits [N, C] of every image, in eval mode, on the CPU."""
    model.eval()
    logits = [model(pixel_values=pixel_store.normalized(chunk).to(device)).logits.float().cpu()
              for chunk in images.image_index.split(batch_size)]
    return torch.cat(logits)


def train_one_epoch(model, optimizer, train: LabelledImages, pixel_store, settings: BaselineSettings, epoch: int,
                    step: int, device, scheduler=None) -> tuple[int, float]:
    """`settings.passes_per_epoch` passes over the training images; returns the next optimizer step and the mean
    training loss."""
    model.train()
    total = 0.0
    generator = epoch_generator(settings.seed, epoch)
    for batch in training_batches(train, settings.batch_size, generator, settings.passes_per_epoch):
        pixel_values = pixel_store.normalized(train.image_index[batch]).to(device)
        if settings.augmentation is not None:
            pixel_values = settings.augmentation(pixel_values, generator=generator)
        loss = model(pixel_values=pixel_values, labels=train.labels[batch].to(device)).loss
        loss.backward()
        scheduled_optimizer_step(optimizer, scheduler, step, settings.warmup_steps)
        if steps_with_each_batch(scheduler):
            scheduler.step()
        optimizer.zero_grad()
        total += float(loss.detach()) * len(batch)
        step += 1
    return step, total / (len(train) * settings.passes_per_epoch)


def train_network(model, train: LabelledImages, validation: LabelledImages, pixel_store, settings: BaselineSettings,
                  device) -> tuple[torch.nn.Module, dict]:
    """Train `model` in place; returns it with the weights of its best validation epoch, and the training record
    {"epochs", "best_validation_loss", "history"} shaped like MVaEMa's, with "passes_per_epoch" and
    "optimizer_steps"."""
    optimizer = adam(model.parameters(), settings.learning_rate)
    batches_per_epoch = settings.passes_per_epoch * math.ceil(len(train) / settings.batch_size)
    scheduler = learning_rate_schedule(optimizer, settings.lr_scheduler_type, settings.warmup_steps,
                                       settings.lr_patience, settings.num_epochs * batches_per_epoch)
    best_loss, best_state, stale_epochs, step, epoch, history = math.inf, None, 0, 0, 0, []
    while epoch < settings.num_epochs and stale_epochs < settings.early_stopping_patience:
        step, train_loss = train_one_epoch(model, optimizer, train, pixel_store, settings, epoch, step, device,
                                           scheduler)
        logits = predict_logits(model, validation, pixel_store, device, settings.eval_batch_size)
        loss = float(F.cross_entropy(logits, validation.labels))
        if not steps_with_each_batch(scheduler):
            scheduler.step(loss)
        improved = loss < best_loss
        if improved:
            best_loss, best_state = loss, copy.deepcopy(model.state_dict())
        stale_epochs = 0 if improved else stale_epochs + 1
        epoch += 1
        history.append({"epoch": epoch, "train_loss": train_loss, "validation_loss": loss,
                        "lr": optimizer.param_groups[0]["lr"]})
    if best_state is None:
        raise ValueError(f"the validation loss was never finite in {epoch} epochs; lower the learning rate "
                         f"(now {settings.learning_rate}) or raise warmup_steps (now {settings.warmup_steps})")
    model.load_state_dict(best_state)
    return model, {"epochs": epoch, "best_validation_loss": best_loss, "history": history,
                   "passes_per_epoch": settings.passes_per_epoch, "optimizer_steps": step}


def classification_metrics(scores: torch.Tensor | np.ndarray, labels: torch.Tensor, class_names: list[str]) -> dict:
    """Scores [N, C] -> the keys of `evaluation.evaluate_classification`: top1, top5, macro precision/recall/F1,
    per_class {precision, recall, f1, support} and confusion_matrix."""
    metrics = ZeroShotClassification().compute(
        predictions=np.asarray(scores, dtype=np.float64).tolist(), references=labels.tolist(), label_names=class_names)
    metrics.pop("label_names")
    metrics["top1"], metrics["top5"] = metrics.pop("top1_accuracy"), metrics.pop("top5_accuracy")
    return metrics
