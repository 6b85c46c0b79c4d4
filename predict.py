"""Ask a saved MVaEMa about one micrograph: its answer to a question, and its top-5 categories.

    python predict.py --model outputs/mvaema/model --image micrograph.jpg \
        --question "Describe the overall shape and morphology of the nanomaterials."

Only transformers and the saved folder (or a Hub id) are needed: the model code travels with the weights.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoModel, AutoProcessor

CLASSIFICATION_QUESTION = "Identify the specific type of nanomaterial depicted in the image."


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Saved model folder or Hub repo id.")
    parser.add_argument("--image", required=True, help="Micrograph file (JPEG, PNG, TIFF, ...).")
    parser.add_argument("--question", default="Describe the overall shape and morphology of the nanomaterials.")
    parser.add_argument("--caption", default=None, help="Optional caption, e.g. the known category.")
    parser.add_argument("--method", default=None, choices=["itc", "itm", "lm"],
                        help="Classification method (default: the one selected on validation data at training time).")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        image = Image.open(args.image)
        image.load()
    except (OSError, UnidentifiedImageError) as error:
        print(f"error: {args.image}: cannot read the image ({error})", file=sys.stderr)
        return 2
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)

    inputs = processor(images=[image], questions=[args.question], captions=[args.caption], return_tensors="pt")
    with torch.no_grad():
        answer_ids = model.generate(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                                    attention_mask=inputs["attention_mask"], num_beams=args.num_beams)
        ranking = processor.rank_categories(model, images=[image], method=args.method, top_k=5)[0]
    answer = processor.batch_decode(answer_ids, skip_special_tokens=True)[0]

    if args.json:
        print(json.dumps({"answer": answer, "categories": ranking}))
    else:
        print(f"Q: {args.question}\nA: {answer}\n\nTop-5 categories:")
        for entry in ranking:
            print(f"  {entry['score']:8.3f}  {entry['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
