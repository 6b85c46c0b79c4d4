"""Training data for instruction tuning: the corpus, a decoded pixel store, token tables and image-grouped batches.

Speed decisions (measured in benchmarks/): every micrograph is decoded and resized exactly once into a
uint8 pixel store cached on disk (JPEG draft mode decodes 1024x768 at 1/2 scale), prompts and answers are
tokenised once into padded tables, and a batch groups several questions of the same image so the
vision encoder runs once per image per step. Collation is then pure tensor indexing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from dataset_builder.builder import load_instruct_corpus, load_prepared_corpus
from dataset_builder.images import BadImageError
from dataset_builder.question_families import CLASSIFICATION_QUESTION
from dataset_builder.synthetic import CACHE_FILE_NAME, IMAGES_DIR_NAME, generate_synthetic_corpus, load_synthetic_facts
from instruct_tuning.arguments import ArgumentError
from instruct_tuning.atomic_io import write_file_atomically
from modeling_mvaema.processing_mvaema import to_rgb

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Corpus
# ----------------------------------------------------------------------------------------------------------
def synthetic_corpus(directory: Path, per_category: int, seed: int, num_folds: int, cache_dir: Path,
                     generate: bool = True) -> datasets.Dataset:
    """The built-in synthetic corpus in `directory` as a QA dataset. With `generate`, missing images are generated
    first (a second run, or an interrupted one, goes on); without it, another process has generated them."""
    directory = Path(directory)
    if generate:
        corpus = generate_synthetic_corpus(directory, per_category=per_category, seed=seed, workers=os.cpu_count() or 1)
        if corpus.images_written:
            logger.info("generated %d synthetic micrographs in %s", corpus.images_written, directory)
    return load_instruct_corpus(directory / IMAGES_DIR_NAME, [str(directory / CACHE_FILE_NAME)], num_folds=num_folds,
                                seed=seed, cache_dir=str(cache_dir))


def load_corpus(args, accelerator) -> datasets.Dataset:
    """The QA corpus of `args` (ScriptArguments) with a `fold` column; the main process generates and builds it
    first, the others then read its cache."""
    if args.dataset:
        return with_fold_count(load_prepared_corpus(args.dataset), args.num_folds, args.dataset)
    cache_dir = Path(args.output_dir) / "dataset_cache"
    with accelerator.main_process_first():
        if args.images:
            return load_instruct_corpus(args.images, list(args.teacher_cache), num_folds=args.num_folds, seed=args.seed,
                                        cache_dir=str(cache_dir))
        return synthetic_corpus(synthetic_directory(args), args.synthetic_per_category, args.seed, args.num_folds,
                                cache_dir, generate=accelerator.is_main_process)


def synthetic_directory(args) -> Path:
    """Where the built-in corpus of `args` lives. The generator draws its micrographs from the seed, so each seed has
    its own folder (seed 0 keeps the plain name): sharing one, a run with another `--seed` would add its micrographs
    to those already there and train on both sets."""
    if args.synthetic_dir:
        return Path(args.synthetic_dir)
    suffix = f"-seed{args.seed}" if args.seed != 0 else ""
    return Path(f"data/synthetic-{args.synthetic_per_category}-per-category{suffix}")


def corpus_facts(args) -> dict[str, dict] | None:
    """`image_id -> facts` of the built-in synthetic corpus (what each scene shows, for the grounded fact scores);
    None for a lab's corpus, whose truth only the teacher's answers tell."""
    if args.images or args.dataset:
        return None
    return load_synthetic_facts(synthetic_directory(args))


def with_fold_count(corpus: datasets.Dataset, num_folds: int, source: str) -> datasets.Dataset:
    """A prepared corpus carries the folds it was built with; `--num_folds` must say the same, or folds would be
    split wrongly without a word."""
    built_with = max(corpus["fold"]) + 1
    if built_with != num_folds:
        raise ArgumentError(f"--num_folds {num_folds} does not match the dataset {source}, which was built with "
                            f"{built_with} folds; pass --num_folds {built_with}")
    return corpus


# ----------------------------------------------------------------------------------------------------------
# Pixel store
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PixelStore:
    """Model-ready micrographs: `pixels[image_index]` is a uint8 [3, S, S] image; `index_of[image_key]` is the
    image_index of the micrograph whose corpus `image_id` is `image_key`."""

    pixels: torch.Tensor
    image_keys: list[str]

    def __post_init__(self) -> None:
        self.index_of = {image_key: index for index, image_key in enumerate(self.image_keys)}

    def normalized(self, image_index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 images at `image_index` [N] -> pixel_values [N, 3, S, S] in [-1, 1] (mean = std = 0.5, as the
        image processor)."""
        return self.pixels[image_index.to(self.pixels.device)].to(dtype).div_(127.5).sub_(1.0)

    def to(self, device: torch.device | str) -> "PixelStore":
        return PixelStore(self.pixels.to(device), self.image_keys)

    @property
    def image_size(self) -> int:
        return self.pixels.shape[-1]


