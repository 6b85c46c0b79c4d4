"""A corpus's categories are its own (issue 23, point 6): a corpus of some SEM folders keeps the ten SEM ClassLabel
ids, but only the categories it has images of are ranked, captioned and scored; a lab's own folder names work the
same way, also when fine-tuning (`--init_from`) a model trained on other categories.

Through the real builder and training script, with a tiny model and one epoch: what is checked is which categories
appear, not how well they are told apart.
"""

import dataclasses
import shutil

import pytest
from PIL import Image
from test_training import TINY_MODEL

import run_instruct_tuning
from dataset_builder.builder import load_instruct_corpus
from dataset_builder.question_families import SEM_CATEGORIES, caption_for_category
from dataset_builder.synthetic import CACHE_FILE_NAME, IMAGES_DIR_NAME, generate_synthetic_corpus
from dataset_builder.teacher_cache import TeacherCache
from modeling_mvaema import MVaEMaForQuestionAnswering, MVaEMaProcessor

THREE_SEM = ["Nanowires", "Particles", "Powder"]  # in SEM (ClassLabel id) order
LAB_FOLDERS = {"Particles": "Grains", "Porous_Sponge": "Voids"}  # synthetic look -> the lab's folder name


def script_args(image_root, cache, output_dir, *extra):
    return ["--images", str(image_root), "--teacher_cache", str(cache), "--output_dir", str(output_dir),
            "--num_folds", "3", "--num_epochs", "1", "--batch_size", "24", "--vocab_size", "600",
            "--model_overrides", TINY_MODEL, "--max_eval_questions", "8", "--no_train_peer", *extra]


@pytest.fixture(scope="module")
def three_sem_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("three_sem")
    generate_synthetic_corpus(out, per_category=3, seed=0, categories=THREE_SEM)
    return out / IMAGES_DIR_NAME, out / CACHE_FILE_NAME


@pytest.fixture(scope="module")
def three_sem_run(three_sem_corpus, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("three_sem_run")
    summary = run_instruct_tuning.main(script_args(*three_sem_corpus, output_dir, "--baselines", "features"))
    return summary, output_dir


def lab_corpus(directory):
    """Synthetic micrographs of two looks, filed under a lab's own folder names, with the teacher's answers
    relabelled to match (the builder drops answers written for another folder's category)."""
    generate_synthetic_corpus(directory / "source", per_category=3, seed=1, categories=list(LAB_FOLDERS))
    image_root = directory / "lab"
    for category, folder in LAB_FOLDERS.items():
        shutil.copytree(directory / "source" / IMAGES_DIR_NAME / category, image_root / folder)
    records, _ = TeacherCache(directory / "source" / CACHE_FILE_NAME).read()
    cache = TeacherCache(directory / "lab_cache.jsonl")
    cache.append_many([dataclasses.replace(record, category=LAB_FOLDERS[record.category]) for record in records])
    return image_root, cache.path


def test_a_corpus_of_three_sem_categories_ranks_and_scores_exactly_those(three_sem_corpus, three_sem_run):
    corpus = load_instruct_corpus(*three_sem_corpus, num_folds=3, cache_dir=three_sem_run[1] / "dataset_cache")
    assert corpus.features["category"].names == list(SEM_CATEGORIES)  # ids stay the SEM ids
    summary, output_dir = three_sem_run
    assert summary["meta"]["class_names"] == THREE_SEM
    for section in ("mvaema", "features"):
        classification = summary[section]["classification"]
        assert list(classification["per_class"]) == THREE_SEM
        assert len(classification["confusion_matrix"]) == 3 and classification["top5"] == 1.0  # 3 ranked of 3

    processor = MVaEMaProcessor.from_pretrained(output_dir / "model")
    assert processor.category_names == THREE_SEM
    assert f"({', '.join(THREE_SEM)})" in (output_dir / "model" / "README.md").read_text()  # the card's categories
    assert processor.category_captions == [caption_for_category(name) for name in THREE_SEM]
    model = MVaEMaForQuestionAnswering.from_pretrained(output_dir / "model").eval()
    image = Image.open(next((three_sem_corpus[0] / "Powder").iterdir()))
    ranking = processor.rank_categories(model, [image], top_k=5)[0]
    assert sorted(entry["label"] for entry in ranking) == sorted(THREE_SEM)


def test_a_labs_own_folders_are_its_categories_also_when_fine_tuning_a_model_of_others(three_sem_run, tmp_path):
    image_root, cache = lab_corpus(tmp_path)
    summary = run_instruct_tuning.main(script_args(image_root, cache, tmp_path / "out", "--baselines", "features",
                                                   "--init_from", str(three_sem_run[1] / "model")))
    lab_names = sorted(LAB_FOLDERS.values())  # not SEM folders: the sorted folder names
    assert summary["meta"]["class_names"] == lab_names
    for section in ("mvaema", "features"):
        assert list(summary[section]["classification"]["per_class"]) == lab_names

    processor = MVaEMaProcessor.from_pretrained(tmp_path / "out" / "model")
    assert processor.category_names == lab_names  # not the three SEM categories the model started from
    model = MVaEMaForQuestionAnswering.from_pretrained(tmp_path / "out" / "model").eval()
    image = Image.open(next((image_root / "Voids").iterdir()))
    assert sorted(entry["label"] for entry in processor.rank_categories(model, [image])[0]) == lab_names
    self_captioned = processor(images=[image], questions=["Describe the surface textures."])
    assert self_captioned["caption_candidate_input_ids"].shape[0] == len(lab_names)
