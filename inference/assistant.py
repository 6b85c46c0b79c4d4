"""One loaded MVaEMa answering questions about micrographs and ranking their categories: what the command line and
the web demo share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from .loading import ModelSource, load_model_and_processor

TOP_K = 5


class MicrographAssistant:
    """A model and its processor, on the GPU when there is one."""

    def __init__(self, model, processor, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor

    @classmethod
    def load(cls, source: ModelSource, device: str | None = None) -> "MicrographAssistant":
        return cls(*load_model_and_processor(source), device=device)

    @property
    def category_names(self) -> list[str]:
        """The categories the saved processor ranks (empty when it was saved without them)."""
        return list(getattr(self.processor, "category_names", None) or [])

    @torch.no_grad()
    def answer(
        self,
        images: Sequence[Image.Image],
        questions: Sequence[str],
        captions: Sequence[str | None] | None = None,
        image_index: Sequence[int] | None = None,
        num_beams: int = 1,
    ) -> list[str]:
        """One answer per question; with `image_index`, question i is about `images[image_index[i]]` (each image
        is then encoded once), else question i is about `images[i]`. `captions[i]` (or None) goes before question i
        as given: the assistant's callers caption with `own_captions` themselves, so that the caption used is the
        one they show."""
        inputs = self.processor(
            images=list(images),
            questions=list(questions),
            captions=list(captions) if captions is not None else None,
            image_index=list(image_index) if image_index is not None else None,
            return_tensors="pt",
            self_caption=False,
        )
        inputs = {name: tensor.to(self.device) for name, tensor in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        answer_ids = self.model.generate(**inputs, num_beams=num_beams)
        return self.processor.batch_decode(answer_ids, skip_special_tokens=True)

    @property
    def can_self_caption(self) -> bool:
        """Whether the saved processor has a caption per category to put before a question."""
        captions = getattr(self.processor, "category_captions", None) or []
        return bool(self.category_names) and len(captions) == len(self.category_names)

    def own_captions(self, rankings: Sequence[list[dict]]) -> list[str]:
        """Per image, the caption of the category its ranking puts first: the model's own caption, which
        self-captioning puts before the questions (so the answer to the category question and the ranking agree)."""
        position = {name: index for index, name in enumerate(self.category_names)}
        return [self.processor.category_captions[position[ranking[0]["label"]]] for ranking in rankings]

    def rank_categories(
        self, images: Sequence[Image.Image], method: str | None = None, top_k: int = TOP_K
    ) -> list[list[dict]] | None:
        """Per image the `top_k` best `{"label", "score"}`, best first; None when the processor has no categories."""
        if not self.category_names:
            return None
        with torch.no_grad():
            return self.processor.rank_categories(self.model, images=list(images), method=method, top_k=top_k)
