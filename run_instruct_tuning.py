"""Instruction-tune MVaEMa on a teacher corpus, evaluate it the way the paper does, and publish it.

    python run_instruct_tuning.py                      # the main job: built-in synthetic corpus, MVaEMa + BLIP peer
    accelerate launch run_instruct_tuning.py --images DIR --teacher-cache answers.jsonl --cross-validate
    accelerate launch run_instruct_tuning.py --dataset my-org/sem-instruct --init-from my-org/mvaema --fold 3

Read it top to bottom: arguments, data, one training run (model, loop, checkpoints, early stopping),
evaluation, then `main`, which runs every (variant, fold) pair and writes the tables, the model and its card.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from dataset_builder.builder import load_instruct_corpus, load_prepared_corpus
from dataset_builder.question_families import CLASSIFICATION_QUESTION, caption_for_category, category_answer_prefix
from dataset_builder.synthetic import generate_synthetic_corpus
from instruct_tuning import evaluation, reporting
from instruct_tuning.data import ImageGroupedBatchSampler, QACollator, build_pixel_store, index_loader, tokenize_split
from instruct_tuning.peer import BlipPeerForQuestionAnswering, blip_peer_config
from modeling_mvaema import ABLATIONS as ABLATION_SWITCHES
from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering, MVaEMaProcessor, train_wordpiece_tokenizer

logger = logging.getLogger("run_instruct_tuning")

MVAEMA = "mvaema"
PEER = "blip_peer"
ABLATIONS = tuple(ABLATION_SWITCHES)  # the paper's five: no_itc, no_itm, no_sa, no_ca, no_csa


# ----------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ScriptArguments:
    # Data: a folder + teacher caches, a prepared dataset, or (neither) the built-in synthetic corpus.
    images: str | None = field(default=None, metadata={"help": "Image folder with one sub-folder per category."})
    teacher_cache: list[str] = field(default_factory=list, metadata={"help": "Teacher cache JSONL file(s) for --images."})
    dataset: str | None = field(default=None, metadata={"help": "A saved parquet folder or Hub dataset id (from mvaema-build-dataset)."})
    synthetic_dir: str | None = field(default=None, metadata={"help": "Where the built-in synthetic corpus is generated (missing images only); default data/synthetic-<N>-per-category."})
    synthetic_per_category: int = field(default=100, metadata={"help": "Synthetic micrographs per category."})
    num_folds: int = field(default=10, metadata={"help": "k of the k-fold split (the paper: 10)."})
    fold: int = field(default=0, metadata={"help": "Test fold; validation is the next fold, training the rest."})
    cross_validate: bool = field(default=False, metadata={"help": "Run every fold and report mean +- std."})

    # Models.
    ablation: str = field(default="none", metadata={"help": "none, all, or one of: " + ", ".join(ABLATIONS)})
    train_peer: bool = field(default=True, metadata={"help": "Also train transformers' BlipForQuestionAnswering at the same size."})
    init_from: str | None = field(default=None, metadata={"help": "A saved or Hub MVaEMa to fine-tune (keeps its tokenizer)."})
    vocab_size: int = field(default=8192, metadata={"help": "WordPiece vocabulary trained on the corpus when not --init-from."})
    model_overrides: str = field(default="{}", metadata={"help": 'JSON of MVaEMaConfig fields, e.g. \'{"text_config": {"num_hidden_layers": 4}}\'.'})
    max_question_length: int = 48
    max_answer_length: int = 64

    # Optimisation: the paper's values, except the epoch budget of the built-in synthetic demo (see README).
    learning_rate: float = 1e-3
    warmup_steps: int = field(default=100, metadata={"help": "Optimizer steps of linear LR warm-up (not in the paper; Adam's first full-size steps disturb a model trained from scratch)."})
    batch_size: int = field(default=48, metadata={"help": "Global batch size (split across processes)."})
    num_epochs: int | None = field(default=None, metadata={"help": "Default 50 (the paper); 15 for the built-in synthetic corpus."})
    lr_patience: int = field(default=5, metadata={"help": "Halve the learning rate after this many epochs without validation gain."})
    early_stopping_patience: int = 10
    questions_per_image: int = field(default=4, metadata={"help": "Questions of one image grouped in a batch (image encoded once)."})
    groups_per_image: int | None = field(default=None, metadata={"help": "Per epoch, use only this many random question groups of each image (default: all; 1 for the built-in synthetic corpus)."})
    caption_drop_rate: float = field(default=0.5, metadata={"help": "Share of training prompts without the category caption."})
    gradient_accumulation_steps: int = 1
    mixed_precision: str = field(default="no", metadata={"help": "no, fp16 or bf16."})
    seed: int = 0

    # Evaluation.
    eval_batch_size: int = 128
    max_eval_questions: int | None = field(default=None, metadata={"help": "Cap on generated test answers (None = all)."})

    # Outputs.
    output_dir: str = "outputs/mvaema"
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint; finished runs are kept."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push the final model to."})
    hub_public: bool = field(default=False, metadata={"help": "Make the pushed repo public (private by default)."})

    def __post_init__(self):
        uses_synthetic = self.images is None and self.dataset is None
        if uses_synthetic:  # the built-in demo must finish in minutes on a laptop CPU (see README)
            self.num_epochs = 15 if self.num_epochs is None else self.num_epochs
            self.groups_per_image = 1 if self.groups_per_image is None else self.groups_per_image
        if self.num_epochs is None:
            self.num_epochs = 50
        if self.images is not None and not self.teacher_cache:
            raise ValueError("--images needs at least one --teacher-cache (the teacher's answers for those images)")
        if self.ablation not in ("none", "all", *ABLATIONS):
            raise ValueError(f"--ablation must be none, all or one of {', '.join(ABLATIONS)}; got {self.ablation!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"--warmup_steps must be >= 0 (0: no warm-up), got {self.warmup_steps}")
        if not 0 <= self.fold < self.num_folds:
            raise ValueError(f"--fold {self.fold} is outside 0..{self.num_folds - 1}")

    @property
    def variants(self) -> list[str]:
        ablations = list(ABLATIONS) if self.ablation == "all" else [] if self.ablation == "none" else [self.ablation]
        return [MVAEMA, *ablations] + ([PEER] if self.train_peer else [])

    @property
    def folds(self) -> list[int]:
        return list(range(self.num_folds)) if self.cross_validate else [self.fold]


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def load_corpus(args: ScriptArguments, accelerator: Accelerator):
    """The QA corpus as a `datasets.Dataset` with a `fold` column; the synthetic one is generated once."""
    if args.dataset:
        return load_prepared_corpus(args.dataset)
    cache_dir = Path(args.output_dir) / "dataset_cache"
    if args.images:
        image_root, caches = args.images, args.teacher_cache
    else:
        synthetic = Path(args.synthetic_dir or f"data/synthetic-{args.synthetic_per_category}-per-category")
        image_root, caches = synthetic / "images", [synthetic / "teacher_cache.jsonl"]
        if accelerator.is_main_process:  # writes only what is missing: a second run, or an interrupted one, goes on
            corpus = generate_synthetic_corpus(synthetic, per_category=args.synthetic_per_category, seed=args.seed,
                                               workers=os.cpu_count() or 1)
            if corpus.images_written:
                logger.info("generated %d synthetic micrographs in %s", corpus.images_written, synthetic)
        accelerator.wait_for_everyone()
    with accelerator.main_process_first():
        return load_instruct_corpus(image_root, [str(c) for c in caches], num_folds=args.num_folds, seed=args.seed, cache_dir=str(cache_dir))


@dataclass
class FoldData:
    """Everything one fold's runs need, tokenised and decoded once and shared by every variant."""

    train: object
    validation: object
    test: object
    pixel_store: object
    class_names: list[str]


