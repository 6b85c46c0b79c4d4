"""The processor and the models a run trains, built from a corpus and a variant name.

The training script and the benchmarks both build their processors and models here, so that what is
benchmarked is what is trained.
"""

from __future__ import annotations

from pathlib import Path

from dataset_builder.question_families import CLASSIFICATION_QUESTION, caption_for_category
from instruct_tuning.data import corpus_categories
from instruct_tuning.peer import BlipPeerForQuestionAnswering, blip_peer_config
from instruct_tuning.variants import MVAEMA, PEER, ablation_of
from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering, MVaEMaProcessor, train_wordpiece_tokenizer

TEXT_COLUMNS = ("question", "answer", "caption")


def train_processor(corpus, vocab_size: int, image_size: int = 224, max_question_length: int = 48,
                    max_answer_length: int = 64) -> MVaEMaProcessor:
    """A processor with a WordPiece vocabulary trained on the corpus's questions, answers and captions."""
    texts = (text for column in TEXT_COLUMNS for text in corpus[column])
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=vocab_size)
    return MVaEMaProcessor.from_tokenizer(tokenizer, image_size=image_size, max_question_length=max_question_length,
                                          max_answer_length=max_answer_length)


def attach_categories(processor: MVaEMaProcessor, class_names: list[str]) -> MVaEMaProcessor:
    """The corpus's categories (`data.corpus_categories`: those it has images of) and their label texts, which
    `rank_categories`, classification and self-captioning read; whatever categories the processor had before (a
    model trained on other categories, `--init_from`) are replaced.

    The label texts come from the caption template (`caption_for_category`), not from a teacher's answers: a corpus
    written by any teacher classifies the same way, and training fits the model to them (ITC contrasts images with
    the captions)."""
    processor.category_names = class_names
    processor.category_captions = [caption_for_category(name) for name in class_names]
    processor.category_texts = list(processor.category_captions)
    processor.classification_question = CLASSIFICATION_QUESTION
    return processor


def model_config(processor: MVaEMaProcessor, variant: str = MVAEMA, **overrides) -> MVaEMaConfig:
    """MVaEMa's config for `variant` (its ablation switch, if any) sized to the processor's vocabulary."""
    return MVaEMaConfig.from_tokenizer(processor.tokenizer, ablation=ablation_of(variant), **overrides)


def model_from_config(variant: str, config: MVaEMaConfig):
    """A freshly initialised model: the BLIP peer at `config`'s size, or MVaEMa (ablation included in `config`)."""
    if variant == PEER:
        return BlipPeerForQuestionAnswering(blip_peer_config(config))
    return MVaEMaForQuestionAnswering(config)


def build_model(variant: str, processor: MVaEMaProcessor, overrides: dict, init_from: str | None = None):
    """The model a run trains: `init_from`'s weights for MVaEMa when given, a fresh model otherwise."""
    if init_from and variant == MVAEMA:
        return MVaEMaForQuestionAnswering.from_pretrained(init_from)
    return model_from_config(variant, model_config(processor, variant, **overrides))


def build_processor(corpus, args) -> MVaEMaProcessor:
    """The processor of a run (`args`: ScriptArguments): the one saved in `--output_dir/processor` when resuming (its
    checkpoints were trained with those token ids), `--init_from`'s, or one trained on the corpus; saved there."""
    saved = Path(args.output_dir) / "processor"
    if args.resume and saved.exists():
        return MVaEMaProcessor.from_pretrained(saved)
    if args.init_from:
        processor = MVaEMaProcessor.from_pretrained(args.init_from)
    else:
        image_size = args.overrides.get("vision_config", {}).get("image_size", 224)
        processor = train_processor(corpus, args.vocab_size, image_size, args.max_question_length, args.max_answer_length)
    attach_categories(processor, corpus_categories(corpus))
    processor.save_pretrained(saved)
    return processor
