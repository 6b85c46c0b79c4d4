r"""Ask a saved MVaEMa about micrographs: one image and one question, or question families for a whole folder.

    mvaema-predict --model outputs/mvaema/model --image micrograph.tif \
        --question "Describe the overall shape and morphology of the nanomaterials."
    mvaema-predict --model outputs/mvaema/model --images data/SEM --out predictions.jsonl \
        --families basics morphology_and_structure

The model loads with the installed MVaEMa classes; Python files shipped with a model run only with
--trust-remote-code (and, for a Hub id, --revision <commit sha>).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dataset_builder.images import BadImageError, open_micrograph
from dataset_builder.question_families import FAMILIES_BY_KEY, family_by_key

from .assistant import MicrographAssistant
from .batch_prediction import check_output_path, load_json, predict_folder
from .loading import ModelLoadError, ModelSource, add_model_arguments

DEFAULT_QUESTION = "Describe the overall shape and morphology of the nanomaterials."
DEFAULT_FAMILIES = ("basics", "morphology_and_structure", "surface_characteristics")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive whole number")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--image", help="One micrograph file (JPEG, PNG, TIFF incl. 16-bit, ...).")
    target.add_argument("--images", help="A folder tree of micrographs (category sub-folders or not).")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="With --image: the question.")
    parser.add_argument("--caption", default=None, help="With --image: optional caption, e.g. the known category.")
    parser.add_argument("--no-self-caption", dest="self_caption", action="store_false",
                        help="Ask the bare questions. By default a question asked without --caption goes after the "
                             "caption of the category the model ranks first (shown with the answer and recorded in "
                             "the JSONL): the model was trained to answer after a caption, and its answer to the "
                             "category question then agrees with its ranking.")
    parser.add_argument("--out", help="With --images: the JSONL output file (a rerun skips images already in it).")
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES), metavar="FAMILY",
                        help=f"With --images: question families to answer (default: {' '.join(DEFAULT_FAMILIES)}; "
                             f"known: {' '.join(FAMILIES_BY_KEY)}).")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="With --images: images per batch.")
    parser.add_argument("--method", default=None, choices=["itc", "itm", "lm"],
                        help="Classification method (default: the one selected on validation data at training time).")
    parser.add_argument("--num-beams", type=positive_int, default=1)
    parser.add_argument("--json", action="store_true", help="With --image: print one JSON object instead of text.")
    args = parser.parse_args(argv)
    if args.images is not None and args.out is None:
        parser.error("--images needs --out FILE.jsonl (where the predictions go)")
    unknown = [key for key in args.families if key not in FAMILIES_BY_KEY]
    if unknown:
        parser.error(f"--families {' '.join(unknown)}: unknown; choose from {' '.join(FAMILIES_BY_KEY)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    source = ModelSource(args.model, trust_remote_code=args.trust_remote_code, revision=args.revision)
    try:
        if args.images is not None:
            check_output_path(args.out, args.images)  # before the model loads: a wrong --out fails at once
        image = open_micrograph(args.image) if args.image is not None else None
        check_model_json_files(source)
        assistant = MicrographAssistant.load(source)
        if image is not None:
            return predict_one(assistant, image, args)
        families = [family_by_key(key) for key in dict.fromkeys(args.families)]
        counts = predict_folder(assistant, args.images, args.out, families, args.batch_size, args.num_beams,
                                args.method, args.self_caption)
    except (BadImageError, ModelLoadError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.out}: {counts['predicted']} images predicted, {counts['bad_files']} bad files named and skipped, "
          f"{counts['already_done']} already there (of {counts['found']} found)", file=sys.stderr)
    return 0


def check_model_json_files(source: ModelSource) -> None:
    """Raise `ModelLoadError` naming a JSON file of a local model folder that does not parse: transformers and
    tokenizers report one without its name ("expected `,` or `}`"), or with a traceback."""
    if not source.is_local:
        return
    for path in sorted(Path(source.name_or_path).expanduser().glob("*.json")):
        try:
            load_json(path.read_bytes())
        except ValueError as error:
            raise ModelLoadError(f"--model {source.name_or_path}: {path.name} is not valid JSON ({error}); restore "
                                 "it from the model's original files") from None


def predict_one(assistant: MicrographAssistant, image, args: argparse.Namespace) -> int:
    rankings = assistant.rank_categories([image], method=args.method)
    ranking = rankings[0] if rankings is not None else None
    caption, caption_source = args.caption, "given" if args.caption is not None else None
    if caption is None and args.self_caption and assistant.can_self_caption:
        caption, caption_source = assistant.own_captions(rankings)[0], "own ranking"
    answer = assistant.answer([image], [args.question], [caption], num_beams=args.num_beams)[0]
    if args.json:
        print(json.dumps({"answer": answer, "caption": caption, "caption_source": caption_source,
                          "categories": ranking}))
        return 0
    if caption is not None:
        print(f"Caption ({'the model' + chr(39) + 's top category' if caption_source == 'own ranking' else 'given'}): "
              f"{caption}")
    print(f"Q: {args.question}\nA: {answer}")
    if ranking is not None:
        print("\nTop-5 categories:")
        for entry in ranking:
            print(f"  {entry['score']:8.3f}  {entry['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
