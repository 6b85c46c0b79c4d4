# Copyright 2026 The MVaEMa authors. Licensed under the Apache License, Version 2.0.
"""MVaEMa processor: micrographs -> `pixel_values`, caption + question -> `input_ids`, answers -> `labels`.

Also `train_wordpiece_tokenizer`, which builds the corpus vocabulary with the `tokenizers` library.
"""

import logging
import math
import string
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BatchFeature, BlipImageProcessorPil, PreTrainedTokenizerFast, ProcessorMixin

from .configuration_mvaema import SPECIAL_TOKENS
from .safe_loading_mvaema import load_subprocessors

IGNORE_INDEX = -100
# WordPiece turns a whole word into [UNK] when one of its characters is missing from the vocabulary, so every
# printable ASCII character is kept, both as a word start and as a "##" continuation.
ALPHABET = [character for character in string.printable if not character.isspace()]
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
# Rows of a 16/32-bit or float image converted at a time: bounds the float copies of a band, whatever the image's size.
ROWS_PER_BAND = 64

logger = logging.getLogger(__name__)


def _empty_wordpiece_tokenizer(lowercase: bool, vocab: dict[str, int] | None = None) -> Tokenizer:
    """The tokenizer pipeline: BERT's normalizer, whitespace words, "##" sub-words, a decoder that joins them."""
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return tokenizer


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2, lowercase: bool = False
) -> PreTrainedTokenizerFast:
    """Train a WordPiece vocabulary on `texts` (questions, answers, captions) with the `tokenizers` library.

    Words are split on whitespace only and sub-words carry the "##" prefix, so `decode` gives back the text exactly
    (up to whitespace): the paper's BLEU/ROUGE/METEOR compare whitespace tokens, and BERT's pre-tokenizer would turn
    "high-aspect-ratio" into "high - aspect - ratio". Case is kept unless `lowercase`. Special tokens [PAD] [UNK] [CLS]
    [SEP] [MASK] [ENC] [DEC] get ids 0-6 (the `MVaEMaConfig` defaults); `vocab_size` is the trainer's target.
    The same texts give the same vocabulary in every process.

    Returns a `PreTrainedTokenizerFast` that adds "[CLS] ... [SEP]" and saves/loads with `AutoTokenizer` (a
    `BertTokenizer` would rebuild BERT's own pre-tokenizer on loading and lose this one).
    """
    special_tokens = list(SPECIAL_TOKENS.values())
    if vocab_size <= len(special_tokens) + 2 * len(ALPHABET):
        raise ValueError(
            f"vocab_size={vocab_size} is too small; it must exceed the special tokens and the "
            f"character alphabet ({len(special_tokens) + 2 * len(ALPHABET)} entries)."
        )
    texts = list(texts)
    tokenizer = _empty_wordpiece_tokenizer(lowercase)
    seen = set().union(*(tokenizer.normalizer.normalize_str(text) for text in texts))
    characters = sorted((seen | set(ALPHABET)) - set(string.whitespace))
    # The trainer numbers the "##" continuation of each character in hash-map order (tokenizers issue #1794), and
    # those numbers break ties between equally frequent merges: two processes then learn different vocabularies.
    # Given to the trainer up front (as extra special tokens), the continuations get fixed numbers instead, which
    # makes training deterministic; they also keep every character usable inside a word.
    continuations = ["##" + character for character in characters]
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens + continuations,
        initial_alphabet=characters,
        continuing_subword_prefix="##",
    )
    tokenizer.train_from_iterator(texts, trainer)
    # Numbered afresh (specials first, then sorted): WordPiece encodes by longest match, so the numbering changes no
    # tokenisation, and the continuations become ordinary vocabulary entries rather than special tokens.
    learned = sorted(set(tokenizer.get_vocab()) - set(special_tokens))
    tokenizer = _empty_wordpiece_tokenizer(
        lowercase, vocab={token: index for index, token in enumerate(special_tokens + learned)}
    )
    tokenizer.add_special_tokens(special_tokens)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        extra_special_tokens=["[ENC]", "[DEC]"],
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. 16/32-bit and float greyscale is stretched over the range of its finite pixels
    (`stretched_to_8_bit`); transparency is composited onto white."""
    if image.mode in HIGH_BIT_DEPTH_MODES:
        image = stretched_to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    return image.convert("RGB")


def stretched_to_8_bit(image: Image.Image, factor: int = 1, source: str | None = None) -> Image.Image:
    """A 16/32-bit or float greyscale `image`, box-reduced by `factor`, as 8-bit greyscale stretched over the range of
    its finite pixels (scaling by the type's maximum would turn a 12-bit detector's image nearly black; one NaN would
    make the range NaN). NaN and infinite pixels are shown black, with a warning naming `source` (by default the
    file PIL opened the image from). Converted in float32, a band of rows at a time: never one float64 copy."""
    values = box_reduced_float32(image, factor)
    low, high = finite_range(values, source or getattr(image, "filename", "") or "an image")
    scale = 255.0 / (high - low) if high > low else 0.0
    stretched = np.empty(values.shape, dtype=np.uint8)
    for first in range(0, len(values), ROWS_PER_BAND):
        # The arithmetic in float64, a band at a time: finite images keep the pixels they always had.
        band = values[first : first + ROWS_PER_BAND].astype(np.float64)
        band[~np.isfinite(band)] = low
        stretched[first : first + ROWS_PER_BAND] = ((band - low) * scale).astype(np.uint8)
    return Image.fromarray(stretched)


def finite_range(values: np.ndarray, source: str) -> tuple[float, float]:
    """The lowest and highest finite value of `values` ((0, 0) when none is), read a band of rows at a time; a NaN or
    infinite value is reported in a warning naming `source`."""
    low, high, all_finite = math.inf, -math.inf, True
    for first in range(0, len(values), ROWS_PER_BAND):
        band = values[first : first + ROWS_PER_BAND]
        finite = band[np.isfinite(band)]
        all_finite = all_finite and finite.size == band.size
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if not all_finite:
        logger.warning("%s: NaN or infinite pixels (no measured value) are shown black; the others are stretched "
                       "over their own range", source)
    return (low, high) if low <= high else (0.0, 0.0)


def box_reduced_float32(image: Image.Image, factor: int = 1) -> np.ndarray:
    """One-band `image` as float32, each `factor` x `factor` box averaged (the last rows and columns that do not fill
    a box are left out), converted a band of rows at a time so that no full-size float copy exists when `factor` > 1
    (PIL cannot reduce 16-bit images itself)."""
    columns, rows = image.width // factor, image.height // factor
    reduced = np.empty((rows, columns), dtype=np.float32)
    for first in range(0, rows, ROWS_PER_BAND):
        last = min(first + ROWS_PER_BAND, rows)
        band = np.asarray(image.crop((0, first * factor, columns * factor, last * factor)), dtype=np.float32)
        reduced[first:last] = band.reshape(last - first, factor, columns, factor).mean(axis=(1, 3))
    return reduced


class MVaEMaProcessor(ProcessorMixin):
    r"""
    Turns micrographs, questions (with optional captions) and answers into MVaEMa inputs.

    Args:
        image_processor (`BlipImageProcessorPil`): resizes to 224 x 224 and normalises with mean = std = 0.5 (paper).
        tokenizer (`PreTrainedTokenizerFast`): the corpus WordPiece tokenizer (`train_wordpiece_tokenizer`).
        max_question_length (`int`, defaults to 48): tokens of "[CLS] caption question [SEP]"; the caption is
            shortened first, the question only if it alone is too long.
        max_answer_length (`int`, defaults to 64): tokens of "answer [SEP]".
        category_names (`list[str]`, optional): the categories `rank_categories` ranks (e.g. the ten SEM folders).
        category_texts (`list[str]`, optional): per category, the answer that names it, which the decoder scores
            (`"lm"`); the training script makes it the category caption, so that it does not depend on how a teacher
            phrases its answers.
        category_captions (`list[str]`, optional): per category, the caption that states it (from the caption
            template); ITC and ITM classification compare each image with "[CLS] caption [SEP]".
        classification_question (`str`, optional): the question asked (without a caption) when classifying.
        classification_method (`str`, optional): `"itc"`, `"itm"` or `"lm"`, the default of `rank_categories`
            (training picks the best one on validation data).
        self_caption (`bool`, defaults to `True`): questions asked without captions and without answers (inference)
            also get what `model.generate` needs to caption them itself: every category caption before each question
            and the captions alone, which the model ranks against the image (see `__call__`). Needs
            `category_captions`; set it to `False` to ask the bare questions.
    """

    def __init__(
        self,
        image_processor,
        tokenizer,
        max_question_length: int = 48,
        max_answer_length: int = 64,
        category_names: list[str] | None = None,
        category_texts: list[str] | None = None,
        category_captions: list[str] | None = None,
        classification_question: str | None = None,
        classification_method: str | None = None,
        self_caption: bool = True,
    ):
        super().__init__(image_processor, tokenizer)
        self.max_question_length = max_question_length
        self.max_answer_length = max_answer_length
        self.category_names = category_names
        self.category_texts = category_texts
        self.category_captions = category_captions
        self.classification_question = classification_question
        self.classification_method = classification_method
        self.self_caption = self_caption

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        # The package's tokenizer and image processor, never the classes a saved folder's files name (see
        # safe_loading_mvaema): loading asks nothing on the terminal and runs nothing shipped.
        return load_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs)

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerFast, image_size: int = 224, **kwargs) -> "MVaEMaProcessor":
        """A processor with the paper's image preprocessing (resize to `image_size`, mean = std = 0.5)."""
        image_processor = BlipImageProcessorPil(
            size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        return cls(image_processor, tokenizer, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "input_ids", "attention_mask", "labels", "image_index"]

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | None = None,
        questions: str | Sequence[str] | None = None,
        captions: Sequence[str | None] | None = None,
        answers: Sequence[str] | None = None,
        image_index: Sequence[int] | None = None,
        return_tensors: str = "pt",
        max_question_length: int | None = None,
        max_answer_length: int | None = None,
        text: str | Sequence[str] | None = None,
        self_caption: bool | None = None,
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            images: PIL images in any mode (RGB, L, P, I;16, CMYK, RGBA, ...), one per question, or the distinct
                images of the batch together with `image_index`.
            questions: one string per QA pair.
            text: the same as `questions`, under the name transformers' processors and the `image-text-to-text`
                pipeline use (pass one of the two). Other keyword arguments pipelines add (padding, truncation) are
                ignored: prompts are always padded to the longest and cut at `max_question_length`.
            captions: per question an optional caption (or None), placed before the question.
            answers: per question the target answer (training); gives `labels`.
            image_index: per question the position of its image in `images` (each image is then encoded once).
            self_caption: add the inputs with which `model.generate` captions each question itself (the category
                caption it ranks first for the image goes before the question). Default: `self.self_caption` when
                neither captions nor answers are given and the processor knows the category captions.

        Returns a `BatchFeature` with `pixel_values` `(N, 3, 224, 224)`, `input_ids` and `attention_mask` `(B, Lq)`
        ("[CLS] caption question [SEP]", padded to the longest), and if given `labels` `(B, La)` ("answer [SEP]",
        -100 on padding) and `image_index` `(B,)`. With self-captioning also `captioned_input_ids` and
        `captioned_attention_mask` `(B, C, Lq')` (question i after category caption c) and
        `caption_candidate_input_ids`, `caption_candidate_attention_mask` `(C, Lc)` ("[CLS] caption [SEP]" of each of
        the C categories).
        """
        if text is not None:
            if questions is not None:
                raise ValueError("pass the questions as `questions` or as `text`, not both.")
            questions = text
        if images is not None and not isinstance(images, Image.Image) and isinstance(images, Sequence):
            # Pipelines nest images per prompt: [[image], [image]] -> [image, image] (one image per question).
            images = [image for group in images for image in (group if isinstance(group, (list, tuple)) else [group])]
        questions = self._check_texts("questions", [questions] if isinstance(questions, str) else questions)
        batch_size = len(questions)
        captions = self._check_optional_list("captions", captions, batch_size)
        answers = self._check_optional_list("answers", answers, batch_size)
        if answers is not None:
            self._check_texts("answers", answers)
        max_question_length = max_question_length or self.max_question_length
        question_ids = self._question_ids(questions, captions, max_question_length)
        data = self.tokenizer.pad({"input_ids": question_ids}, return_attention_mask=True)
        if self_caption is None:
            self_caption = self.self_caption and captions is None and answers is None and bool(self.category_captions)
        if self_caption:
            if captions is not None or answers is not None:
                raise ValueError("self_caption=True captions the questions itself; pass no captions or answers.")
            data.update(self._self_caption_inputs(questions, max_question_length))
        if answers is not None:
            data["labels"] = self._answer_labels(answers, max_answer_length or self.max_answer_length)
        if images is not None:
            images = self._check_images(images)
            data["pixel_values"] = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
            if image_index is not None:
                data["image_index"] = self._check_image_index(image_index, batch_size, len(images))
            elif len(images) != batch_size:
                raise ValueError(
                    f"{len(images)} images for {batch_size} questions; give one image per "
                    "question or pass image_index (the image position of each question)."
                )
        elif image_index is not None:
            raise ValueError("image_index was given without images.")
        return BatchFeature(data=dict(data), tensor_type=return_tensors)

    def prepare_label_texts(
        self,
        labels: Sequence[str],
        questions: Sequence[str] | None = None,
        captions: Sequence[str | None] | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Label texts for `model.classify`, tokenized like answers: `label_input_ids` "[CLS] label [SEP]" and
        `label_attention_mask`, both `(C, L)`. With `questions` (and optional `captions`), also the labels in the
        training pairs' format, "[CLS] caption question [SEP] label [SEP]", as `label_pair_input_ids` and
        `label_pair_attention_mask` `(C, L')`: what ITC and ITM compare with an image."""
        labels = self._check_texts("labels", labels)
        answer_ids = [
            ids[: self.max_answer_length - 1]
            for ids in self.tokenizer(list(labels), add_special_tokens=False)["input_ids"]
        ]
        data = self._padded(
            "label", [[self.tokenizer.cls_token_id, *ids, self.tokenizer.sep_token_id] for ids in answer_ids]
        )
        if questions is not None:
            questions = self._check_texts("questions", questions)
            captions = self._check_optional_list("captions", captions, len(questions))
            prompts = self._question_ids(questions, captions, self.max_question_length)
            data.update(
                self._padded(
                    "label_pair",
                    [
                        [*prompt, *ids, self.tokenizer.sep_token_id]
                        for prompt, ids in zip(prompts, answer_ids, strict=True)
                    ],
                )
            )
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _self_caption_inputs(self, questions: list[str], max_question_length: int) -> dict:
        """`captioned_*` `(B, C, L)`: each question after each category caption; `caption_candidate_*` `(C, Lc)`: the
        captions alone, as classification compares them with the image."""
        captions = self.category_captions
        if not captions:
            raise ValueError(
                "self_caption needs the category captions; this processor has none (set category_captions, as the "
                "training script does, or pass self_caption=False)."
            )
        prompts = self._question_ids(
            [question for question in questions for _ in captions], list(captions) * len(questions), max_question_length
        )
        padded = self.tokenizer.pad({"input_ids": prompts}, return_attention_mask=True)
        per_question = len(captions)

        def grouped(rows: list[list[int]]) -> list[list[list[int]]]:
            return [rows[start : start + per_question] for start in range(0, len(rows), per_question)]

        caption_ids = [ids[:max_question_length] for ids in self.tokenizer(list(captions))["input_ids"]]
        return {
            "captioned_input_ids": grouped(padded["input_ids"]),
            "captioned_attention_mask": grouped(padded["attention_mask"]),
            **self._padded("caption_candidate", caption_ids),
        }

    def _padded(self, prefix: str, token_ids: list[list[int]]) -> dict:
        padded = self.tokenizer.pad({"input_ids": token_ids}, return_attention_mask=True)
        return {f"{prefix}_input_ids": padded["input_ids"], f"{prefix}_attention_mask": padded["attention_mask"]}

    def classification_inputs(self, return_tensors: str = "pt") -> BatchFeature:
        """The text side of `model.classify`: the category texts as `label_input_ids`/`label_attention_mask` `(C, L)`
        (scored as answers by the decoder, `"lm"`), the category captions "[CLS] caption [SEP]" as
        `label_pair_input_ids`/`label_pair_attention_mask` (compared with the image by ITC and ITM; without captions,
        the category texts), and the classification question as `question_input_ids`/`question_attention_mask`
        `(1, Lq)`."""
        if not (self.category_names and self.category_texts and self.classification_question):
            raise ValueError(
                "this processor has no categories; set category_names, category_texts and classification_question "
                "(the training script saves them with the model)."
            )
        for name in ("category_texts", "category_captions"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.category_names):
                raise ValueError(
                    f"{len(self.category_names)} category_names but {len(values)} {name}; give one per category."
                )
        question = self(questions=[self.classification_question], return_tensors=return_tensors)
        labels = self.prepare_label_texts(self.category_texts, return_tensors=return_tensors)
        captions = self.category_captions or self.category_texts
        caption_ids = self.tokenizer(list(captions))["input_ids"]
        return BatchFeature(
            data={
                **labels,
                **self._padded("label_pair", [ids[: self.max_question_length] for ids in caption_ids]),
                "question_input_ids": question["input_ids"],
                "question_attention_mask": question["attention_mask"],
            },
            tensor_type=return_tensors,
        )

    def rank_categories(self, model, images, method: str | None = None, top_k: int = 5) -> list[list[dict]]:
        """Rank this processor's categories for each image with `model.classify`.

        Returns, per image, the `top_k` best `{"label": name, "score": float}`, best first. `method` defaults to
        `classification_method` (else "lm", which every variant supports).
        """
        pixel_values = self.image_processor(self._check_images(images), return_tensors="pt")["pixel_values"]
        text_inputs = self.classification_inputs()
        parameter = next(model.parameters())
        output = model.classify(
            pixel_values=pixel_values.to(device=parameter.device, dtype=parameter.dtype),
            **{name: tensor.to(parameter.device) for name, tensor in text_inputs.items()},
            method=method or self.classification_method or "lm",
            top_k=min(top_k, len(self.category_names)),
        )
        return [
            [{"label": self.category_names[int(i)], "score": float(score)} for i, score in zip(indices, scores)]
            for indices, scores in zip(output.top_k_indices, output.top_k_scores)
        ]

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Generated ids `(B, L)` -> answer strings ([DEC], [SEP] and padding dropped)."""
        return [
            text.strip()
            for text in self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        ]

    def decode(self, token_ids, skip_special_tokens: bool = True, **kwargs) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs).strip()

    def post_process_image_text_to_text(
        self, generated_outputs, skip_special_tokens: bool = True, **kwargs
    ) -> list[str]:
        """Generated ids `(B, L)` -> answer strings, for the `image-text-to-text` pipeline. MVaEMa is an
        encoder-decoder: its output holds the answer alone (no echo of the prompt to cut off)."""
        return self.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    def _question_ids(
        self, questions: list[str], captions: list[str | None] | None, max_length: int
    ) -> list[list[int]]:
        """[CLS] caption question [SEP], cut to `max_length`: the caption gives way first."""
        question_tokens = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        caption_tokens = (
            self.tokenizer([caption or "" for caption in captions], add_special_tokens=False)["input_ids"]
            if captions is not None
            else [[] for _ in questions]
        )
        budget = max_length - 2
        if budget < 1:
            raise ValueError(f"max_question_length={max_length} leaves no room for the question.")
        ids = []
        for question, caption in zip(question_tokens, caption_tokens, strict=True):
            question = question[:budget]
            caption = caption[: budget - len(question)]
            ids.append([self.tokenizer.cls_token_id, *caption, *question, self.tokenizer.sep_token_id])
        return ids

    def _answer_labels(self, answers: list[str], max_length: int) -> list[list[int]]:
        """answer [SEP], cut to `max_length`, padded with -100."""
        token_ids = self.tokenizer(answers, add_special_tokens=False)["input_ids"]
        labels = [[*ids[: max_length - 1], self.tokenizer.sep_token_id] for ids in token_ids]
        longest = max(len(label) for label in labels)
        return [label + [IGNORE_INDEX] * (longest - len(label)) for label in labels]

    @staticmethod
    def _check_texts(name: str, texts) -> list[str]:
        if texts is None or isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError(f"{name} must be a non-empty list of strings, got {texts!r:.80}.")
        for position, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{name}[{position}] is {text!r:.80}; every entry must be non-empty text.")
        return list(texts)

    @staticmethod
    def _check_optional_list(name: str, values, batch_size: int) -> list | None:
        if values is None:
            return None
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise ValueError(f"{name} must be a list with one entry per question.")
        if len(values) != batch_size:
            raise ValueError(f"{len(values)} {name} for {batch_size} questions; give one per question.")
        return list(values)

    @staticmethod
    def _check_images(images) -> list[Image.Image]:
        images = [images] if isinstance(images, Image.Image) else images
        if not isinstance(images, Sequence) or len(images) == 0:
            raise TypeError(f"images must be a PIL image or a non-empty list of them, got {type(images).__name__}.")
        for position, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(
                    f"images[{position}] is a {type(image).__name__}, not a PIL image; open "
                    "files with PIL.Image.open (arrays: PIL.Image.fromarray)."
                )
        return [to_rgb(image) for image in images]

    @staticmethod
    def _check_image_index(image_index: Sequence[int], batch_size: int, num_images: int) -> list[int]:
        image_index = list(image_index)
        if len(image_index) != batch_size:
            raise ValueError(f"image_index has {len(image_index)} entries for {batch_size} questions.")
        if any(not 0 <= index < num_images for index in image_index):
            raise ValueError(
                f"image_index values must lie in [0, {num_images - 1}] (positions in images), got {image_index}."
            )
        return image_index


MVaEMaProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["MVaEMaProcessor", "to_rgb", "train_wordpiece_tokenizer"]
