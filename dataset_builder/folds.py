"""Leak-free cross-validation folds: near-duplicate clusters, then stratified group folds over them.

~12% of the SEM images are near-duplicates (re-saved, resized or cropped copies); a copy in the test fold of
its original would be a leak, so near-duplicates are joined into one group that no fold boundary splits.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold


def near_duplicate_clusters(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Cluster id per 64-bit hash: connected components of the graph "Hamming distance <= max_distance".

    `hashes`: (num_images,) uint64. Returns (num_images,) int. All pairs, vectorised in row blocks of at most
    2**24 XORs (128 MiB): 21k images take about a second.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    count = len(hashes)
    block = max(1, (1 << 24) // max(count, 1))
    rows, cols = [], []
    for start in range(0, count, block):
        distances = np.bitwise_count(hashes[start : start + block, None] ^ hashes[None, start:])
        row, col = np.nonzero(distances <= max_distance)
        later = col > row  # both are offsets from `start`: keep each pair once, no self-pairs
        rows.append(row[later] + start)
        cols.append(col[later] + start)
    rows, cols = np.concatenate(rows or [[]]).astype(np.int64), np.concatenate(cols or [[]]).astype(np.int64)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def stratified_group_folds(
    labels: np.ndarray, groups: np.ndarray, num_folds: int, seed: int, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Fold index per sample, stratified by `labels`, never splitting a group.

    `labels`, `groups`: (num_samples,) int. Returns (num_samples,) int32. A class with fewer groups than folds
    is not an error: its groups go to as many folds as it has groups, and the other folds have no test sample of
    that class (the caller reports such classes). A corpus that cannot fill `num_folds` folds at all (fewer
    groups than folds, or every class smaller than the fold count) stops with a ValueError naming the classes
    (`class_names[label]`), their sizes and the largest fold count that works; it never falls back silently,
    because the fold count decides what every reported cross-validation number means.
    """
    check_fold_count(labels, groups, num_folds, class_names)
    splitter = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    folds = np.empty(len(labels), dtype=np.int32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, test_indices) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[test_indices] = fold
    return folds


def check_fold_count(
    labels: np.ndarray, groups: np.ndarray, num_folds: int, class_names: Sequence[str] | None = None
) -> None:
    """Raise a ValueError naming the fix when `StratifiedGroupKFold(num_folds)` cannot split these samples."""
    num_groups = len(np.unique(groups))
    label_values, class_sizes = np.unique(labels, return_counts=True)
    largest_working = min(num_groups, int(class_sizes.max(initial=0)))
    if num_groups < num_folds:
        raise ValueError(
            f"{num_groups} image groups (images after joining near-duplicates) cannot fill {num_folds} folds: "
            f"add images or lower num_folds (--num-folds) to at most {num_groups}."
        )
    if (class_sizes < num_folds).all():
        sizes = ", ".join(
            f"{class_names[label] if class_names is not None else label}: {size}"
            for label, size in zip(label_values, class_sizes, strict=True)
        )
        fix = (
            f"lower num_folds (--num-folds) to at most {largest_working}"
            if largest_working >= 2
            else "add images (cross-validation needs at least 2 folds)"
        )
        raise ValueError(
            f"Every category has fewer images than the {num_folds} folds asked for ({sizes}): {fix}, "
            "or add images to the categories."
        )
