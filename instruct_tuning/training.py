"""One training run: a variant on a fold with the paper's schedule (Adam, plateau halving, early stopping).

Read `train_one_run` top to bottom: model and optimiser, loaders, resume, then per epoch the training pass,
the validation loss, `best/` and a checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from instruct_tuning.arguments import ScriptArguments
from instruct_tuning.augmentation import MicrographAugmentation
from instruct_tuning.checkpoints import (
    TrainingState,
    best_model_dir,
    discard_partial_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from instruct_tuning.data import FoldData, ImageGroupedBatchSampler, QACollator, index_loader
from instruct_tuning.factories import build_model

LOSS_NAMES = ("loss", "loss_itc", "loss_itm", "loss_lm")


def make_accelerator(args: ScriptArguments) -> Accelerator:
    """The run's Accelerator: global batches split across processes, TensorBoard logs in `--output_dir`.

    `--mixed_precision` is passed only when given: an explicit argument beats `accelerate launch --mixed_precision`
    and `accelerate config`, which must otherwise decide."""
    precision = {} if args.mixed_precision is None else {"mixed_precision": args.mixed_precision}
    accelerator = Accelerator(
        **precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with="tensorboard",
        project_dir=args.output_dir,
    )
    check_process_count(accelerator.num_processes, os.environ)
    accelerator.print(f"training with mixed precision {accelerator.mixed_precision} on {accelerator.num_processes} "
                      f"process(es), {accelerator.device}")
    return accelerator


CPU_PROCESSES_COMMAND = "ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node N run_instruct_tuning.py ..."


def check_process_count(num_processes: int, environment: dict) -> None:
    """Refuse a launch that asked for several processes and got one per copy: on a machine without GPUs,
    `accelerate launch --multi_gpu` (and plain `torchrun`) start N copies that each train alone into the same run
    folder, and `accelerate launch --cpu --num_processes N` (without `--mpirun_hostfile`) starts a single process.
    Both run without a word; the tables would then say one process where N were asked for, or come from N copies
    overwriting each other."""
    if num_processes > 1:
        return
    world_size = int(environment.get("WORLD_SIZE", "1") or 1)
    if world_size > 1:
        raise RuntimeError(
            f"This process was started as one of {world_size} (WORLD_SIZE={world_size}), but accelerate sees a single "
            "process: without GPUs each copy would train alone into the same run folder. To train on several CPU "
            f"processes: {CPU_PROCESSES_COMMAND} (ACCELERATE_USE_CPU=1 makes accelerate join them with gloo); to "
            "train on one: python run_instruct_tuning.py ..."
        )
    cpu_launch = environment.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu_launch and "MASTER_ADDR" in environment and "WORLD_SIZE" not in environment:
        raise RuntimeError(
            "accelerate launch --cpu --num_processes N started one process, not N (accelerate starts several CPU "
            f"processes only through mpirun, --mpirun_hostfile). To train on several CPU processes: "
            f"{CPU_PROCESSES_COMMAND}; to train on one: accelerate launch --cpu --num_processes 1 run_instruct_tuning.py "
            "... or python run_instruct_tuning.py ..."
        )


def precision_and_processes(accelerator: Accelerator) -> dict:
    """What the run actually used, for results.json."""
    return {"mixed_precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
            "device": accelerator.device.type}


def adam(parameters, learning_rate: float) -> torch.optim.Adam:
    """Adam with its fused implementation: one kernel over all parameters instead of a loop of small ones (the same
    update; 9 ms -> 2 ms a step for MVaEMa on 2 CPU cores). MVaEMa, the peer and the baselines all train with it."""
    return torch.optim.Adam(parameters, lr=learning_rate, fused=True)


def optimizer_step_with_warmup(optimizer, step: int, warmup_steps: int) -> None:
    """`optimizer.step()` at the learning rate scaled by (step + 1) / warmup_steps during warm-up. The scheduler's own
    rate is restored afterwards, so ReduceLROnPlateau keeps halving the paper's rate, not a warm-up one."""
    scale = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    rates = [group["lr"] for group in optimizer.param_groups]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate * scale
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate


def learning_rate_schedule(optimizer, scheduler_type: str, warmup_steps: int, lr_patience: int, optimizer_steps: int):
    """The paper's plateau halving (stepped once an epoch with the validation loss, warm-up applied by
    `optimizer_step_with_warmup`), or transformers' cosine schedule with its own warm-up, stepped after every
    optimizer step down to 0 after `optimizer_steps`. MVaEMa, the peer and the supervised baselines share it."""
    if scheduler_type == "reduce_lr_on_plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=lr_patience)
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, optimizer_steps)


