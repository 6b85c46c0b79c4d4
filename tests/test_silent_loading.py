"""A saved MVaEMa whose files point transformers at code that is not the package's (an `auto_map` to an unknown
class, a foreign `processor_class`) still loads with the installed classes: no "Do you wish to run the custom code?
[y/N]" under a terminal, and the planted code never runs, even when the terminal would answer "y"."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from inference_fixtures import save_tiny_model

PLANTED_MODULE = "planted_mvaema"
MARKER = "planted_code_ran.txt"


def plant_tokenizer_auto_map(folder: Path) -> None:
    edit_json(folder / "tokenizer_config.json", lambda config: config.update(
        auto_map={"AutoTokenizer": [f"{PLANTED_MODULE}.PlantedTokenizer", f"{PLANTED_MODULE}.PlantedTokenizer"]},
        tokenizer_class="PlantedTokenizer"))


def plant_image_processor_auto_map(folder: Path) -> None:
    edit_json(folder / "processor_config.json", lambda config: config["image_processor"].update(
        auto_map={"AutoImageProcessor": f"{PLANTED_MODULE}.PlantedImageProcessor"},
        image_processor_type="PlantedImageProcessor"))


def plant_processor_class(folder: Path) -> None:
    edit_json(folder / "processor_config.json", lambda config: config.update(
        auto_map={"AutoProcessor": f"{PLANTED_MODULE}.PlantedProcessor"}, processor_class="PlantedProcessor"))


PLANTS = {"tokenizer": plant_tokenizer_auto_map, "image_processor": plant_image_processor_auto_map,
          "processor_class": plant_processor_class}

LOADERS = textwrap.dedent(
    """
    import sys, traceback
    from transformers import AutoProcessor, pipeline
    import modeling_mvaema
    from modeling_mvaema import MVaEMaProcessor

    LOADERS = {
        "processor": lambda folder: MVaEMaProcessor.from_pretrained(folder),  # the README's snippet, --init_from
        "auto_processor": lambda folder: AutoProcessor.from_pretrained(folder),
        "answer_pipeline": lambda folder: pipeline("image-text-to-text", model=folder),
        "classify_pipeline": lambda folder: pipeline("zero-shot-image-classification", model=folder),
    }
    for folder in sys.argv[1:]:
        for name, load in LOADERS.items():
            try:
                loaded = load(folder)
                print("RESULT", folder.rsplit("/", 1)[1], name, "loaded", type(loaded).__name__, flush=True)
            except Exception as error:
                print("RESULT", folder.rsplit("/", 1)[1], name, "refused", type(error).__name__, flush=True)
    """
)


def edit_json(path: Path, change) -> None:
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


@pytest.fixture(scope="module")
def planted_folders(tmp_path_factory) -> tuple[list[Path], Path]:
    """One saved model per plant, each beside a module that writes the marker when Python imports it."""
    root = tmp_path_factory.mktemp("planted")
    saved = save_tiny_model(root / "saved")
    marker = root / MARKER
    folders = []
    for name, plant in PLANTS.items():
        folder = root / name
        shutil.copytree(saved, folder)
        (folder / f"{PLANTED_MODULE}.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
        plant(folder)
        folders.append(folder)
    return folders, marker


def run_in_terminal(script: Path, arguments: list[str], home: Path) -> str:
    """Run under a pseudo-terminal that answers "y" to every question, as a careless user would."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}
    command = " ".join([sys.executable, str(script), *arguments])
    result = subprocess.run(["script", "-qec", command, "/dev/null"], input="y\n" * 40, capture_output=True,
                            text=True, timeout=240, env=environment)
    return result.stdout + result.stderr


def test_planted_auto_maps_never_prompt_nor_run(planted_folders, tmp_path):
    folders, marker = planted_folders
    script = tmp_path / "load.py"
    script.write_text(LOADERS)
    output = run_in_terminal(script, [str(folder) for folder in folders], tmp_path / "hf_home")
    assert "[y/N]" not in output and "custom code" not in output, output[-3000:]
    assert not marker.exists(), "the planted code ran"
    results = {tuple(line.split()[1:3]): line.split()[3:] for line in output.splitlines() if line.startswith("RESULT")}
    assert len(results) == len(PLANTS) * 4, output[-3000:]
    for plant in PLANTS:  # the package's processor ignores every planted name
        assert results[plant, "processor"] == ["loaded", "MVaEMaProcessor"], (plant, output[-3000:])
    for loader in ("auto_processor", "answer_pipeline", "classify_pipeline"):  # a planted tokenizer is ignored
        assert results["tokenizer", loader][0] == "loaded", (loader, output[-3000:])
