"""Table 2's supervised baselines by name: train one on a fold's splits and score it on the test split.

    results = train_and_evaluate_baseline("vit", data.train, data.validation, data.test, data.pixel_store,
                                          data.class_names, BaselineSettings(learning_rate=1e-3, seed=seed + fold))

The result has the shape of one MVaEMa run's classification result: {"classification": the keys of
`evaluation.evaluate_classification`, "classification_method": "supervised", "parameters": trainable count,
"training": {"epochs", "best_validation_loss", "history"}}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import set_seed

from instruct_tuning.baselines import features
from instruct_tuning.baselines.models import NETWORKS, trainable_parameters
from instruct_tuning.baselines.training import (
    BaselineSettings,
    LabelledImages,
    classification_metrics,
    predict_logits,
    train_network,
)

SUPERVISED = "supervised"


@dataclass(frozen=True)
class Baseline:
    display_name: str  # the row name in the results tables
    model_class: str  # what implements it


BASELINES = {
    "vit": Baseline("VanillaViT (supervised)", "transformers ViTForImageClassification"),
    "resnet": Baseline("ResNet (supervised)", "transformers ResNetForImageClassification"),
    "swin": Baseline("Swin (supervised)", "transformers SwinForImageClassification"),
    "features": Baseline("Gradient + spectrum features (logistic regression)", "scikit-learn LogisticRegression"),
}


def parse_baselines(text: str) -> list[str]:
    """"vit,resnet" -> ["vit", "resnet"]; "all" -> every baseline; "none" -> []. Order kept, repeats dropped."""
    names = list(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    choices = f"give a comma-separated list of {', '.join(BASELINES)}, or 'all' or 'none'"
    if names in (["all"], ["none"]):
        return list(BASELINES) if names == ["all"] else []
    if not names or {"all", "none"} & set(names):
        raise ValueError(f"--baselines {text!r}: {choices} ('all' and 'none' stand alone)")
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines {text!r}: unknown baseline {', '.join(map(repr, unknown))}; {choices}")
    return names


def parameter_counts(class_names: list[str], settings: BaselineSettings) -> dict[str, int]:
    """Trainable parameters of every baseline for these classes and `settings.vision_config`, by name."""
    networks = {name: trainable_parameters(build(settings.vision_config, class_names))
                for name, build in NETWORKS.items()}
    return {**networks, "features": features.parameters_for(len(class_names))}


def check_inputs(name: str, pixel_store, class_names: list[str], settings: BaselineSettings) -> None:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    if len(class_names) < 2:
        raise ValueError(f"a classifier needs at least two categories, got {class_names}")
    image_size = pixel_store.pixels.shape[-1]
    if name in NETWORKS and image_size != settings.vision_config.image_size:
        raise ValueError(f"the pixel store holds {image_size} px images but the vision config's image_size is "
                         f"{settings.vision_config.image_size}; build the store at the model's image size")


def train_and_evaluate_baseline(name: str, train, validation, test, pixel_store, class_names: list[str],
                                settings: BaselineSettings) -> dict:
    """Train baseline `name` on the distinct images of the `train` table (best epoch by `validation` loss) and
    score it on the `test` table's images. Tables are `instruct_tuning.data.QATable`s."""
    check_inputs(name, pixel_store, class_names, settings)
    splits = [LabelledImages.from_table(table) for table in (train, validation, test)]
    set_seed(settings.seed)
    if name == "features":
        scores, parameters, training = features_scores(*splits, pixel_store, len(class_names))
    else:
        scores, parameters, training = network_scores(name, *splits, pixel_store, class_names, settings)
    return {"classification": classification_metrics(scores, splits[2].labels, class_names),
            "classification_method": SUPERVISED, "parameters": parameters, "training": training}


def network_scores(name: str, train: LabelledImages, validation: LabelledImages, test: LabelledImages, pixel_store,
                   class_names: list[str], settings: BaselineSettings) -> tuple[torch.Tensor, int, dict]:
    """Test logits [N_test, C], trainable parameter count and training record of one network baseline."""
    device = torch.device(settings.device) if settings.device else pixel_store.pixels.device
    model = NETWORKS[name](settings.vision_config, class_names).to(device)
    model, training = train_network(model, train, validation, pixel_store, settings, device)
    logits = predict_logits(model, test, pixel_store, device, settings.eval_batch_size)
    return logits, trainable_parameters(model), training


def features_scores(train: LabelledImages, validation: LabelledImages, test: LabelledImages, pixel_store,
                    num_classes: int):
    """Test class probabilities [N_test, C], learnt weight count and training record of the features baseline."""
    train_features, validation_features, test_features = (
        features.feature_matrix(pixel_store, split.image_index) for split in (train, validation, test))
    model, training = features.fit_logistic_regression(
        train_features, train.labels.numpy(), validation_features, validation.labels.numpy(), num_classes)
    return features.class_probabilities(model, test_features, num_classes), features.parameter_count(model), training