def decode_for_model(source: dict, size: int) -> np.ndarray:
    """An image column entry ({"path", "bytes"}) -> uint8 [3, size, size], decoded once at reduced scale.

    JPEG draft mode has libjpeg decode straight to the smallest DCT scale (1/2, 1/4 or 1/8) that keeps both
    sides >= `size`: a 1024x768 micrograph is decoded at 512x384, 2-3x faster than at full size, then resized
    bicubically to `size` x `size` like the image processor does from full size. The two differ by under one
    grey level on average (benchmarks/data_pipeline.py reports the difference). Other formats decode in full.
    """
    path, payload = source.get("path"), source.get("bytes")
    try:
        with Image.open(io.BytesIO(payload) if payload else path) as image:
            image.draft("RGB", (size, size))
            image = to_rgb(image).resize((size, size), Image.Resampling.BICUBIC)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImageError(path or "<embedded image bytes>", f"cannot decode for training ({error})") from error


def build_pixel_store(
    corpus: datasets.Dataset, image_size: int, cache_dir: Path, num_threads: int | None = None
) -> PixelStore:
    """Decode each distinct image of the corpus once into one preallocated uint8 tensor, cached on disk.

    `num_threads` (default: ThreadPoolExecutor's, a few more than the CPU cores) decode in parallel: PIL releases
    the GIL while it decodes and resizes. Each image is written into its place as soon as it is decoded, so peak
    memory is the store itself.
    """
    image_keys, first_rows = np.unique(np.asarray(corpus["image_id"]), return_index=True)
    image_keys = image_keys.tolist()
    decoding = "draft-dct-bicubic-2"  # in the cache key: a store decoded another way is not reused
    fingerprint = hashlib.sha256(json.dumps([decoding, image_size, image_keys]).encode()).hexdigest()[:16]
    cache_path = Path(cache_dir) / f"pixels-{image_size}px-{fingerprint}.safetensors"
    expected_shape = (len(image_keys), 3, image_size, image_size)
    if cache_path.exists():
        pixels = load_pixel_cache(cache_path, expected_shape)
        if pixels is not None:
            return PixelStore(pixels, image_keys)

    sources = corpus.cast_column("image", datasets.Image(decode=False)).select(first_rows.tolist())["image"]
    pixels = torch.empty((len(sources), 3, image_size, image_size), dtype=torch.uint8)

    def decode_into_store(image_index: int) -> None:
        pixels[image_index] = torch.from_numpy(decode_for_model(sources[image_index], image_size))

    with ThreadPoolExecutor(num_threads) as pool:
        list(pool.map(decode_into_store, range(len(sources))))
    metadata = {"sha256": pixel_digest(pixels)}
    write_file_atomically(cache_path, lambda temporary: save_file({"pixels": pixels}, str(temporary), metadata=metadata))
    logger.info("decoded %d images into %s", len(image_keys), cache_path)
    return PixelStore(pixels, image_keys)


def pixel_digest(pixels: torch.Tensor) -> str:
    """SHA-256 of a uint8 pixel tensor's bytes (hashed in place, no copy)."""
    return hashlib.sha256(memoryview(pixels.contiguous().numpy()).cast("B")).hexdigest()


