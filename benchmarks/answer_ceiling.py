"""How much BLEU-2 can the image add at all? A ceiling from the teacher's own answers, no model involved.

On a corpus whose answers are written per category (the built-in synthetic one), a model that reads only the
category from the micrograph can at best give, for each question, the one answer that scores highest against that
category's references; a model that reads nothing from the image (a blank image) can at best give the one answer
that scores highest against every category's. The gap between the two is what knowing the category can add to
BLEU-2; a model that names the category with accuracy `a` and guesses another otherwise gets about
`a * known + (1 - a) * wrong`. Facts beyond the category (sizes, counts, the data bar) can add more, but a student of
this size states them poorly (the grounded fact scores), so this gap is what "the image adds" is bounded by in
practice.

The corpus is read through the package's `datasets` builder (`load_instruct_corpus`), so its QA pairs are those
training sees (superseded teacher records, duplicates and failed answers left out). Each question's best answer is
searched among `--candidates` of its answers (the medoid under BLEU-2 against `--pool` references), per category and
over all; every reference answer of a sampled micrograph is then scored against them with the package's BLEU-2
(`metrics/vqa_text`), lowercased as the evaluation's answers are.

    python -m benchmarks.answer_ceiling                     # the built-in corpus of the main job
    python -m benchmarks.answer_ceiling --corpus data/synthetic-100-per-category --target 0.10
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from dataset_builder.builder import load_instruct_corpus
from dataset_builder.synthetic import CACHE_FILE_NAME, IMAGES_DIR_NAME
from metrics.vqa_text.vqa_text import bleu


def answers_by_question(rows: Iterable[dict]) -> dict[str, list[tuple[str, list[str]]]]:
    """question -> [(category, lowercased answer tokens)] of QA rows with `question`, `answer` and `category`."""
    by_question = defaultdict(list)
    for row in rows:
        by_question[row["question"]].append((row["category"], row["answer"].lower().split()))
    return by_question


def best_single_answer(candidates: list[list[str]], references: list[list[str]]) -> list[str]:
    """The candidate with the highest mean BLEU-2 against `references`."""
    return max(candidates, key=lambda candidate: sum(bleu([ref], candidate, 2) for ref in references))


def answer_ceiling(rows: Iterable[dict], candidates: int = 15, pool: int = 40, sample: int = 40, seed: int = 0) -> dict:
    """Mean BLEU-2 of the sampled reference answers against each question's best single answer of their own
    category (`known`), of another category (`wrong`) and over all categories (`blank`)."""
    rng = random.Random(seed)
    known = wrong = blank = count = 0.0
    for _question, items in sorted(answers_by_question(rows).items()):
        by_category = defaultdict(list)
        for category, answer in items:
            by_category[category].append(answer)
        pools = {category: rng.sample(answers, min(pool, len(answers))) for category, answers in by_category.items()}
        per_category = {category: best_single_answer(refs[:candidates], refs) for category, refs in pools.items()}
        everything = [answer for refs in pools.values() for answer in refs]
        overall = best_single_answer(rng.sample(everything, min(3 * candidates, len(everything))), everything)
        categories = sorted(by_category)
        for category, answer in rng.sample(items, min(sample, len(items))):
            other = rng.choice([c for c in categories if c != category])
            known += bleu([answer], per_category[category], 2)
            wrong += bleu([answer], per_category[other], 2)
            blank += bleu([answer], overall, 2)
            count += 1
    return {"answers": int(count), "known": known / count, "wrong": wrong / count, "blank": blank / count}


def accuracy_needed(ceiling: dict, target: float) -> float:
    """The category accuracy `a` at which `a * known + (1 - a) * wrong - blank` reaches `target` (> 1: never)."""
    spread = ceiling["known"] - ceiling["wrong"]
    return (target + ceiling["blank"] - ceiling["wrong"]) / spread if spread > 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("data/synthetic-100-per-category"))
    parser.add_argument("--candidates", type=int, default=15, help="answers tried as each question's best, per category")
    parser.add_argument("--pool", type=int, default=40, help="references the best answer is chosen against, per category")
    parser.add_argument("--sample", type=int, default=40, help="answers scored per question")
    parser.add_argument("--target", type=float, default=0.10, help="BLEU-2 the image should add; prints the accuracy it needs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (args.corpus / CACHE_FILE_NAME).is_file():
        sys.exit(f"{args.corpus / CACHE_FILE_NAME}: not found (run `make main` once to generate the built-in corpus)")
    with tempfile.TemporaryDirectory() as cache_dir:
        corpus = load_instruct_corpus(args.corpus / IMAGES_DIR_NAME, [str(args.corpus / CACHE_FILE_NAME)], cache_dir=cache_dir)
        rows = corpus.select_columns(["question", "answer", "category"]).to_list()
    ceiling = answer_ceiling(rows, args.candidates, args.pool, args.sample, args.seed)
    known, wrong, blank = ceiling["known"], ceiling["wrong"], ceiling["blank"]
    print(f"{args.corpus}: {ceiling['answers']} answers scored")
    print(f"BLEU-2, the best answer knowing the category:          {known:.3f}")
    print(f"BLEU-2, the best answer of another category:           {wrong:.3f}")
    print(f"BLEU-2, the best answer knowing nothing (blank floor): {blank:.3f}")
    print(f"what knowing the category adds at most:                {known - blank:+.3f}")
    for accuracy in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        print(f"  category named with accuracy {accuracy:.1f}: adds {accuracy * known + (1 - accuracy) * wrong - blank:+.3f}")
    needed = accuracy_needed(ceiling, args.target)
    print(f"accuracy needed for the image to add {args.target:+.2f}: {needed:.2f}"
          + ("  (more than the category can give)" if needed > 1 else ""))


if __name__ == "__main__":
    main()
