"""Table 2 baselines: each trains on a fold's distinct images, learns an easy toy task, reports MVaEMa's metric keys
and reproduces its numbers with the same seed; the --baselines parser names what it rejects."""

import json

import numpy as np
import pytest
import torch

from instruct_tuning.baselines import (
    BASELINES,
    BaselineSettings,
    parameter_counts,
    parse_baselines,
    train_and_evaluate_baseline,
)
from instruct_tuning.baselines.features import class_probabilities, fit_logistic_regression
from instruct_tuning.baselines.models import swin_classifier, trainable_parameters, vit_classifier
from instruct_tuning.baselines.training import LabelledImages
from instruct_tuning.data import PixelStore, QATable
from instruct_tuning.training import optimizer_step_with_warmup
from modeling_mvaema import MVaEMaConfig, MVaEMaForQuestionAnswering
from modeling_mvaema.configuration_mvaema import MVaEMaVisionConfig

CLASS_NAMES = ["Horizontal stripes", "Vertical stripes"]
IMAGE_SIZE = 32
METRIC_KEYS = {"top1", "top5", "macro_precision", "macro_recall", "macro_f1", "per_class", "confusion_matrix"}
TINY_VISION = MVaEMaVisionConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2)


def stripes(vertical: bool, rng: np.random.Generator) -> np.ndarray:
    """uint8 [3, 32, 32] grey stripes of random period and phase, with noise."""
    period, phase = rng.choice([4, 6, 8]), rng.uniform(0, 2 * np.pi)
    wave = np.sign(np.sin(2 * np.pi * np.arange(IMAGE_SIZE) / period + phase))
    image = np.tile(wave, (IMAGE_SIZE, 1)) if vertical else np.tile(wave[:, None], (1, IMAGE_SIZE))
    grey = np.clip(128 + 90 * image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    return np.repeat(grey[None], 3, axis=0)


def qa_table(image_index: list[int], categories: list[int], pairs_per_image: int = 2) -> QATable:
    """A split table with `pairs_per_image` QA pairs per image (a baseline must count each image once)."""
    image_index = torch.tensor(image_index).repeat_interleave(pairs_per_image)
    count = len(image_index)
    tokens = torch.zeros(count, 4, dtype=torch.long)
    return QATable(image_index=image_index, prompt_ids=tokens, prompt_mask=tokens, prompt_ids_no_caption=tokens,
                   prompt_mask_no_caption=tokens, labels=tokens, category=torch.tensor(categories).repeat_interleave(pairs_per_image),
                   caption_ids=tokens, caption_mask=tokens)


@pytest.fixture(scope="module")
def toy_fold():
    """40 training, 12 validation and 16 test images of two classes, alternating."""
    rng = np.random.default_rng(0)
    labels = [index % 2 for index in range(68)]
    pixels = torch.from_numpy(np.stack([stripes(bool(label), rng) for label in labels]))
    store = PixelStore(pixels, [f"image-{index}" for index in range(len(labels))])
    splits = [range(0, 40), range(40, 52), range(52, 68)]
    return [qa_table(list(rows), [labels[row] for row in rows]) for rows in splits] + [store]


def tiny_settings(**overrides) -> BaselineSettings:
    values = dict(learning_rate=1e-3, warmup_steps=0, batch_size=8, num_epochs=2, seed=0, vision_config=TINY_VISION)
    return BaselineSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def results(toy_fold):
    train, validation, test, store = toy_fold
    return {name: train_and_evaluate_baseline(name, train, validation, test, store, CLASS_NAMES, tiny_settings())
            for name in BASELINES}


@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_beats_chance_and_reports_mvaema_metric_keys(results, name):
    result = results[name]
    classification = result["classification"]
    assert set(classification) == METRIC_KEYS
    assert classification["top1"] >= 0.75, f"{name}: top-1 {classification['top1']} on a separable toy set"
    assert classification["top5"] == 1.0  # two classes
    assert set(classification["per_class"]) == set(CLASS_NAMES)
    assert sum(c["support"] for c in classification["per_class"].values()) == 16  # test images, not QA pairs
    assert result["classification_method"] == "supervised"
    assert result["parameters"] == parameter_counts(CLASS_NAMES, tiny_settings())[name]


@pytest.mark.parametrize("name", ["vit", "resnet", "swin"])
def test_network_keeps_the_epoch_with_the_lowest_validation_loss(results, name):
    training = results[name]["training"]
    assert training["epochs"] == 2 and [h["epoch"] for h in training["history"]] == [1, 2]
    assert training["best_validation_loss"] == min(h["validation_loss"] for h in training["history"])


def test_features_baseline_picks_regularisation_by_validation_loss(results):
    training = results["features"]["training"]
    assert [h["C"] for h in training["history"]] == [0.01, 0.1, 1.0, 10.0]
    assert training["best_validation_loss"] == min(h["validation_loss"] for h in training["history"])


@pytest.mark.parametrize("name", list(BASELINES))
def test_same_seed_gives_the_same_numbers(toy_fold, results, name):
    train, validation, test, store = toy_fold
    again = train_and_evaluate_baseline(name, train, validation, test, store, CLASS_NAMES, tiny_settings())
    assert again == results[name]


def test_a_network_record_counts_its_passes_and_optimizer_steps(results):
    training = results["vit"]["training"]  # 40 training images in batches of 8, one pass an epoch, 2 epochs
    assert (training["passes_per_epoch"], training["optimizer_steps"]) == (1, 10)


def test_more_passes_an_epoch_take_more_steps_between_the_same_validations(toy_fold, results):
    train, validation, test, store = toy_fold
    twice = train_and_evaluate_baseline("vit", train, validation, test, store, CLASS_NAMES,
                                        tiny_settings(passes_per_epoch=2))["training"]
    assert (twice["passes_per_epoch"], twice["optimizer_steps"], twice["epochs"]) == (2, 20, 2)
    assert [h["train_loss"] for h in twice["history"]] != [h["train_loss"] for h in results["vit"]["training"]["history"]]


def test_the_cosine_schedule_reaches_the_baselines_and_ends_at_a_rate_of_zero(toy_fold, results):
    train, validation, test, store = toy_fold
    cosine = train_and_evaluate_baseline("vit", train, validation, test, store, CLASS_NAMES,
                                         tiny_settings(lr_scheduler_type="cosine", num_epochs=3))["training"]
    assert [h["lr"] for h in cosine["history"]][-1] == pytest.approx(0.0)
    assert cosine["history"][0]["lr"] < 1e-3 and cosine["optimizer_steps"] == 15
    assert [h["lr"] for h in results["vit"]["training"]["history"]] == [1e-3, 1e-3]  # the plateau default


def test_training_batches_cover_every_image_once_per_pass():
    from instruct_tuning.baselines.training import epoch_generator, training_batches

    images = LabelledImages(torch.arange(10), torch.zeros(10, dtype=torch.long))
    one = training_batches(images, 4, epoch_generator(0, 3))
    three = training_batches(images, 4, epoch_generator(0, 3), passes=3)
    assert [b.tolist() for b in three[:3]] == [b.tolist() for b in one]  # one pass draws what it always drew
    assert len(three) == 9 and torch.cat(three).bincount().tolist() == [3] * 10
    with pytest.raises(ValueError, match="passes_per_epoch must be >= 1"):
        tiny_settings(passes_per_epoch=0)


def test_training_images_are_the_distinct_images_of_a_table():
    images = LabelledImages.from_table(qa_table([5, 2, 9], [1, 0, 1]))
    assert images.image_index.tolist() == [2, 5, 9] and images.labels.tolist() == [0, 1, 1]


def test_warmup_scales_the_step_and_restores_the_plateau_rate():
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([weight], lr=1e-3)
    weight.grad = torch.ones(1)
    optimizer_step_with_warmup(optimizer, step=0, warmup_steps=4)  # Adam's first step moves by the learning rate
    assert weight.item() == pytest.approx(-0.25e-3) and optimizer.param_groups[0]["lr"] == 1e-3


def test_vit_is_mvaema_vision_tower_plus_a_linear_head():
    config = MVaEMaConfig()
    vision_tower = trainable_parameters(MVaEMaForQuestionAnswering(config).get_encoder("image"))
    vit = vit_classifier(config.vision_config, CLASS_NAMES)
    assert trainable_parameters(vit) == vision_tower + (config.vision_config.hidden_size + 1) * len(CLASS_NAMES)
    assert (vit.config.patch_size, vit.config.num_hidden_layers, vit.config.num_attention_heads) == (32, 6, 4)
    assert (vit.config.initializer_range, vit.config.hidden_dropout_prob) == (0.1, 0.0)


def test_swin_starts_at_mvaema_vision_initialisation_with_windows_inside_its_last_grid():
    swin = swin_classifier(TINY_VISION, CLASS_NAMES)
    assert swin.config.initializer_range == TINY_VISION.initializer_range == 0.1
    assert swin.config.window_size == IMAGE_SIZE // TINY_VISION.patch_size  # 4: the last stage's 4 x 4 grid
    assert swin_classifier(MVaEMaConfig().vision_config, CLASS_NAMES).config.window_size == 7


def test_networks_are_at_most_mvaema_size():
    model = MVaEMaForQuestionAnswering(MVaEMaConfig())
    counts = parameter_counts([f"class {i}" for i in range(10)], BaselineSettings())
    assert set(counts) == set(BASELINES)
    assert all(count <= trainable_parameters(model) for count in counts.values()), counts


def test_features_give_an_unseen_class_zero_probability():
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(20, 3)), np.array([0, 2] * 10)
    features[labels == 2] += 3
    model, _ = fit_logistic_regression(features, labels, features, labels, num_classes=3)
    probabilities = class_probabilities(model, features, num_classes=3)
    assert probabilities.shape == (20, 3) and (probabilities[:, 1] == 0).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0)


