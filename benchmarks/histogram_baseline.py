"""Can global grey-level statistics tell the synthetic categories apart? They should not (paper, Figure 2b).

Generates a synthetic corpus (or reads one), then fits scikit-learn's LogisticRegression with stratified
5-fold cross-validation on three feature sets:

- 64-bin grey-level histogram of the whole image (data bar included, as a classifier would see it);
- the same histogram with the bottom rows cropped (no data bar, so no data-bar-share shortcut);
- for contrast, cheap structure features (gradient-orientation histograms at two scales and a radial power
  spectrum) that do see shapes and scales.

The generator is tuned so that the histograms stay far from perfect (target < 0.6 accuracy for ten classes)
while structure is informative. Also reports the generator's speed on this machine.

    python benchmarks/histogram_baseline.py --per-category 60 --seed 0
    python benchmarks/histogram_baseline.py --corpus /path/to/corpus   # DIR holding images/<Category>/*.jpg
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dataset_builder.images import is_image_file, open_micrograph
from dataset_builder.synthetic import IMAGES_DIR_NAME, generate_synthetic_corpus

DATA_BAR_FREE_ROWS = 660  # the data bar starts at row 664 or lower in synthetic (and most real) images


def grey_histogram(grey: np.ndarray, bins: int = 64) -> np.ndarray:
    return np.histogram(grey, bins=bins, range=(0, 256))[0] / grey.size


def structure_features(grey: np.ndarray) -> np.ndarray:
    """Orientation histograms of gradients (two scales) and a radial log power spectrum of the specimen area."""
    specimen = Image.fromarray(grey[:DATA_BAR_FREE_ROWS])
    features = []
    for size in ((256, 165), (128, 83)):
        values = np.asarray(specimen.resize(size, Image.BILINEAR), np.float32) / 255
        gy, gx = np.gradient(values)
        magnitude = np.hypot(gx, gy)
        orientation = np.mod(np.arctan2(gy, gx), np.pi)
        histogram = np.histogram(orientation, bins=12, range=(0, np.pi), weights=magnitude)[0]
        features += [histogram / (histogram.sum() + 1e-9), [magnitude.mean(), (magnitude > 0.1).mean()]]
    values = np.asarray(specimen.resize((256, 165), Image.BILINEAR), np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(values - values.mean()))) ** 2
    rows, cols = np.indices(spectrum.shape)
    radius = np.hypot(rows - spectrum.shape[0] / 2, cols - spectrum.shape[1] / 2)
    bins = np.minimum((radius / radius.max() * 16).astype(int), 15)
    radial = np.bincount(bins.ravel(), spectrum.ravel(), 16) / np.maximum(np.bincount(bins.ravel(), minlength=16), 1)
    features.append(np.log1p(radial / (radial.sum() + 1e-9) * 1e3))
    return np.concatenate([np.asarray(part, np.float64).ravel() for part in features])


def load_corpus(image_root: Path) -> tuple[list[str], list[np.ndarray]]:
    labels, images = [], []
    for category_dir in sorted(path for path in image_root.iterdir() if path.is_dir()):
        for path in sorted(filter(is_image_file, category_dir.iterdir())):
            labels.append(category_dir.name)
            images.append(np.asarray(open_micrograph(path).convert("L")))
    if len(set(labels)) < 2:
        raise SystemExit(f"{image_root}: need images of at least two categories in <Category>/ sub-folders")
    return labels, images


def cross_validated_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float]:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_score(model, features, labels, cv=folds)
    return float(scores.mean()), float(scores.std())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="existing corpus directory (holding images/) or image root")
    parser.add_argument("--per-category", type=int, default=60, help="images per category to generate (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mvaema-synth-") as scratch:
        if args.corpus:
            image_root = args.corpus / IMAGES_DIR_NAME if (args.corpus / IMAGES_DIR_NAME).is_dir() else args.corpus
        else:
            corpus = generate_synthetic_corpus(scratch, args.per_category, args.seed, workers=args.workers)
            image_root = corpus.image_root
            print(
                f"generated {corpus.images_written} images in {corpus.elapsed_seconds:.1f} s: "
                f"{corpus.images_per_second:.1f} images/s with {args.workers} worker(s), "
                "JPEG writing and teacher answers included"
            )
        labels, images = load_corpus(image_root)

    labels = np.array(labels)
    classes = sorted(set(labels))
    feature_sets = {
        "grey-level histogram, whole image": np.stack([grey_histogram(grey) for grey in images]),
        "grey-level histogram, data bar cropped": np.stack(
            [grey_histogram(grey[:DATA_BAR_FREE_ROWS]) for grey in images]
        ),
        "structure features (gradients + spectrum)": np.stack([structure_features(grey) for grey in images]),
    }
    majority = max(np.mean(labels == name) for name in classes)
    print(f"{len(labels)} images, {len(classes)} classes; chance (majority class) accuracy {majority:.3f}")
    print("logistic regression, stratified 5-fold cross-validation:")
    for name, features in feature_sets.items():
        mean, std = cross_validated_accuracy(features, labels, args.seed)
        print(f"  {name:<44} accuracy {mean:.3f} ± {std:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