def load_pixel_cache(path: Path, expected_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached pixels if the file is whole: readable, uint8 of `expected_shape` and matching its recorded hash;
    otherwise None (after a warning), and the caller decodes the images again."""
    try:
        with safe_open(str(path), framework="pt") as cache:
            recorded, pixels = (cache.metadata() or {}).get("sha256"), cache.get_tensor("pixels")
    except Exception as error:  # a truncated or garbled file fails in safetensors' parser with varying types
        logger.warning("pixel store %s is unreadable (%s); decoding the images again", path, error)
        return None
    if pixels.dtype != torch.uint8 or tuple(pixels.shape) != expected_shape:
        logger.warning("pixel store %s holds %s %s, not uint8 %s; decoding the images again", path, pixels.dtype,
                       tuple(pixels.shape), expected_shape)
        return None
    if recorded != pixel_digest(pixels):
        logger.warning("pixel store %s does not match its recorded SHA-256; decoding the images again", path)
        return None
    return pixels


# ----------------------------------------------------------------------------------------------------------
# Token tables
# ----------------------------------------------------------------------------------------------------------
@dataclass
class QATable:
    """One split's QA pairs, tokenised once. Rows align with the split's dataset rows.

    image_index [N]: pixel-store index of each pair's image; prompt_ids / prompt_ids_no_caption [N, Lq] and
    their masks; labels [N, La] (-100 on padding); category [N]: each pair's category as its position in the
    processor's `category_names` (`category_positions`); caption_ids / caption_mask [N, Lc]: "[CLS] caption
    [SEP]" of each pair's image; asks_category [N] (bool): the pair asks the category question; questions,
    families, image_ids: each pair's question text, question family and corpus image id (evaluation reads them).
    """

    image_index: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    prompt_ids_no_caption: torch.Tensor
    prompt_mask_no_caption: torch.Tensor
    labels: torch.Tensor
    category: torch.Tensor
    caption_ids: torch.Tensor
    caption_mask: torch.Tensor
    asks_category: torch.Tensor | None = None
    questions: list[str] | None = None
    families: list[str] | None = None
    image_ids: list[str] | None = None
    pad_token_id: int = 0

    def __len__(self) -> int:
        return len(self.image_index)


def pad_columns(table: torch.Tensor, width: int, value: int) -> torch.Tensor:
    return torch.nn.functional.pad(table, (0, width - table.shape[1]), value=value)


def corpus_categories(corpus: datasets.Dataset) -> list[str]:
    """The categories the corpus has QA pairs (so images) of, in ClassLabel id order: what the processor ranks and
    the metrics score. The ClassLabel may name more (a corpus of some SEM folders keeps the ten SEM ids, stable across
    corpora), but a category without an image is never learnt: ranked, it can only take wrong answers."""
    present = set(corpus.unique("category"))
    return [name for label, name in enumerate(corpus.features["category"].names) if label in present]


def category_positions(split: datasets.Dataset, category_names: Sequence[str] | None) -> torch.Tensor:
    """Each row's category as its position in `category_names` (the processor's list), from its ClassLabel id: the
    one place where corpus ids become the positions that tables, rankings, captions and metrics index."""
    if not category_names:
        raise ValueError("the processor has no categories: attach the corpus's first (factories.attach_categories)")
    position = {name: index for index, name in enumerate(category_names)}
    label_names = split.features["category"].names
    missing = sorted({label_names[label] for label in split.unique("category")} - set(position))
    if missing:
        raise ValueError(f"the corpus has images of {missing}, which the processor does not rank "
                         f"({list(category_names)})")
    return torch.tensor([position[label_names[label]] for label in split["category"]])


def tokenize_split(split: datasets.Dataset, processor, pixel_store: PixelStore) -> QATable:
    questions = split["question"]
    with_caption = processor(questions=questions, captions=split["caption"], answers=split["answer"], return_tensors="pt")
    without_caption = processor(questions=questions, return_tensors="pt")
    captions = processor.tokenizer(list(split["caption"]), padding=True, truncation=True,
                                   max_length=processor.max_question_length, return_tensors="pt")
    width = with_caption["input_ids"].shape[1]
    pad = processor.tokenizer.pad_token_id
    return QATable(
        image_index=torch.tensor([pixel_store.index_of[image_key] for image_key in split["image_id"]]),
        prompt_ids=with_caption["input_ids"],
        prompt_mask=with_caption["attention_mask"],
        prompt_ids_no_caption=pad_columns(without_caption["input_ids"], width, pad),
        prompt_mask_no_caption=pad_columns(without_caption["attention_mask"], width, 0),
        labels=with_caption["labels"],
        category=category_positions(split, processor.category_names),
        caption_ids=captions["input_ids"],
        caption_mask=captions["attention_mask"],
        asks_category=torch.tensor([question == CLASSIFICATION_QUESTION for question in questions]),
        questions=list(questions),
        families=list(split["family"]),
        image_ids=list(split["image_id"]),
        pad_token_id=pad,
    )


# ----------------------------------------------------------------------------------------------------------
# Batching
# ----------------------------------------------------------------------------------------------------------
def image_views_per_epoch(image_index: torch.Tensor, questions_per_image: int, groups_per_image: int | None) -> float:
    """How often an epoch of `ImageGroupedBatchSampler` shows a training micrograph, on average: its number of
    question groups (`questions_per_image` questions each, at most `groups_per_image` of them). `image_index` [P]
    maps the training pairs to their micrographs. The supervised baselines make as many passes an epoch."""
    pairs_per_image = np.unique(image_index.numpy(), return_counts=True)[1]
    groups = -(-pairs_per_image // questions_per_image)
    if groups_per_image is not None:
        groups = np.minimum(groups, groups_per_image)
    return float(groups.mean())


class ImageGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of QA-pair indices in which questions come in groups of `questions_per_image` per image.

    A batch of 48 with 4 questions per image encodes 12 images instead of 48 and still gives ITC twelve
    distinct images to contrast. With `groups_per_image`, an epoch takes only that many randomly chosen
    groups of each image (a different choice every epoch): more passes over the images for the same
    compute, which is what a small corpus needs to learn what the categories look like. Pairs flagged in
    `leading_pairs` (the category question) open their image's first group, so with `groups_per_image` they are
    asked every epoch instead of now and then. With `leading_pairs_twice` they also open the second group, as
    index `pair + len(image_index)`: `QACollator` asks that second copy without the caption and the first with it,
    so every epoch teaches both readings of the question (follow a given caption, name the category from the
    pixels) at the place of one other question. The order depends only on (seed, epoch), so a resumed run sees
    exactly the batches an uninterrupted one would.
    """

    def __init__(self, image_index: torch.Tensor, batch_size: int, questions_per_image: int, seed: int,
                 drop_last: bool = False, groups_per_image: int | None = None,
                 leading_pairs: torch.Tensor | None = None, leading_pairs_twice: bool = False):
        if leading_pairs_twice and leading_pairs is None:
            raise ValueError("leading_pairs_twice needs leading_pairs (the pairs to ask twice)")
        self.image_index = image_index.numpy()
        self.leading_pairs = None if leading_pairs is None else leading_pairs.numpy().astype(bool)
        self.leading_pairs_twice = leading_pairs_twice
        self.batch_size = batch_size
        self.questions_per_image = questions_per_image
        self.groups_per_image = groups_per_image
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _ordered_indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = np.argsort(self.image_index, kind="stable")
        boundaries = np.flatnonzero(np.diff(self.image_index[order])) + 1
        groups = []
        for pairs_of_one_image in np.split(order, boundaries):
            shuffled = rng.permutation(pairs_of_one_image)
            if self.leading_pairs is not None:
                shuffled = shuffled[np.argsort(~self.leading_pairs[shuffled], kind="stable")]
                if self.leading_pairs_twice and self.leading_pairs[shuffled[0]]:
                    second_copy = shuffled[0] + len(self.image_index)
                    shuffled = np.insert(shuffled, min(self.questions_per_image, len(shuffled)), second_copy)
            image_groups = np.split(shuffled, range(self.questions_per_image, len(shuffled), self.questions_per_image))
            groups.extend(image_groups[: self.groups_per_image])
        return np.concatenate([groups[i] for i in rng.permutation(len(groups))])

    def __iter__(self):
        indices = self._ordered_indices()
        stop = len(indices) - len(indices) % self.batch_size if self.drop_last else len(indices)
        for start in range(0, stop, self.batch_size):
            yield indices[start : start + self.batch_size].tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.samples_per_epoch, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    @property
    def samples_per_epoch(self) -> int:
        pairs_per_image = np.bincount(self.image_index)
        if self.leading_pairs_twice:
            pairs_per_image += np.bincount(self.image_index[self.leading_pairs], minlength=len(pairs_per_image)) > 0
        pairs_per_image = pairs_per_image[pairs_per_image > 0]
        if self.groups_per_image is None:
            return int(pairs_per_image.sum())
        # Groups are cut from the front of each image's shuffled pairs, so all kept groups are full ones.
        return int(np.minimum(pairs_per_image, self.groups_per_image * self.questions_per_image).sum())