def test_parse_baselines():
    assert parse_baselines("all") == ["vit", "resnet", "swin", "features"]
    assert parse_baselines("none") == []
    assert parse_baselines(" swin, vit,swin ") == ["swin", "vit"]


@pytest.mark.parametrize(("text", "message"), [
    ("vit,convnext", "unknown baseline 'convnext'"),
    ("", "give a comma-separated list of vit, resnet, swin, features"),
    ("all,vit", "'all' and 'none' stand alone"),
])
def test_parse_baselines_names_what_it_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_baselines(text)


def test_unknown_baseline_name_is_rejected(toy_fold):
    train, validation, test, store = toy_fold
    with pytest.raises(ValueError, match="unknown baseline 'cnn'; choose one of vit, resnet, swin, features"):
        train_and_evaluate_baseline("cnn", train, validation, test, store, CLASS_NAMES, tiny_settings())


def test_pixel_store_of_another_size_is_rejected(toy_fold):
    train, validation, test, store = toy_fold
    settings = tiny_settings(vision_config=MVaEMaVisionConfig())
    with pytest.raises(ValueError, match="holds 32 px images but the vision config's image_size is 224"):
        train_and_evaluate_baseline("vit", train, validation, test, store, CLASS_NAMES, settings)


def test_one_category_is_rejected(toy_fold):
    train, validation, test, store = toy_fold
    with pytest.raises(ValueError, match="at least two categories"):
        train_and_evaluate_baseline("resnet", train, validation, test, store, ["Only"], tiny_settings())


