"""The hand-made features baseline: logistic regression on gradient-orientation and power-spectrum features.

It reads the same pixel store as the networks (uint8 [3, S, S] micrographs), as grey levels, without the
data bar at the bottom of the image (its share of the frame would be a shortcut no specimen feature needs).
scikit-learn's StandardScaler + LogisticRegression; the inverse regularisation strength C is the one with the
lowest validation cross-entropy, as the networks keep their epoch with the lowest validation loss.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

DATA_BAR_FREE_SHARE = 660 / 768  # the data bar starts at row 664 of 768 or lower in synthetic (and most real) images
ORIENTATION_BINS = 12
SPECTRUM_BINS = 16
FEATURE_SIZE = 2 * (ORIENTATION_BINS + 2) + SPECTRUM_BINS
REGULARISATION_GRID = (0.01, 0.1, 1.0, 10.0)  # LogisticRegression's C, chosen on the validation split


def grey_specimen(pixels: np.ndarray) -> Image.Image:
    """uint8 [3, S, S] -> the grey-level image above the data bar, as PIL's "L" conversion reads it."""
    grey = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).convert("L")
    return grey.crop((0, 0, grey.width, max(2, round(grey.height * DATA_BAR_FREE_SHARE))))


def structure_features(specimen: Image.Image) -> np.ndarray:
    """Orientation histograms of gradients (full and half scale) and a radial log power spectrum: [FEATURE_SIZE]."""
    features = []
    for scale in (1, 2):
        size = (max(2, specimen.width // scale), max(2, specimen.height // scale))
        values = np.asarray(specimen.resize(size, Image.BILINEAR), np.float32) / 255
        gy, gx = np.gradient(values)
        magnitude = np.hypot(gx, gy)
        orientation = np.mod(np.arctan2(gy, gx), np.pi)
        histogram = np.histogram(orientation, bins=ORIENTATION_BINS, range=(0, np.pi), weights=magnitude)[0]
        features += [histogram / (histogram.sum() + 1e-9), [magnitude.mean(), (magnitude > 0.1).mean()]]
    values = np.asarray(specimen, np.float32)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(values - values.mean()))) ** 2
    rows, cols = np.indices(spectrum.shape)
    radius = np.hypot(rows - spectrum.shape[0] / 2, cols - spectrum.shape[1] / 2)
    bins = np.minimum((radius / radius.max() * SPECTRUM_BINS).astype(int), SPECTRUM_BINS - 1)
    counts = np.maximum(np.bincount(bins.ravel(), minlength=SPECTRUM_BINS), 1)
    radial = np.bincount(bins.ravel(), spectrum.ravel(), SPECTRUM_BINS) / counts
    features.append(np.log1p(radial / (radial.sum() + 1e-9) * 1e3))
    return np.concatenate([np.asarray(part, np.float64).ravel() for part in features])


def feature_matrix(pixel_store, image_index: torch.Tensor) -> np.ndarray:
    """Features [N, F] of the pixel-store images at `image_index` [N]."""
    pixels = pixel_store.pixels[image_index.to(pixel_store.pixels.device)].cpu().numpy()
    return np.stack([structure_features(grey_specimen(image)) for image in pixels])


def class_probabilities(model: Pipeline, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Probabilities [N, num_classes]; a class absent from the training split gets 0."""
    probabilities = np.zeros((len(features), num_classes))
    probabilities[:, model.classes_] = model.predict_proba(features)
    return probabilities


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-15, None)).mean())


def fit_logistic_regression(train_features: np.ndarray, train_labels: np.ndarray, validation_features: np.ndarray,
                            validation_labels: np.ndarray, num_classes: int) -> tuple[Pipeline, dict]:
    """The pipeline with the best validation cross-entropy over REGULARISATION_GRID, and the training record."""
    best_model, best_loss, history = None, np.inf, []
    for strength in REGULARISATION_GRID:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=5000))
        model.fit(train_features, train_labels)
        loss = cross_entropy(class_probabilities(model, validation_features, num_classes), validation_labels)
        history.append({"C": strength, "validation_loss": loss})
        if loss < best_loss:
            best_model, best_loss = model, loss
    return best_model, {"epochs": None, "best_validation_loss": best_loss, "history": history}


def parameter_count(model: Pipeline) -> int:
    """Learnt weights of the logistic regression (coefficients and intercepts; the scaler's statistics not counted)."""
    regression = model[-1]
    return int(regression.coef_.size + regression.intercept_.size)


def parameters_for(num_classes: int) -> int:
    """What `parameter_count` gives for a model of `num_classes` classes (two classes share one weight vector)."""
    return (FEATURE_SIZE + 1) * (1 if num_classes == 2 else num_classes)