def prepare_fold(corpus, fold: int, args: ScriptArguments, processor: MVaEMaProcessor, pixel_store) -> FoldData:
    validation_fold = (fold + 1) % args.num_folds
    splits = {
        "train": corpus.filter(lambda f: f not in (fold, validation_fold), input_columns="fold"),
        "validation": corpus.filter(lambda f: f == validation_fold, input_columns="fold"),
        "test": corpus.filter(lambda f: f == fold, input_columns="fold"),
    }
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"fold {fold}: the {name} split is empty; use fewer --num-folds or more data")
    tables = {name: tokenize_split(split, processor, pixel_store) for name, split in splits.items()}
    class_names = corpus.features["category"].names
    return FoldData(tables["train"], tables["validation"], tables["test"], pixel_store, class_names)


def build_processor(corpus, args: ScriptArguments) -> MVaEMaProcessor:
    """The corpus's WordPiece vocabulary (or --init-from's) and its categories, for `rank_categories`."""
    class_names = corpus.features["category"].names
    saved = Path(args.output_dir) / "processor"
    if args.resume and saved.exists():  # a resumed run must keep the token ids its checkpoints were trained with
        return MVaEMaProcessor.from_pretrained(saved)
    if args.init_from:
        processor = MVaEMaProcessor.from_pretrained(args.init_from)
    else:
        texts = (text for column in ("question", "answer", "caption") for text in corpus[column])
        tokenizer = train_wordpiece_tokenizer(texts, vocab_size=args.vocab_size)
        image_size = json.loads(args.model_overrides).get("vision_config", {}).get("image_size", 224)
        processor = MVaEMaProcessor.from_tokenizer(tokenizer, image_size=image_size,
                                                   max_question_length=args.max_question_length,
                                                   max_answer_length=args.max_answer_length)
    processor.category_names = class_names
    processor.category_texts = [category_answer_prefix(name) for name in class_names]
    processor.category_captions = [caption_for_category(name) for name in class_names]
    processor.classification_question = CLASSIFICATION_QUESTION
    processor.save_pretrained(saved)
    return processor


