"""Supervised baselines of the paper's Table 2, trained on the same folds, pixels and schedule as MVaEMa."""

from instruct_tuning.baselines.registry import (
    BASELINES,
    Baseline,
    parameter_counts,
    parse_baselines,
    train_and_evaluate_baseline,
)
from instruct_tuning.baselines.training import BaselineSettings

__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineSettings",
    "parameter_counts",
    "parse_baselines",
    "train_and_evaluate_baseline",
]