def steps_with_each_batch(scheduler) -> bool:
    return scheduler is not None and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


def scheduled_optimizer_step(optimizer, scheduler, step: int, warmup_steps: int) -> None:
    """`optimizer.step()` at the schedule's rate: a per-step schedule (cosine) brings its own warm-up and is stepped
    by the caller; the plateau schedule gets `optimizer_step_with_warmup`'s."""
    if steps_with_each_batch(scheduler):
        optimizer.step()
    else:
        optimizer_step_with_warmup(optimizer, step, warmup_steps)


def validation_loss(model, loader, device) -> float:
    """Mean loss over the whole validation set. Every process computes it on its own (the model does not gather
    across processes in eval mode), so all of them take the same early-stopping decision."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            batch = {name: tensor.to(device) for name, tensor in batch.items()}
            total += float(model(**batch).loss) * len(batch["input_ids"])
            count += len(batch["input_ids"])
    model.train()
    return total / count


@dataclass
class RunContext:
    """What the epochs of one run share."""

    variant: str
    fold: int
    args: ScriptArguments
    accelerator: Accelerator
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.variant} fold {self.fold}"

    @property
    def log_prefix(self) -> str:
        return f"{self.variant}/fold{self.fold}"


def training_loaders(data: FoldData, args: ScriptArguments, fold: int):
    """(train loader, its collator, validation loader). Training batches depend only on (seed, fold, epoch)."""
    sampler = ImageGroupedBatchSampler(data.train.image_index, args.batch_size, args.questions_per_image, args.seed + fold,
                                       drop_last=True, groups_per_image=args.groups_per_image,
                                       leading_pairs=data.train.asks_category if args.ask_category_every_epoch else None,
                                       leading_pairs_twice=args.ask_category_both_ways)
    if len(sampler) == 0:
        raise ValueError(f"fold {fold}: the training split has {len(data.train)} QA pairs, fewer than one batch of "
                         f"{args.batch_size}; lower --batch_size or add data")
    augmentation = MicrographAugmentation(data.pixel_store.image_size) if args.augment else None
    collator = QACollator(data.train, data.pixel_store, captions="drop", caption_drop_rate=args.caption_drop_rate,
                          category_caption_drop_rate=args.category_caption_drop_rate, seed=args.seed + fold,
                          augmentation=augmentation, category_question_both_ways=args.ask_category_both_ways,
                          category_question_every_view=args.ask_category_every_view,
                          category_answer_tokens=args.category_answer_tokens)
    validation_sampler = ImageGroupedBatchSampler(data.validation.image_index, args.eval_batch_size, args.questions_per_image,
                                                  seed=0, groups_per_image=args.groups_per_image)  # epoch 0: a fixed subset
    validation_collator = QACollator(data.validation, data.pixel_store, captions="drop", caption_drop_rate=args.caption_drop_rate,
                                     category_caption_drop_rate=args.category_caption_drop_rate, seed=0)
    return (index_loader(data.train, sampler, collator), collator,
            index_loader(data.validation, validation_sampler, validation_collator))


def train_epoch(run: RunContext, model, optimizer, loader, state: TrainingState, scheduler=None) -> float:
    """One pass over the training batches; returns the samples per second. A per-step `scheduler` (cosine) steps
    after every optimizer step; the plateau one waits for `end_epoch`."""
    accelerator, args = run.accelerator, run.args
    model.train()
    progress = tqdm(loader, desc=f"{run.label} epoch {state.epoch + 1}/{args.num_epochs}",
                    disable=not accelerator.is_local_main_process, leave=False)
    started, samples = time.perf_counter(), 0
    for batch in progress:
        with accelerator.accumulate(model):
            answer_tokens = (batch["labels"] != -100).sum()
            outputs = model(**batch, num_items_in_batch=accelerator.reduce(answer_tokens, "sum"))
            if loss_is_finite_everywhere(accelerator, outputs.loss):
                accelerator.backward(outputs.loss)
                scheduled_optimizer_step(optimizer, scheduler, state.global_step // args.gradient_accumulation_steps,
                                         args.warmup_steps)
            else:
                count_nonfinite_step(run, state)
            optimizer.zero_grad()
            if steps_with_each_batch(scheduler) and accelerator.sync_gradients:
                scheduler.step()  # skipped steps too: the schedule runs on the epoch's clock
        samples += (len(batch["input_ids"]) - batch.get("lm_only_rows", 0)) * accelerator.num_processes
        state.global_step += 1
        losses = {name: float(value.detach()) for name in LOSS_NAMES if (value := getattr(outputs, name, None)) is not None}
        progress.set_postfix(loss=f"{losses['loss']:.3f}")
        accelerator.log({f"{run.log_prefix}/train_{k}": v for k, v in losses.items()}, step=state.global_step)
    return samples / (time.perf_counter() - started)


def loss_is_finite_everywhere(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """False when any process's loss is NaN or infinite: then every process skips the step together."""
    nonfinite = (~torch.isfinite(loss.detach())).float().reshape(1)
    return float(accelerator.reduce(nonfinite, "sum")) == 0