def build_model(variant: str, processor: MVaEMaProcessor, args: ScriptArguments):
    if args.init_from and variant == MVAEMA:
        return MVaEMaForQuestionAnswering.from_pretrained(args.init_from)
    ablation = None if variant in (MVAEMA, PEER) else variant
    config = MVaEMaConfig.from_tokenizer(processor.tokenizer, ablation=ablation, **json.loads(args.model_overrides))
    if variant == PEER:
        return BlipPeerForQuestionAnswering(blip_peer_config(config))
    return MVaEMaForQuestionAnswering(config)


# ----------------------------------------------------------------------------------------------------------
# One training run
# ----------------------------------------------------------------------------------------------------------
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
        (partial / "training_state.json").write_text(json.dumps(asdict(state)))
        os.replace(partial, final)
        for old in run_dir.glob("checkpoint-epoch-*"):
            if old != final:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


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


def train_one_run(variant: str, fold: int, data: FoldData, processor, args: ScriptArguments,
                  accelerator: Accelerator, run_dir: Path):
    """Train one variant on one fold with the paper's schedule; returns the best model (by validation loss)."""
    set_seed(args.seed + fold)
    model = build_model(variant, processor, args)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5, patience=args.lr_patience)

    sampler = ImageGroupedBatchSampler(data.train.image_rows, args.batch_size, args.questions_per_image, args.seed + fold,
                                       drop_last=True, groups_per_image=args.groups_per_image)
    if len(sampler) == 0:
        raise ValueError(f"fold {fold}: the training split has {len(data.train)} QA pairs, fewer than one batch of "
                         f"{args.batch_size}; lower --batch_size or add data")
    collator = QACollator(data.train, data.pixel_store, captions="drop", caption_drop_rate=args.caption_drop_rate, seed=args.seed + fold)
    train_loader = index_loader(data.train, sampler, collator)
    validation_sampler = ImageGroupedBatchSampler(data.validation.image_rows, args.eval_batch_size, args.questions_per_image,
                                                  seed=0, groups_per_image=args.groups_per_image)  # epoch 0: a fixed subset
    validation_collator = QACollator(data.validation, data.pixel_store, captions="drop", caption_drop_rate=args.caption_drop_rate, seed=0)
    validation_loader = index_loader(data.validation, validation_sampler, validation_collator)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)

    state = TrainingState()
    checkpoint = latest_checkpoint(run_dir) if args.resume else None
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        state = TrainingState(**json.loads((checkpoint / "training_state.json").read_text()))
        scheduler.load_state_dict(state.scheduler)
        accelerator.print(f"[{variant} fold {fold}] resumed from {checkpoint} (epoch {state.epoch})")

    best_dir = run_dir / "best"
    while state.epoch < args.num_epochs and state.epochs_without_improvement < args.early_stopping_patience:
        # accelerate's loader re-sets its batch sampler's epoch from its own counter on every pass: set it there.
        train_loader.set_epoch(state.epoch)
        collator.set_epoch(state.epoch)
        model.train()
        progress = tqdm(train_loader, desc=f"{variant} fold {fold} epoch {state.epoch + 1}/{args.num_epochs}",
                        disable=not accelerator.is_local_main_process, leave=False)
        started, samples = time.perf_counter(), 0
        for batch in progress:
            with accelerator.accumulate(model):
                answer_tokens = (batch["labels"] != -100).sum()
                outputs = model(**batch, num_items_in_batch=accelerator.reduce(answer_tokens, "sum"))
                accelerator.backward(outputs.loss)
                optimizer_step_with_warmup(optimizer, state.global_step // args.gradient_accumulation_steps, args.warmup_steps)
                optimizer.zero_grad()
            samples += len(batch["input_ids"]) * accelerator.num_processes
            state.global_step += 1
            losses = {name: float(value.detach()) for name in ("loss", "loss_itc", "loss_itm", "loss_lm")
                      if (value := getattr(outputs, name, None)) is not None}
            progress.set_postfix(loss=f"{losses['loss']:.3f}")
            accelerator.log({f"{variant}/fold{fold}/train_{k}": v for k, v in losses.items()}, step=state.global_step)

        loss = validation_loss(accelerator.unwrap_model(model), validation_loader, accelerator.device)
        scheduler.step(loss)
        improved = loss < state.best_validation_loss
        state.best_validation_loss = min(loss, state.best_validation_loss)
        state.epochs_without_improvement = 0 if improved else state.epochs_without_improvement + 1
        if improved and accelerator.is_main_process:
            accelerator.unwrap_model(model).save_pretrained(best_dir)
        throughput = samples / (time.perf_counter() - started)
        state.history.append({"epoch": state.epoch + 1, "validation_loss": loss, "lr": optimizer.param_groups[0]["lr"],
                              "train_samples_per_second": throughput})
        accelerator.log({f"{variant}/fold{fold}/validation_loss": loss, f"{variant}/fold{fold}/lr": optimizer.param_groups[0]["lr"]},
                        step=state.global_step)
        accelerator.print(f"[{variant} fold {fold}] epoch {state.epoch + 1}: validation loss {loss:.4f}"
                          f"{' (best)' if improved else ''}, {throughput:.0f} samples/s")
        state.epoch += 1
        state.scheduler = scheduler.state_dict()
        save_checkpoint(accelerator, run_dir, state)

    accelerator.wait_for_everyone()
    best_model = type(accelerator.unwrap_model(model)).from_pretrained(best_dir)
    accelerator.free_memory()
    return best_model.to(accelerator.device), state


def evaluate_run(variant: str, model, data: FoldData, processor, args: ScriptArguments, device) -> dict:
    """The paper's evaluation on the test fold: VQA with captions, classification without."""
    method = evaluation.select_classification_method(model, processor, data.validation, data, device, args.eval_batch_size)
    return {
        "vqa": evaluation.evaluate_vqa(model, processor, data.test, data.pixel_store, device, args.eval_batch_size,
                                       args.max_eval_questions),
        "classification": evaluation.evaluate_classification(model, processor, data.test, data, device,
                                                             args.eval_batch_size, method),
        "classification_method": method,
    }


# ----------------------------------------------------------------------------------------------------------
# Main: every (variant, fold) run, then tables, the final model and its card
# ----------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(ScriptArguments).parse_args_into_dataclasses(args=argv)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(split_batches=True),
        log_with="tensorboard",
        project_dir=str(output_dir),
    )
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    accelerator.init_trackers("mvaema", config={k: str(v) for k, v in asdict(args).items()})
    started = time.perf_counter()

    corpus = load_corpus(args, accelerator)
    processor = build_processor(corpus, args)
    pixel_store = build_pixel_store(corpus, processor.image_processor.size["height"], output_dir / "dataset_cache")
    if torch.cuda.is_available() and pixel_store.pixels.numel() < 0.25 * torch.cuda.mem_get_info()[0]:
        pixel_store = pixel_store.to(accelerator.device)

    results: dict = {}
    for fold in args.folds:
        data = prepare_fold(corpus, fold, args, processor, pixel_store)
        for variant in args.variants:
            run_dir = output_dir / "runs" / variant / f"fold_{fold}"
            result_file = run_dir / "result.json"
            if args.resume and result_file.exists():
                results.setdefault(variant, {})[fold] = json.loads(result_file.read_text())
                continue
            model, state = train_one_run(variant, fold, data, processor, args, accelerator, run_dir)
            if accelerator.is_main_process:
                result = evaluate_run(variant, model, data, processor, args, accelerator.device)
                result["training"] = {"epochs": state.epoch, "best_validation_loss": state.best_validation_loss,
                                      "history": state.history}
                result_file.write_text(json.dumps(result, indent=2))
                results.setdefault(variant, {})[fold] = result
            accelerator.wait_for_everyone()

    summary = {}
    if accelerator.is_main_process:
        summary = reporting.summarize(results, class_names=data.class_names, args=asdict(args),
                                      wall_time_seconds=time.perf_counter() - started)
        model_dir = output_dir / "model"
        final_model = MVaEMaForQuestionAnswering.from_pretrained(output_dir / "runs" / MVAEMA / f"fold_{args.folds[0]}" / "best")
        processor.classification_method = summary[MVAEMA]["classification_method"][0]
        reporting.save_model_with_card(final_model, processor, model_dir, summary, corpus)
        reporting.write_reports(summary, output_dir)
        if args.push_to_hub:
            reporting.push(model_dir, args.push_to_hub, private=not args.hub_public)
        reporting.print_summary(summary, output_dir)
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