@pytest.mark.parametrize(("setting", "value"), [("num_epochs", 0), ("batch_size", 0), ("warmup_steps", -1)])
def test_bad_settings_are_rejected(setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be >= "):
        tiny_settings(**{setting: value})


class CountingAugmentation(torch.nn.Module):
    """Records the batches it varies and the random draw it is given; flips the images (a real change)."""

    def __init__(self):
        super().__init__()
        self.batch_sizes, self.draws = [], []

    def forward(self, pixel_values, generator=None):
        self.batch_sizes.append(len(pixel_values))
        self.draws.append(int(torch.randint(0, 2**30, (1,), generator=generator)))
        return pixel_values.flip(-1)


def test_augmentation_varies_every_training_batch_from_the_seed_and_never_evaluation(toy_fold):
    train, validation, test, store = toy_fold
    runs = []
    for _ in range(2):
        augmentation = CountingAugmentation()
        settings = tiny_settings(augmentation=augmentation, num_epochs=2)
        result = train_and_evaluate_baseline("vit", train, validation, test, store, CLASS_NAMES, settings)
        runs.append((augmentation, result))
    (first, result), (second, again) = runs
    assert first.batch_sizes == [8, 8, 8, 8, 8] * 2  # 40 training images, batches of 8, two epochs; nothing else
    assert first.draws == second.draws and len(set(first.draws)) == 10  # reproducible, a new draw per batch
    assert result == again


def test_real_augmentation_changes_the_trained_network(toy_fold, results):
    from instruct_tuning.augmentation import MicrographAugmentation

    train, validation, test, store = toy_fold
    settings = tiny_settings(augmentation=MicrographAugmentation(IMAGE_SIZE))
    augmented = train_and_evaluate_baseline("vit", train, validation, test, store, CLASS_NAMES, settings)
    history, plain_history = augmented["training"]["history"], results["vit"]["training"]["history"]
    assert [h["train_loss"] for h in history] != [h["train_loss"] for h in plain_history]


def test_script_settings_reach_the_baselines(tmp_path):
    from instruct_tuning.arguments import ScriptArguments
    from instruct_tuning.augmentation import MicrographAugmentation
    from instruct_tuning.baselines.runs import baseline_settings

    args = ScriptArguments(learning_rate=3e-4, warmup_steps=7, batch_size=16, num_epochs=4, lr_patience=2,
                           early_stopping_patience=3, seed=5, lr_scheduler_type="cosine", output_dir=str(tmp_path))
    settings = baseline_settings(args, fold=2, vision_config=TINY_VISION, device="cpu")
    assert (settings.learning_rate, settings.warmup_steps, settings.batch_size, settings.num_epochs) == (3e-4, 7, 16, 4)
    assert (settings.lr_patience, settings.early_stopping_patience, settings.seed) == (2, 3, 7)  # seed + fold, as MVaEMa
    assert isinstance(settings.augmentation, MicrographAugmentation) and settings.vision_config is TINY_VISION
    assert settings.passes_per_epoch == 1 and settings.lr_scheduler_type == "cosine"
    args.augment = False
    assert baseline_settings(args, fold=2, vision_config=TINY_VISION, device="cpu").augmentation is None


def test_baselines_see_each_micrograph_as_often_an_epoch_as_mvaema(tmp_path):
    from instruct_tuning.arguments import ScriptArguments
    from instruct_tuning.baselines.runs import baseline_settings, passes_per_epoch

    train = qa_table(list(range(6)), [0, 1] * 3, pairs_per_image=22)  # 22 questions a micrograph, as the corpus
    built_in = ScriptArguments(output_dir=str(tmp_path))  # 1 question a group, 4 groups an epoch
    assert passes_per_epoch(built_in, train) == 4
    other = ScriptArguments(output_dir=str(tmp_path), dataset="my-org/sem-instruct")  # 4 a group, every group
    assert passes_per_epoch(other, train) == 6  # 22 questions in groups of 4: 6 groups, the last of 2
    assert passes_per_epoch(ScriptArguments(output_dir=str(tmp_path), baseline_passes_per_epoch=1), train) == 1
    assert baseline_settings(built_in, 0, TINY_VISION, "cpu", passes=4).passes_per_epoch == 4


def test_a_finished_baseline_is_read_back_on_resume_and_redone_otherwise(toy_fold, tmp_path):
    from instruct_tuning.baselines.runs import run_baseline
    from instruct_tuning.data import FoldData

    train, validation, test, store = toy_fold
    data = FoldData(train, validation, test, store, CLASS_NAMES)
    run_dir = tmp_path / "runs" / "features" / "fold_0"
    first = run_baseline("features", data, tiny_settings(), run_dir, resume=False)
    stored = json.loads((run_dir / "result.json").read_text())
    assert stored["classification"]["top1"] == first["classification"]["top1"]
    (run_dir / "result.json").write_text(json.dumps({**stored, "parameters": -1}))
    assert run_baseline("features", data, tiny_settings(), run_dir, resume=True)["parameters"] == -1
    assert run_baseline("features", data, tiny_settings(), run_dir, resume=False)["parameters"] == first["parameters"]
