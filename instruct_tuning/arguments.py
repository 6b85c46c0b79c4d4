"""The training script's command line: one dataclass, parsed by transformers' `HfArgumentParser`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from instruct_tuning.variants import ABLATIONS, VARIANTS, selected_variants

# The built-in synthetic main job must stay under 15 minutes on 2 CPU cores: per fold the features baseline costs
# about 40 s and the ViT about 2 minutes there (4 passes an epoch), ResNet and Swin about 10 minutes each.
SYNTHETIC_BASELINES = "vit,features"


LR_SCHEDULER_TYPES = ("reduce_lr_on_plateau", "cosine")


class ArgumentError(ValueError):
    """A command-line value the run cannot use; `str()` is one line naming the argument and the fix."""


@dataclass
class ScriptArguments:
    # Data: a folder + teacher caches, a prepared dataset, or (neither) the built-in synthetic corpus.
    images: str | None = field(default=None, metadata={"help": "Image folder with one sub-folder per category."})
    teacher_cache: list[str] = field(default_factory=list, metadata={"help": "Teacher cache JSONL file(s) for --images."})
    dataset: str | None = field(default=None, metadata={"help": "A saved parquet folder or Hub dataset id (from mvaema-build-dataset)."})
    synthetic_dir: str | None = field(default=None, metadata={"help": "Where the built-in synthetic corpus is generated (missing images only); default data/synthetic-<N>-per-category, with -seed<S> for --seed S other than 0."})
    synthetic_per_category: int = field(default=100, metadata={"help": "Synthetic micrographs per category."})
    num_folds: int | None = field(default=None, metadata={"help": "k of the k-fold split. Default 10 (the paper); 5 for the built-in synthetic corpus (200 test micrographs a fold)."})
    fold: int = field(default=0, metadata={"help": "Test fold; validation is the next fold, training the rest."})
    cross_validate: bool = field(default=False, metadata={"help": "Run every fold and report mean +- std."})
    folds: str | None = field(default=None, metadata={"help": (
        "Comma-separated test folds to run, e.g. 1,3 (each as --fold runs one); instead of --fold and "
        "--cross_validate. The tables cover every finished run in --output_dir, so pieces of a cross-validation "
        "run one after another add up.")})

    # Models.
    ablation: str = field(default="none", metadata={"help": "none, all, or one of: " + ", ".join(ABLATIONS)})
    train_peer: bool = field(default=True, metadata={"help": "Also train transformers' BlipForQuestionAnswering at the same size."})
    models: str | None = field(default=None, metadata={"help": (
        "Comma-separated models to train, instead of --ablation, --train_peer and --baselines: any of "
        + ", ".join(VARIANTS) + ", and the baselines vit, resnet, swin, features.")})
    baselines: str | None = field(default=None, metadata={"help": (
        "Supervised baselines of the paper's Table 2 trained on the same folds, pixels and schedule: a comma-separated "
        "list of vit, resnet, swin, features, or all, or none. Default: " + SYNTHETIC_BASELINES + " for the built-in "
        "synthetic corpus (the two that keep the main job under 15 minutes on 2 CPU cores; ResNet and Swin cost "
        "about 10 minutes a fold each there), none for other corpora.")})
    baseline_passes_per_epoch: int | None = field(default=None, metadata={"help": (
        "Passes over the training micrographs in one epoch of a supervised network. Default: as many as an epoch of "
        "MVaEMa shows each micrograph (its question groups: 4 on the built-in corpus), so that every model learns "
        "from as many views of each micrograph; 1 gives the baselines one pass an epoch.")})
    init_from: str | None = field(default=None, metadata={"help": "A saved or Hub MVaEMa to fine-tune (keeps its tokenizer)."})
    vocab_size: int = field(default=8192, metadata={"help": "WordPiece vocabulary trained on the corpus when not --init-from."})
    model_overrides: str = field(default="{}", metadata={"help": 'JSON of MVaEMaConfig fields, e.g. \'{"text_config": {"num_hidden_layers": 4}}\'.'})
    max_question_length: int = 48
    max_answer_length: int = 64

    # Optimisation: the paper's values, except the epoch budget of the built-in synthetic demo (see README).
    learning_rate: float = 1e-3
    warmup_steps: int = field(default=100, metadata={"help": "Optimizer steps of linear LR warm-up (not in the paper; Adam's first full-size steps disturb a model trained from scratch)."})
    batch_size: int | None = field(default=None, metadata={"help": "Global batch size (split across processes). Default 48 (the paper's); 32 for the built-in synthetic corpus, whose answers learn faster from more, smaller steps at its 12 epochs (docs/results.md)."})
    num_epochs: int | None = field(default=None, metadata={"help": "Default 50 (the paper); 12 for the built-in synthetic corpus."})
    lr_scheduler_type: str = field(default="reduce_lr_on_plateau", metadata={"help": "reduce_lr_on_plateau (the paper's: halve the rate after --lr_patience epochs without validation gain) or cosine (transformers' get_cosine_schedule_with_warmup: after the warm-up, the rate falls to 0 over --num_epochs, step by step). Names as in transformers' TrainingArguments."})
    lr_patience: int = field(default=5, metadata={"help": "Halve the learning rate after this many epochs without validation gain."})
    early_stopping_patience: int = 10
    questions_per_image: int | None = field(default=None, metadata={"help": "Questions of one image grouped in a batch (image encoded once). Default 4; 1 for the built-in synthetic corpus: each batch of distinct micrographs, more views of the images for the same text."})
    groups_per_image: int | None = field(default=None, metadata={"help": "Per epoch, use only this many random question groups of each image (default: all; 4 for the built-in synthetic corpus, with one question per group)."})
    ask_category_both_ways: bool = field(default=False, metadata={"help": "Every epoch asks each training image its category question twice, with the caption and without it (in its first two question groups, in place of one other question), instead of once with the caption dropped at --category_caption_drop_rate. Needs --ask_category_every_epoch."})
    ask_category_every_view: bool = field(default=False, metadata={"help": "Every training batch also asks each of its micrographs its category question (with the caption or not, at --category_caption_drop_rate), as an answer-only row: LM loss, no ITC/ITM, not given to the peer. The decoder then learns to name the category from the pixels at every view of a micrograph, as ITC learns it from the captions. On the built-in corpus, five folds: caption followed 0.995 instead of 0.893, the category named without a caption 0.606 instead of 0.447, at about a third more training time (docs/results.md); off by default until it fits the main job's 15 minutes."})
    category_answer_tokens: int | None = field(default=None, metadata={"help": "With --ask_category_every_view: the extra rows score only the first N tokens of the category answer, the words that name the category. Default 8 on the built-in corpus (its answers name the category within 8 tokens: 'The image shows MEMS devices and electrodes, specifically'), the whole answer otherwise (a teacher may name it later)."})
    ask_category_every_epoch: bool = field(default=True, metadata={"help": "Every epoch asks each training image its category question (the question classification and caption following rest on), in its first question group; otherwise it is drawn like any other, about once every 22 / (questions_per_image x groups_per_image) epochs."})
    augment: bool = field(default=True, metadata={"help": "Train-time augmentation of micrographs: crops across scales, flips, quarter turns, brightness, contrast, noise (MVaEMa, the peer and the baselines; never at evaluation)."})
    caption_drop_rate: float = field(default=0.5, metadata={"help": "Share of training prompts without the category caption (the category question's: --category_caption_drop_rate)."})
    category_caption_drop_rate: float = field(default=0.5, metadata={"help": "Share of the category question's training prompts without the caption: with it the answer must repeat the caption's category, without it name the category from the pixels (see docs/training.md)."})
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: what `accelerate config` or `accelerate launch --mixed_precision` set, else no)."})
    max_nonfinite_steps: int = field(default=10, metadata={"help": "Training steps with a NaN or infinite loss that are skipped before the run stops."})
    seed: int = 0

    # Evaluation.
    eval_batch_size: int = 128
    max_eval_questions: int | None = field(default=None, metadata={"help": "Test pairs each VQA protocol answers, a fixed random subset, the same for every model (default: all; 1000 for the built-in synthetic corpus, whose 4,400 test pairs in three protocols, each also with a blank image, would cost minutes of the main job)."})

    # Outputs.
    output_dir: str = "outputs/mvaema"
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint; finished runs are kept."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Hub repo id to push the final model to."})
    hub_public: bool = field(default=False, metadata={"help": "Make the pushed repo public (private by default)."})

    def __post_init__(self):
        uses_synthetic = self.images is None and self.dataset is None
        if uses_synthetic:  # the built-in demo must finish in minutes on a laptop CPU (see README)
            self.num_epochs = 12 if self.num_epochs is None else self.num_epochs
            self.batch_size = 32 if self.batch_size is None else self.batch_size
            self.num_folds = 5 if self.num_folds is None else self.num_folds
            self.groups_per_image = 4 if self.groups_per_image is None else self.groups_per_image
            self.questions_per_image = 1 if self.questions_per_image is None else self.questions_per_image
            self.baselines = SYNTHETIC_BASELINES if self.baselines is None else self.baselines
            self.max_eval_questions = 1000 if self.max_eval_questions is None else self.max_eval_questions
            self.category_answer_tokens = 8 if self.category_answer_tokens is None else self.category_answer_tokens
        if self.num_epochs is None:
            self.num_epochs = 50
        if self.batch_size is None:
            self.batch_size = 48
        if self.num_folds is None:
            self.num_folds = 10
        if self.questions_per_image is None:
            self.questions_per_image = 4
        self.baselines = "none" if self.baselines is None else self.baselines
        if self.images is not None and not self.teacher_cache:
            raise ArgumentError("--images needs at least one --teacher-cache (the teacher's answers for those images)")
        try:
            selected_variants(self.ablation, self.train_peer)
            _ = self.baseline_names  # a bad --baselines or --models stops the run here, before any work
            _ = self.test_folds
        except ValueError as error:
            raise ArgumentError(str(error)) from None
        self._check_numbers()
        self._check_model_overrides()

    def _check_numbers(self) -> None:
        at_least_one = {"--batch_size": self.batch_size, "--num_epochs": self.num_epochs, "--num_folds": self.num_folds,
                        "--eval_batch_size": self.eval_batch_size, "--questions_per_image": self.questions_per_image,
                        "--gradient_accumulation_steps": self.gradient_accumulation_steps}
        if self.category_answer_tokens is not None:
            at_least_one["--category_answer_tokens"] = self.category_answer_tokens
        if self.baseline_passes_per_epoch is not None:
            at_least_one["--baseline_passes_per_epoch"] = self.baseline_passes_per_epoch
        for name, value in at_least_one.items():
            if value < 1:
                raise ArgumentError(f"{name} must be at least 1, got {value}")
        if self.warmup_steps < 0:
            raise ArgumentError(f"--warmup_steps must be >= 0 (0: no warm-up), got {self.warmup_steps}")
        if self.lr_scheduler_type not in LR_SCHEDULER_TYPES:
            raise ArgumentError(f"--lr_scheduler_type must be one of {', '.join(LR_SCHEDULER_TYPES)}, "
                                f"got {self.lr_scheduler_type!r}")
        if self.max_nonfinite_steps < 0:
            raise ArgumentError(f"--max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}")
        for name in ("caption_drop_rate", "category_caption_drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ArgumentError(f"--{name} is a share of prompts, between 0 and 1; got {getattr(self, name)}")
        if self.ask_category_both_ways and not self.ask_category_every_epoch:
            raise ArgumentError("--ask_category_both_ways asks the category question twice every epoch; it needs "
                                "--ask_category_every_epoch (not --no_ask_category_every_epoch)")
        if not 0 <= self.fold < self.num_folds:
            raise ArgumentError(f"--fold {self.fold} is outside 0..{self.num_folds - 1}")

    def _check_model_overrides(self) -> None:
        try:
            overrides = json.loads(self.model_overrides)
        except json.JSONDecodeError as error:
            raise ArgumentError(f"--model_overrides is not valid JSON ({error.msg} at character {error.pos}): "
                                f"{self.model_overrides!r}") from None
        if not isinstance(overrides, dict):
            raise ArgumentError(f"--model_overrides must be a JSON object of MVaEMaConfig fields, like "
                                f"'{{\"text_config\": {{\"num_hidden_layers\": 4}}}}'; got {self.model_overrides!r}")

    @property
    def overrides(self) -> dict:
        """`--model_overrides` as a dict of MVaEMaConfig fields."""
        return json.loads(self.model_overrides)

    @property
    def variants(self) -> list[str]:
        if self.models is not None:
            return [variant for variant in VARIANTS if variant in self.model_names]
        return selected_variants(self.ablation, self.train_peer)

    @property
    def baseline_names(self) -> list[str]:
        """`--baselines` (or the baselines of `--models`) as names of `instruct_tuning.baselines.BASELINES`, in the
        order given."""
        # Imported here, not at the top: the baselines reuse the training loop's pieces, which import these arguments.
        from instruct_tuning.baselines import BASELINES, parse_baselines

        if self.models is not None:
            return [name for name in self.model_names if name in BASELINES]
        return parse_baselines(self.baselines)

    @property
    def model_names(self) -> list[str]:
        return parse_models(self.models)

    @property
    def test_folds(self) -> list[int]:
        """The test folds this run trains: --folds, every fold with --cross_validate, else --fold."""
        if self.folds is None:
            return list(range(self.num_folds)) if self.cross_validate else [self.fold]
        if self.cross_validate:
            raise ValueError("--folds and --cross_validate both choose the folds: give one of them")
        return parse_folds(self.folds, self.num_folds)


def parse_models(text: str) -> list[str]:
    """`--models` "mvaema,vit" as a list, in the order given; ValueError naming an unknown model."""
    from instruct_tuning.baselines import BASELINES  # not at the top: see ScriptArguments.baseline_names

    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    known = [*VARIANTS, *BASELINES]
    unknown = [name for name in names if name not in known]
    if not names or unknown:
        raise ValueError(f"--models {text!r}: give a comma-separated list of {', '.join(known)}"
                         + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    return names


def parse_folds(text: str, num_folds: int) -> list[int]:
    """`--folds` "1,3" as a list of test folds, in the order given; ValueError unless each is in 0..num_folds-1."""
    try:
        folds = list(dict.fromkeys(int(fold) for fold in text.split(",") if fold.strip()))
    except ValueError:
        folds = []
    if not folds or not all(0 <= fold < num_folds for fold in folds):
        raise ValueError(f"--folds {text!r}: give comma-separated folds between 0 and {num_folds - 1}, e.g. 1,3")
    return folds