def count_nonfinite_step(run: RunContext, state: TrainingState) -> None:
    """A skipped step (no backward, no optimizer step); past `--max_nonfinite_steps` the run stops."""
    state.nonfinite_steps += 1
    limit = run.args.max_nonfinite_steps
    run.accelerator.print(f"[{run.label}] step {state.global_step + 1}: non-finite loss, step skipped "
                          f"({state.nonfinite_steps} so far, at most {limit})")
    if state.nonfinite_steps > limit:
        raise FloatingPointError(
            f"{run.label}: {state.nonfinite_steps} training steps had a NaN or infinite loss, more than "
            f"--max_nonfinite_steps {limit}; lower --learning_rate, raise --warmup_steps, or use --mixed_precision bf16 "
            "instead of fp16")


def record_validation_loss(state: TrainingState, loss: float) -> bool:
    """Early-stopping bookkeeping; a NaN or infinite loss never counts as an improvement nor becomes the best."""
    improved = math.isfinite(loss) and loss < state.best_validation_loss
    if improved:
        state.best_validation_loss = loss
    state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
    return improved


def end_epoch(run: RunContext, model, optimizer, scheduler, validation_loader, state: TrainingState, throughput: float) -> None:
    """Validation loss, learning-rate schedule, early-stopping count and `best/`, then a checkpoint."""
    accelerator = run.accelerator
    loss = validation_loss(accelerator.unwrap_model(model), validation_loader, accelerator.device)
    if not steps_with_each_batch(scheduler):
        scheduler.step(loss if math.isfinite(loss) else math.inf)
    improved = record_validation_loss(state, loss)
    if improved and accelerator.is_main_process:
        save_best(accelerator.unwrap_model(model), run.run_dir)
    rate = optimizer.param_groups[0]["lr"]
    state.history.append({"epoch": state.epoch + 1, "validation_loss": loss, "lr": rate, "train_samples_per_second": throughput})
    accelerator.log({f"{run.log_prefix}/validation_loss": loss, f"{run.log_prefix}/lr": rate}, step=state.global_step)
    accelerator.print(f"[{run.label}] epoch {state.epoch + 1}: validation loss {loss:.4f}"
                      f"{' (best)' if improved else ''}, {throughput:.0f} samples/s")
    state.epoch += 1
    state.scheduler = scheduler.state_dict()
    save_checkpoint(accelerator, run.run_dir, state)


def train_one_run(run: RunContext, data: FoldData, processor):
    """Train one variant on one fold; returns (the best model by validation loss, on the device, and the state)."""
    args, accelerator = run.args, run.accelerator
    set_seed(args.seed + run.fold)
    model = build_model(run.variant, processor, args.overrides, args.init_from)
    torch_optimizer = adam(model.parameters(), args.learning_rate)
    train_loader, collator, validation_loader = training_loaders(data, args, run.fold)
    model, optimizer, train_loader = accelerator.prepare(model, torch_optimizer, train_loader)
    # After prepare: the loader's length is this process's share of the batches, the steps this process takes.
    scheduler = learning_rate_schedule(torch_optimizer, args.lr_scheduler_type, args.warmup_steps, args.lr_patience,
                                       args.num_epochs * len(train_loader) // args.gradient_accumulation_steps)

    state = TrainingState()
    discard_partial_checkpoint(accelerator, run.run_dir)
    checkpoint = latest_checkpoint(run.run_dir) if args.resume else None
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        scheduler.load_state_dict(state.scheduler)
        accelerator.print(f"[{run.label}] resumed from {checkpoint} (epoch {state.epoch})")

    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.early_stopping_patience:
        # accelerate's loader re-sets its batch sampler's epoch from its own counter on every pass: set it there.
        train_loader.set_epoch(state.epoch)
        collator.set_epoch(state.epoch)
        throughput = train_epoch(run, model, optimizer, train_loader, state, scheduler)
        end_epoch(run, model, optimizer, scheduler, validation_loader, state, throughput)

    accelerator.wait_for_everyone()
    best_model = type(accelerator.unwrap_model(model)).from_pretrained(best_model_dir(run.run_dir))
    accelerator.free_memory()
    return best_model.to(accelerator.device), state