class QACollator:
    """Indices -> model inputs. Each image appears once in `pixel_values`; `image_index` maps pairs to it.

    With `caption_drop_rate` > 0 the caption is removed from that share of prompts (decided per pair and
    epoch from the seed), so the model also answers without being told the category; the category question loses its
    caption at its own rate, `category_caption_drop_rate`. That question must be learnt both ways: with the caption
    its answer must name the category the caption states (the paper's VQA protocol), without it the decoder must name
    the category from the pixels. With `category_question_both_ways` (and a sampler that asks it twice) it is asked
    both ways every epoch instead: with the caption, and as its second copy without. Kept on every category prompt,
    the caption taught the decoder to copy it and never to look: without a caption the answer was the same for every
    micrograph (docs/training.md).
    `captions` = "always" | "never" | "drop" picks the prompt variant. When captions are dropped, ITC and ITM
    still read each pair with its caption (`pair_prompt_ids`): the caption describes the image whatever the
    question. Every batch also carries each pair's caption alone (`caption_ids`), which ITC contrasts with the
    images: classification ranks exactly those caption texts. With `category_question_every_view`, each batch also asks
    each of its micrographs its category question as an answer-only row (`lm_only_rows`, after the drawn pairs; the
    answer cut to `category_answer_tokens`). With `augmentation`, each image of a batch is varied
    (training only), reproducibly from (seed, epoch, batch order).
    """

    def __init__(self, table: QATable, pixel_store: PixelStore, captions: str = "always",
                 caption_drop_rate: float = 0.0, seed: int = 0, augmentation=None,
                 category_caption_drop_rate: float | None = None, category_question_both_ways: bool = False,
                 category_question_every_view: bool = False, category_answer_tokens: int | None = None):
        if captions not in ("always", "never", "drop"):
            raise ValueError(f"captions must be 'always', 'never' or 'drop', not {captions!r}")
        self.category_question_both_ways = category_question_both_ways
        self.category_pair_of_image = category_pair_of_image(table) if category_question_every_view else None
        self.category_answer_tokens = category_answer_tokens
        self.table = table
        self.pixel_store = pixel_store
        self.captions = captions
        self.caption_drop_rate = caption_drop_rate
        self.category_caption_drop_rate = (
            caption_drop_rate if category_caption_drop_rate is None else category_caption_drop_rate
        )
        self.seed = seed
        self.augmentation = augmentation
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        # The answer-only rows draw their captions from a stream of their own, so that the drawn pairs' augmented
        # views are the same with and without them (and the peer, which leaves them out, trains identically).
        self.answer_only_generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 500_009)

    def _caption_kept(self, indices: torch.Tensor) -> torch.Tensor:
        """Whether each of `indices` [B] keeps its caption. With `category_question_both_ways` the category question
        keeps it and its second copy (an index past the table, `ImageGroupedBatchSampler(leading_pairs_twice=True)`)
        goes without; otherwise each pair keeps it or not at its rate, drawn from (seed, epoch)."""
        if self.captions != "drop":
            return torch.full((len(indices),), self.captions == "always")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        drop_rate = torch.full((len(self.table),), self.caption_drop_rate)
        if self.table.asks_category is not None:
            both_ways = self.category_question_both_ways
            drop_rate[self.table.asks_category] = 0.0 if both_ways else self.category_caption_drop_rate
        kept = torch.rand(len(self.table), generator=generator) >= drop_rate
        return torch.where(indices >= len(self.table), False, kept[indices % len(self.table)])

    def __call__(self, batch_indices: Sequence[int]) -> dict[str, torch.Tensor]:
        indices = torch.as_tensor(batch_indices, dtype=torch.long)
        kept = self._caption_kept(indices).unsqueeze(1)
        indices = indices % len(self.table)  # the second copy of a category question is that question
        table = self.table
        input_ids = torch.where(kept, table.prompt_ids[indices], table.prompt_ids_no_caption[indices])
        attention_mask = torch.where(kept, table.prompt_mask[indices], table.prompt_mask_no_caption[indices])
        labels = table.labels[indices]
        batch_images, image_index = torch.unique(table.image_index[indices], return_inverse=True)
        input_ids, attention_mask = trim_to_longest(input_ids, attention_mask)
        pair_prompt = {}
        if self.captions == "drop":
            pair_ids, pair_mask = trim_to_longest(table.prompt_ids[indices], table.prompt_mask[indices])
            pair_prompt = {"pair_prompt_ids": pair_ids, "pair_prompt_mask": pair_mask}
        caption_ids, caption_mask = trim_to_longest(table.caption_ids[indices], table.caption_mask[indices])
        pixel_values = self.pixel_store.normalized(batch_images)
        if self.augmentation is not None:
            pixel_values = self.augmentation(pixel_values, generator=self.generator)
        lm_only = {}
        if self.category_pair_of_image is not None:
            input_ids, attention_mask, labels, image_index, lm_only = self._with_category_questions(
                indices, batch_images, input_ids, attention_mask, labels, image_index)
        return {
            **pair_prompt,
            **lm_only,
            "caption_ids": caption_ids,
            "caption_mask": caption_mask,
            "pixel_values": pixel_values,
            "image_index": image_index,
            "image_keys": table.image_index[indices],  # the pixel-store index is unique per micrograph
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels[:, : int((labels != -100).sum(1).max())],
        }

    def _with_category_questions(self, indices, batch_images, input_ids, attention_mask, labels, image_index):
        """Appends, for each micrograph of the batch, its category question as an answer-only row (`lm_only_rows`),
        unless the batch already asks it; each such row keeps the caption or not at `category_caption_drop_rate`,
        drawn per row and batch. Rows stay right-padded to the longest of all."""
        table = self.table
        rows = self.category_pair_of_image[batch_images]
        has_row = (rows >= 0) & ~torch.isin(rows, indices)
        rows, extra_images = rows[has_row], torch.arange(len(batch_images))[has_row]
        kept = (torch.rand(len(rows), generator=self.answer_only_generator) >= self.category_caption_drop_rate).unsqueeze(1)
        if self.captions != "drop":
            kept = torch.full_like(kept, self.captions == "always")
        extra_ids = torch.where(kept, table.prompt_ids[rows], table.prompt_ids_no_caption[rows])
        extra_mask = torch.where(kept, table.prompt_mask[rows], table.prompt_mask_no_caption[rows])
        width = max([input_ids.shape[1], *extra_mask.sum(1).tolist()])
        input_ids = torch.cat([pad_columns(input_ids, width, table.pad_token_id), extra_ids[:, :width]])
        attention_mask = torch.cat([pad_columns(attention_mask, width, 0), extra_mask[:, :width]])
        extra_labels = table.labels[rows]
        if self.category_answer_tokens is not None:
            extra_labels = extra_labels[:, : self.category_answer_tokens]
        labels = torch.cat([labels, pad_columns(extra_labels, labels.shape[1], -100)])
        image_index = torch.cat([image_index, extra_images])
        return input_ids, attention_mask, labels, image_index, {"lm_only_rows": len(rows)}


