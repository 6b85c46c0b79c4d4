"""A saved model's files are checked before anything is allocated or unpickled: weights only from model.safetensors,
and sizes and generation settings within bounds, each refusal naming the folder, the file and the field."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from inference_fixtures import save_tiny_model, sixteen_bit_tiff
from safetensors.torch import load_file
from transformers import pipeline

from inference.demo import main as demo_main
from inference.predict import main as predict_main
from modeling_mvaema import MVaEMaForQuestionAnswering

PIPELINE_TASKS = ("image-text-to-text", "zero-shot-image-classification")


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "saved")


def copy_of(saved_model: Path, folder: Path) -> Path:
    shutil.copytree(saved_model, folder)
    return folder


def edit_json(path: Path, change) -> None:
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


def assert_every_loader_refuses(folder: Path, message: str, tmp_path: Path, capsys) -> None:
    """`from_pretrained`, both pipelines (with the package imported), mvaema-predict and mvaema-demo stop with
    `message`, the command-line tools without a traceback."""
    with pytest.raises((OSError, ValueError), match=message):
        MVaEMaForQuestionAnswering.from_pretrained(folder)
    for task in PIPELINE_TASKS:
        with pytest.raises((OSError, ValueError), match=message):
            pipeline(task, model=str(folder))
    assert predict_main(["--model", str(folder), "--image", str(sixteen_bit_tiff(tmp_path / "deep.tif"))]) == 2
    assert demo_main(["--model", str(folder)]) == 2
    errors = capsys.readouterr().err
    assert errors.count(message.replace("\\", "")) == 2 and "Traceback" not in errors


# ------------------------------------------------------------------------------------------------ pickle weights


def test_pickle_weights_are_refused_with_the_folder_named(saved_model, tmp_path, capsys):
    folder = copy_of(saved_model, tmp_path / "pickled")
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    message = f"{folder}: only model.safetensors is accepted"
    assert_every_loader_refuses(folder, message, tmp_path, capsys)


# ------------------------------------------------------------------------------------------------ absurd settings


@pytest.mark.parametrize(
    ("field", "value"),
    [("num_beams", 1_000_000), ("min_new_tokens", 10**9), ("max_new_tokens", 10**9), ("num_return_sequences", 10**6)],
)
def test_absurd_generation_settings_are_refused_by_file_and_field(saved_model, tmp_path, capsys, field, value):
    folder = copy_of(saved_model, tmp_path / "absurd")
    edit_json(folder / "generation_config.json", lambda config: config.update({field: value}))
    message = f"{folder}/generation_config.json: {field} {value} is"
    assert_every_loader_refuses(folder, message, tmp_path, capsys)


def test_a_malformed_generation_config_is_named_not_ignored(saved_model, tmp_path):
    folder = copy_of(saved_model, tmp_path / "malformed")
    (folder / "generation_config.json").write_text('{"num_beams": 3,')
    with pytest.raises(ValueError, match=f"{folder}/generation_config.json is not a valid JSON object"):
        MVaEMaForQuestionAnswering.from_pretrained(folder)


def test_absurd_model_sizes_are_refused_before_allocating(saved_model, tmp_path, capsys):
    """200,000 positions cost little for this tiny model; 2e7 cost the issue's reporter 5.4 GB before a traceback."""
    folder = copy_of(saved_model, tmp_path / "huge")
    edit_json(folder / "config.json", lambda config: config["text_config"].update(max_position_embeddings=200_000))
    message = f"{folder}/config.json: text_config.max_position_embeddings 200000 is"
    assert_every_loader_refuses(folder, message, tmp_path, capsys)


def test_the_saved_settings_within_bounds_still_load(saved_model):
    model = MVaEMaForQuestionAnswering.from_pretrained(saved_model)
    assert model.generation_config.max_new_tokens == 8
