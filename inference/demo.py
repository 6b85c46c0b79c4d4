"""A web page for asking a saved MVaEMa about a micrograph (Gradio, the optional `demo` extra).

    mvaema-demo --model outputs/mvaema/model [--host 127.0.0.1] [--port 7860]

Drop a micrograph (JPEG, PNG, TIFF incl. 16-bit: decoded on the server with the package's image opener, not by the
browser), pick one of the ten question families' questions or type one, optionally give the category caption, and
read the answer, the caption it was asked after and the top-5 categories. Without a caption the question goes after
the caption of the category the model ranks first (self-captioning; a tick box turns it off). Scripts call the two
named endpoints with `gradio_client`: `/answer` (image, question, caption, self_caption) -> (answer, caption used)
and `/classify` (image) -> label confidences.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

from dataset_builder.images import IMAGE_SUFFIXES, BadImageError, open_micrograph
from dataset_builder.question_families import QUESTION_FAMILIES, caption_for_category, readable_category

from .assistant import MicrographAssistant
from .loading import ModelLoadError, ModelSource, add_model_arguments

# A 16-bit 4096 x 4096 TIFF is 32 MiB; anything much larger is not a micrograph the model needs (it sees 224 px).
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
# How long an upload stays on the server: long enough to ask several questions about it, then it is deleted.
UPLOAD_LIFETIME_S = 600
QUESTION_CHOICES = [(f"{family.title}: {question}", question) for family in QUESTION_FAMILIES
                    for question in family.questions]
TOP_K = 5


def import_gradio():
    """Gradio is an optional extra: a missing install is one clear line, not an ImportError traceback."""
    try:
        return importlib.import_module("gradio")
    except ImportError:
        raise SystemExit("error: the web demo needs Gradio; install it with: pip install 'mvaema[demo]'") from None


def softmax_top(scores: dict[str, float], top_k: int = TOP_K, temperature: float = 1.0) -> dict[str, float]:
    """The `top_k` categories with softmax confidences over all of `scores` / `temperature` (the model's scores:
    ITC similarity, ITM probability or LM log-likelihood per category), so that the bars compare and sum to at most
    one."""
    largest = max(scores.values())
    weights = {label: math.exp((score - largest) / temperature) for label, score in scores.items()}
    total = sum(weights.values())
    best = sorted(weights, key=weights.get, reverse=True)[:top_k]
    return {label: weights[label] / total for label in best}


class DemoHandlers:
    """What the page's events call; bad input raises `gr.Error`, which the page shows as a message."""

    def __init__(self, assistant: MicrographAssistant, gr):
        self.assistant, self.gr = assistant, gr

    def open_upload(self, image_path: str | None):
        if not image_path:
            raise self.gr.Error("Drop a micrograph first (JPEG, PNG, TIFF, ...).")
        try:
            return open_micrograph(image_path)
        except BadImageError as error:
            raise self.gr.Error(f"{Path(image_path).name}: {error.reason}. Upload a micrograph image.") from None

    def preview(self, image_path: str | None):
        """The decoded image as the model sees it; a bad upload only warns here (asking shows the error)."""
        if not image_path:
            return None
        try:
            return self.open_upload(image_path)
        except self.gr.Error as error:
            self.gr.Warning(str(error))
            return None

    def answer(self, image_path: str | None, question: str | None, caption: str | None = None,
               self_caption: bool = True) -> tuple[str, str]:
        """(answer, the caption it was asked after: the one given, the model's own top category's, or none)."""
        image = self.open_upload(image_path)
        if not question or not question.strip():
            raise self.gr.Error("Pick a question from the list or type one.")
        caption = caption.strip() if caption and caption.strip() else None
        shown = caption or "(none)"
        if caption is None and self_caption and self.assistant.can_self_caption:
            caption = self.assistant.own_captions(self.assistant.rank_categories([image]))[0]
            shown = f"{caption} (the model's top category)"
        return self.assistant.answer([image], [question.strip()], [caption])[0], shown

    def classify(self, image_path: str | None) -> dict[str, float]:
        image = self.open_upload(image_path)
        ranking = self.assistant.rank_categories([image], top_k=len(self.assistant.category_names) or TOP_K)
        if ranking is None:
            raise self.gr.Error("This model was saved without categories, so it cannot rank them.")
        return softmax_top({entry["label"]: entry["score"] for entry in ranking[0]}, temperature=self.score_temperature())

    def score_temperature(self) -> float:
        """ITC scores are cosines in [-1, 1]; the model compares them at its learnt temperature (as the zero-shot
        pipeline's `logits_per_image` do), so the bars do too instead of showing ten near-equal confidences."""
        model = self.assistant.model
        if (self.assistant.processor.classification_method or "lm") == "itc" and hasattr(model, "mvaema"):
            return float(model.mvaema.clamped_temperature().detach())
        return 1.0


def build_demo(assistant: MicrographAssistant, upload_lifetime_s: int = UPLOAD_LIFETIME_S):
    """The Gradio page; its `Ask` button calls the named endpoints `/answer` and `/classify`. Uploads are deleted
    from the server `upload_lifetime_s` seconds after they arrived (checked as often)."""
    gr = import_gradio()
    handlers = DemoHandlers(assistant, gr)
    captions = [(readable_category(name), caption_for_category(name)) for name in assistant.category_names]
    with gr.Blocks(title="MVaEMa: ask about a micrograph",
                   delete_cache=(upload_lifetime_s, upload_lifetime_s)) as demo:
        gr.Markdown("# MVaEMa\nDrop a micrograph, pick or type a question, and read the answer.")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="Micrograph (JPEG, PNG, TIFF incl. 16-bit, ...)", type="filepath",
                                 file_types=sorted(IMAGE_SUFFIXES), elem_id="micrograph")
                preview = gr.Image(label="As the model sees it", interactive=False, type="pil", height=320)
            with gr.Column():
                question = gr.Dropdown(QUESTION_CHOICES, value=QUESTION_CHOICES[0][1], allow_custom_value=True,
                                       label="Question (pick one or type your own)", elem_id="question")
                caption = gr.Dropdown(captions, value=None, allow_custom_value=True,
                                      label="Category caption (optional)", elem_id="caption")
                self_caption = gr.Checkbox(value=True, elem_id="self-caption",
                                           label="Without a caption, ask after the model's own top category's")
                ask = gr.Button("Ask", variant="primary", elem_id="ask")
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                caption_used = gr.Textbox(label="Asked after the caption", interactive=False, elem_id="caption-used")
                categories = gr.Label(num_top_classes=TOP_K, label="Top-5 categories", elem_id="categories")
        upload.upload(handlers.preview, upload, preview, api_visibility="private")
        ask.click(handlers.answer, [upload, question, caption, self_caption], [answer, caption_used],
                  api_name="answer")
        ask.click(handlers.classify, [upload], categories, api_name="classify")
    return demo


def launch_demo(demo, host: str, port: int, **options) -> None:
    """Serve `demo`; Gradio refuses an upload over `MAX_UPLOAD_BYTES` before storing it."""
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, **options)


def upload_folder() -> str:
    """Where Gradio stores uploads (`GRADIO_TEMP_DIR`, else the system's temporary folder)."""
    return import_gradio().utils.get_upload_folder()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (0.0.0.0: every interface).")
    parser.add_argument("--port", type=int, default=7860)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import_gradio()  # before the model loads, so a missing extra fails fast
    try:
        assistant = MicrographAssistant.load(ModelSource(args.model, args.trust_remote_code, args.revision))
    except ModelLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    launch_demo(build_demo(assistant), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
