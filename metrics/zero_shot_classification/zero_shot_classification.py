"""Zero-shot image classification metrics (MVaEMa paper Tables 2, 4 and 6): top-k accuracy,
per-class precision, recall and F1, their macro averages, and the confusion matrix."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

_CITATION = """\
@article{pedregosa2011scikit,
  title={Scikit-learn: Machine Learning in Python},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""

_DESCRIPTION = """\
Scores a zero-shot classifier that ranks every class for each image (MVaEMa's `classify` ranks the
label prompts by ITC, ITM or LM score). Top-k accuracy counts an image as correct when its true
class is among its k best-ranked classes; precision, recall, F1, support and the confusion matrix
use the best-ranked class (scikit-learn's `precision_recall_fscore_support` and `confusion_matrix`
over all classes, so a class absent from the data keeps its row and column; undefined values are 0).
Macro averages are taken over the classes that occur in the references or the top-1 predictions
(scikit-learn's own default class set): a class that never occurs and is never predicted has no
defined precision or recall and does not pull the average down.

Two input formats, chosen by the config name:
- "default": `predictions` are score rows, one float per class (higher is better), e.g. the
  `[N, C]` scores of `MVaEMaForQuestionAnswering.classify`; ties rank the lower class id first.
- "ranked": `predictions` are class ids, best first (at least min(max(top_k), C) distinct ids each).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: `list[list[float]]` of C scores per image (config "default"), or
        `list[list[int]]` of class ids ranked best first (config "ranked").
    references (`list[int]`): the true class id of each image.
    label_names (`list[str]`): the C class names; class id i is `label_names[i]`.
    top_k (`tuple[int, ...]`, defaults to `(1, 5)`): the k of each reported top-k accuracy.

Returns:
    `top{k}_accuracy` (`float`): for each k in `top_k`.
    `macro_precision`, `macro_recall`, `macro_f1` (`float`).
    `per_class` (`dict[str, dict]`): `{name: {"precision", "recall", "f1", "support"}}`.
    `confusion_matrix` (`list[list[int]]`): C x C counts, rows true classes, columns predicted.
    `label_names` (`list[str]`): the row and column order of the confusion matrix.

Examples:
    >>> import evaluate
    >>> metric = evaluate.load("metrics/zero_shot_classification")
    >>> results = metric.compute(
    ...     predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[1, 2], label_names=["Films", "MEMS", "Tips"]
    ... )
    >>> results["top1_accuracy"], results["top5_accuracy"]
    (0.5, 1.0)
"""

PREDICTION_FEATURES = {
    "default": datasets.List(datasets.Value("float64")),
    "ranked": datasets.List(datasets.Value("int64")),
}


def check_label_names(label_names) -> list[str]:
    label_names = [] if label_names is None else list(label_names)
    if not label_names:
        raise ValueError("metrics/zero_shot_classification: pass label_names=[...], one name per class id.")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"metrics/zero_shot_classification: label_names repeat a name: {label_names}")
    return label_names


def rank_by_score(score_rows: list[list[float]], num_classes: int) -> np.ndarray:
    wrong_length = [index for index, row in enumerate(score_rows) if len(row) != num_classes]
    if wrong_length:
        raise ValueError(
            f"metrics/zero_shot_classification: predictions {wrong_length[:10]} do not hold one score per "
            f"label name ({num_classes}); with ranked class ids instead, load the 'ranked' config."
        )
    scores = np.asarray(score_rows, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("metrics/zero_shot_classification: predictions hold NaN or infinite scores.")
    return np.argsort(-scores, axis=1, kind="stable")


def check_rankings(rankings: list[list[int]], num_classes: int, depth: int) -> list[list[int]]:
    for index, ranking in enumerate(rankings):
        if len(ranking) < depth or len(set(ranking)) != len(ranking) or not all(0 <= c < num_classes for c in ranking):
            raise ValueError(
                f"metrics/zero_shot_classification: prediction {index} ({ranking}) must hold at least {depth} "
                f"distinct class ids in [0, {num_classes}), best first (score rows go to the 'default' config)."
            )
    return rankings


def top_k_accuracy(rankings, references: np.ndarray, k: int) -> float:
    return float(np.mean([reference in ranking[:k] for reference, ranking in zip(references, rankings)]))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ZeroShotClassification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        if self.config_name not in PREDICTION_FEATURES:
            raise ValueError(
                f"metrics/zero_shot_classification: unknown config {self.config_name!r}; use 'default' for "
                "score rows or 'ranked' for ranked class ids."
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": PREDICTION_FEATURES[self.config_name], "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html"],
        )

    def _compute(self, predictions, references, label_names=None, top_k=(1, 5)) -> dict:
        label_names = check_label_names(label_names)
        num_classes = len(label_names)
        if not all(isinstance(k, (int, np.integer)) and k > 0 for k in top_k):
            raise ValueError(f"metrics/zero_shot_classification: top_k must be positive integers, got {top_k}")
        references = np.asarray(references, dtype=np.int64)
        if references.size == 0 or references.min() < 0 or references.max() >= num_classes:
            raise ValueError(
                f"metrics/zero_shot_classification: references must be class ids in [0, {num_classes}), one per image."
            )
        if self.config_name == "ranked":
            rankings = check_rankings(predictions, num_classes, depth=min(max(top_k), num_classes))
        else:
            rankings = rank_by_score(predictions, num_classes)
        top1 = np.array([ranking[0] for ranking in rankings], dtype=np.int64)

        class_ids = np.arange(num_classes)
        precision, recall, f1, support = precision_recall_fscore_support(
            references, top1, labels=class_ids, zero_division=0
        )
        occurring = np.union1d(references, top1)
        return {
            **{f"top{k}_accuracy": top_k_accuracy(rankings, references, k) for k in top_k},
            "macro_precision": float(precision[occurring].mean()),
            "macro_recall": float(recall[occurring].mean()),
            "macro_f1": float(f1[occurring].mean()),
            "per_class": {
                name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
            },
            "confusion_matrix": confusion_matrix(references, top1, labels=class_ids).tolist(),
            "label_names": label_names,
        }