def category_pair_of_image(table: QATable) -> torch.Tensor:
    """Per pixel-store index, the row of the image's (first) category question in `table`, -1 where it has none."""
    none = len(table)
    rows = torch.full((int(table.image_index.max()) + 1,), none, dtype=torch.long)
    if table.asks_category is not None:
        category_rows = table.asks_category.nonzero().flatten()
        rows = rows.scatter_reduce(0, table.image_index[category_rows], category_rows, reduce="amin")
    return rows.masked_fill(rows == none, -1)


def trim_to_longest(token_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, L) ids and mask cut to the batch's longest text."""
    length = int(mask.sum(1).max())
    return token_ids[:, :length], mask[:, :length]


def index_loader(table: QATable, batch_sampler, collator: QACollator) -> torch.utils.data.DataLoader:
    """A DataLoader over row indices: collation does the work in the main process (no worker copies). Indices run to
    twice the table: those past it are second copies of category questions (`leading_pairs_twice`)."""
    return torch.utils.data.DataLoader(range(2 * len(table)), batch_sampler=batch_sampler, collate_fn=collator)


# ----------------------------------------------------------------------------------------------------------
# Folds
# ----------------------------------------------------------------------------------------------------------
@dataclass
class FoldData:
    """Everything one fold's runs need, tokenised and decoded once and shared by every variant."""

    train: QATable
    validation: QATable
    test: QATable
    pixel_store: PixelStore
    class_names: list[str]
    facts: dict[str, dict] | None = None


def prepare_fold(corpus: datasets.Dataset, fold: int, num_folds: int, processor, pixel_store: PixelStore,
                 facts: dict[str, dict] | None = None) -> FoldData:
    """Test on `fold`, validate on the next one, train on the rest."""
    validation_fold = (fold + 1) % num_folds
    splits = {
        "train": corpus.filter(lambda f: f not in (fold, validation_fold), input_columns="fold"),
        "validation": corpus.filter(lambda f: f == validation_fold, input_columns="fold"),
        "test": corpus.filter(lambda f: f == fold, input_columns="fold"),
    }
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"fold {fold}: the {name} split is empty; use fewer --num-folds or more data")
    tables = {name: tokenize_split(split, processor, pixel_store) for name, split in splits.items()}
    # The tables hold positions in the processor's categories, so those are the class names every score uses.
    class_names = list(processor.category_names)
    return FoldData(tables["train"], tables["validation"], tables["test"], pixel_store, class_names, facts)
