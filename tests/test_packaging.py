"""The wheel carries what the package reads at run time: an installed package (no checkout) renders the model card
from model_card.md, and the dataset card and metric cards ship beside their modules."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Read at run time through importlib.resources / the module's own folder, so they must be in the wheel.
SHIPPED_TEMPLATES = {
    "instruct_tuning/model_card.md": "model_card.md",
    "dataset_builder/dataset_card.md": "dataset_builder/dataset_card.md",
    "metrics/vqa_text/README.md": "metrics/vqa_text/README.md",
    "metrics/zero_shot_classification/README.md": "metrics/zero_shot_classification/README.md",
}
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "data", "outputs", "*.egg-info", "__pycache__",
                                     ".pytest_cache", "results", "tests", "docs")

RENDER_CARD = textwrap.dedent("""
    import json, sys
    import datasets
    import instruct_tuning
    from instruct_tuning import reporting

    summary = json.loads(sys.argv[1])
    corpus = datasets.Dataset.from_dict({"teacher": ["grounded-synthetic-v1"] * 2, "prompt_version": ["v1"] * 2,
                                         "image_id": ["a", "b"]})
    print(json.dumps({"package": instruct_tuning.__file__, "card": reporting.render_model_card(summary, corpus)}))
""")


def card_summary() -> dict:
    classification = {"top1": 0.9, "top5": 1.0, "macro_precision": 0.9, "macro_recall": 0.9, "macro_f1": 0.9,
                      "per_class": {"Fibres": {"precision": 0.9, "recall": 0.9, "f1": 0.9, "support": 5}},
                      "confusion_matrix": [[5]]}
    vqa = {"bleu2": 0.3, "bleu4": 0.1, "rouge1": 0.4, "rouge2": 0.2, "rougeL": 0.35, "meteor": 0.3}
    arguments = {"num_epochs": 15, "batch_size": 48, "learning_rate": 1e-3, "warmup_steps": 100, "num_folds": 10}
    return {"meta": {"class_names": ["Fibres"], "arguments": arguments, "wall_time_seconds": 1.0},
            "mvaema": {"folds": [0], "classification_method": ["itc"], "classification": classification,
                       "classification_std": classification, "vqa": vqa, "vqa_std": vqa, "parameters": 1_550_000}}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip wheel .` of a copy of the sources, installed with `pip install --target` into a folder of its own."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(root / "wheels")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "wheels").glob("mvaema-*.whl")
    target = root / "site"
    install = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    return target


@pytest.mark.slow
@pytest.mark.parametrize("installed_path", list(SHIPPED_TEMPLATES))
def test_every_run_time_template_ships_in_the_wheel(installed, installed_path):
    shipped = installed / installed_path
    assert shipped.is_file() and not shipped.is_symlink(), f"{installed_path} is missing from the wheel"
    assert shipped.read_text() == (REPO / SHIPPED_TEMPLATES[installed_path]).read_text()


@pytest.mark.slow
def test_the_installed_package_renders_the_model_card(installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1"}
    rendered = subprocess.run([sys.executable, "-c", RENDER_CARD, json.dumps(card_summary())], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    result = json.loads(rendered.stdout.strip().splitlines()[-1])
    assert Path(result["package"]).is_relative_to(installed)  # the installed copy, not the checkout
    card = result["card"]
    assert card.startswith("---") and "model-index" in card and "value: 0.9" in card
    assert "# MVaEMa: a small vision-language assistant for electron micrographs" in card
    assert "synthetic micrographs only" in card and "| MVaEMa | fold 0 of 10 | 0.900 | 1.000 | 0.900 | 1.55 M | itc |" in card
    assert "{{" not in card  # every placeholder filled
