"""Publishing a prepared corpus: its Hub dataset card and the push to a dataset repo.

The push is private unless asked otherwise, and refuses to write into an existing public repository unless
publishing was asked for.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from .synthetic.grounded_teacher import TEACHER_NAME as GROUNDED_TEACHER_NAME
from .prepared_corpus import CONFIG_FILES, IMAGES_CONFIG, QA_CONFIG, images_features
from .question_families import SEM_CATEGORIES

CARD_TEMPLATE = Path(__file__).with_name("dataset_card.md")
# Ids of mvaema-synth's grounded teacher ("grounded-synthetic/v1", later versions alike): its corpora reuse the
# SEM folder names, but their images are not the SEM dataset.
SYNTHETIC_TEACHER_PREFIX = GROUNDED_TEACHER_NAME.split("/")[0]
PRETTY_NAMES = {
    "sem": "SEM micrograph instructions (MVaEMa)",
    "synthetic": "Synthetic SEM micrograph instructions (MVaEMa)",
    "other": "Electron micrograph instructions (MVaEMa)",
}
DEFAULT_LICENSES = {"sem": "cc-by-4.0", "synthetic": "cc-by-4.0", "other": "other"}


def image_source(category_names: list[str], teachers: set[str]) -> str:
    """Where the images come from: "synthetic" (every answer from mvaema-synth's grounded teacher), "sem"
    (the SEM dataset's folder names), or "other"."""
    if teachers and all(teacher.startswith(SYNTHETIC_TEACHER_PREFIX) for teacher in teachers):
        return "synthetic"
    return "sem" if set(category_names) == set(SEM_CATEGORIES) else "other"


def build_dataset_card(
    qa_table: datasets.Dataset, image_rows: list[dict], report: dict, source: str, license_id: str | None = None
) -> DatasetCard:
    """The Hub card: YAML front matter (configs, features, licence) and provenance, folds and counts.

    `license_id` (an SPDX id) defaults to CC BY 4.0 for the SEM dataset and for synthetic images, else "other".
    """
    category_names = qa_table.features["category"].names
    origin = image_source(category_names, set(qa_table.unique("teacher")))
    license_id = license_id or DEFAULT_LICENSES[origin]
    card_data = DatasetCardData(
        license=license_id,
        pretty_name=PRETTY_NAMES[origin],
        task_categories=["visual-question-answering", "image-classification"],
        tags=["electron-microscopy", "nanomaterials", "instruction-tuning"]
        + (["synthetic"] if origin == "synthetic" else []),
        size_categories=[_size_category(len(qa_table))],
        configs=[
            {
                "config_name": QA_CONFIG,
                "data_files": [{"split": "train", "path": CONFIG_FILES[QA_CONFIG]}],
                "default": True,
            },
            {"config_name": IMAGES_CONFIG, "data_files": [{"split": "train", "path": CONFIG_FILES[IMAGES_CONFIG]}]},
        ],
    )
    DatasetInfosDict(
        {
            QA_CONFIG: _config_info(qa_table.features, len(qa_table), qa_table.data.nbytes),
            IMAGES_CONFIG: _config_info(
                images_features(category_names),
                len(image_rows),
                sum(Path(row["path"]).stat().st_size for row in image_rows),
            ),
        }
    ).to_dataset_card_data(card_data)
    return DatasetCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        pretty_name=PRETTY_NAMES[origin],
        image_source=origin,
        license=license_id,
        **_card_context(qa_table, image_rows, report, source),
    )


def _config_info(features: datasets.Features, num_rows: int, num_bytes: int) -> datasets.DatasetInfo:
    splits = datasets.SplitDict()
    splits.add(datasets.SplitInfo(name="train", num_bytes=num_bytes, num_examples=num_rows))
    return datasets.DatasetInfo(features=features, splits=splits)


def _card_context(qa_table: datasets.Dataset, image_rows: list[dict], report: dict, source: str) -> dict:
    category_names = qa_table.features["category"].names
    num_folds = report["num_folds"]
    rows_per_category = Counter(qa_table["category"])
    images_per_category = Counter(row["category"] for row in image_rows)
    per_fold = {label: [0] * num_folds for label in images_per_category}
    for row in image_rows:
        per_fold[row["category"]][row["fold"]] += 1
    categories = [
        {
            "name": name,
            "rows": rows_per_category[label],
            "images": images_per_category[label],
            "per_fold": per_fold[label],
        }
        for label, name in enumerate(category_names)
        if label in per_fold
    ]
    return {
        "source": source,
        "num_rows": len(qa_table),
        "num_images": len(image_rows),
        "questions_per_image": round(len(qa_table) / max(1, len(image_rows))),
        "num_folds": num_folds,
        "seed": report["seed"],
        "near_duplicate_distance": report["near_duplicate_distance"],
        "near_duplicate_clusters": report["near_duplicate_clusters"],
        "images_in_near_duplicate_clusters": report["images_in_near_duplicate_clusters"],
        "small_classes": report["classes_with_fewer_groups_than_folds"],
        "category_names": category_names,
        "categories": categories,
        "teachers": dict(Counter(qa_table["teacher"]).most_common()),
        "prompt_versions": dict(Counter(qa_table["prompt_version"]).most_common()),
        "files_found": report["files_found"],
        "files_skipped": len(report["skipped_files"]),
        "exact_duplicates": len(report["exact_duplicates"]),
        "images_without_answers": len(report["images_without_answers"]),
        "records_used": report["records"]["used"],
        "records_failed": report["records"]["failed"],
        "cut_off_lines": len(report["cut_off_cache_lines"]),
    }


def _size_category(num_rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if num_rows < limit:
            return name
    return "1M<n<10M"


def push_prepared_corpus(out_dir: Path, repo_id: str, public: bool = False) -> str:
    """Upload the card and parquet shards of `out_dir` to a dataset repo, private unless `public`."""
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=not public, exist_ok=True)
    if not public and not api.repo_info(repo_id, repo_type="dataset").private:
        raise PermissionError(
            f"Dataset repo {repo_id} already exists and is public: pass --public to publish into it, "
            "or make it private on the Hub first."
        )
    shards = [CONFIG_FILES[QA_CONFIG], CONFIG_FILES[IMAGES_CONFIG]]
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=out_dir,
        allow_patterns=["README.md", *shards],
        delete_patterns=shards,  # shards of an earlier, larger build would otherwise stay in the configs
        commit_message="Upload SEM instruction corpus (mvaema-build-dataset)",
    )
    return commit.commit_url
