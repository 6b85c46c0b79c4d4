"""Tiny, deterministic MVaEMa building blocks for the model, processor and Hub tests (hidden 32, 2 layers, 32 px)."""

from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering, MVaEMaProcessor, train_wordpiece_tokenizer

QUESTIONS = [
    "What does the micrograph show?",
    "Describe the surface texture.",
    "Which material category is this?",
    "How large are the features?",
]
ANSWERS = [
    "The image shows nanowires on silicon.",
    "A porous film with round pores.",
    "Dispersed particles of similar size.",
    "Features are about 10 µm wide.",
]
CAPTIONS = [None, "SEM micrograph", None, None]
CORPUS = QUESTIONS + ANSWERS + ["A scanning electron micrograph (SEM) of a high-aspect-ratio MEMS device."]
IMAGE_SIZE = 32


@lru_cache(maxsize=1)
def tiny_tokenizer():
    return train_wordpiece_tokenizer(CORPUS * 3, vocab_size=300, min_frequency=2)


def tiny_processor() -> MVaEMaProcessor:
    return MVaEMaProcessor.from_tokenizer(tiny_tokenizer(), image_size=IMAGE_SIZE)


def tiny_config(ablation: str | None = None, **overrides) -> MVaEMaConfig:
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    # A wider initialisation than the default 0.1 gives an untrained model decisive (tie-free) next-token scores.
    return MVaEMaConfig.from_tokenizer(
        tiny_tokenizer(),
        ablation,
        vision_config=dict(tower, image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.2),
        text_config=dict(tower, max_position_embeddings=64, initializer_range=0.2),
        **overrides,
    )


def tiny_model(ablation: str | None = None, seed: int = 0, **overrides) -> MVaEMaForQuestionAnswering:
    torch.manual_seed(seed)
    return MVaEMaForQuestionAnswering(tiny_config(ablation, **overrides))


def micrographs(count: int, seed: int = 0) -> list[Image.Image]:
    """Distinct synthetic RGB images: stripes of different period and orientation plus noise."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:48, 0:64]
    images = []
    for index in range(count):
        angle = np.pi * index / max(count, 1)
        stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) / (2 + index))
        grey = (127 + 100 * stripes + rng.normal(0, 10, stripes.shape)).clip(0, 255).astype(np.uint8)
        images.append(Image.fromarray(np.stack([grey, np.roll(grey, index, axis=1), grey[::-1]], axis=-1)))
    return images


def qa_batch(processor: MVaEMaProcessor, image_index: list[int] | None = None, answers: bool = True):
    """The four QA pairs; with `image_index`, several questions share an image."""
    num_images = 4 if image_index is None else max(image_index) + 1
    return processor(
        images=micrographs(num_images),
        questions=QUESTIONS,
        captions=CAPTIONS,
        answers=ANSWERS if answers else None,
        image_index=image_index,
    )
