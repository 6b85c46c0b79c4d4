"""mvaema-predict: loading without shipped code, one image, and a resumable folder run with bad files."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dataset_builder.question_families import caption_for_category
from image_fixtures import PROC_STATUS, large_sixteen_bit_png, peak_mib_added_by
from inference_fixtures import (
    CATEGORIES,
    SHIPPED_CODE_MARKER,
    plant_shipped_code,
    save_tiny_model,
    sixteen_bit_tiff,
    write_micrograph_folder,
)
from model_fixtures import micrographs
from PIL import Image

from inference.loading import ModelLoadError, ModelSource, load_model_and_processor
from inference.predict import main

REPO_ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["basics", "surface_characteristics"]
FAMILY_QUESTION_COUNTS = {"basics": 2, "surface_characteristics": 2}


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "saved")


@pytest.fixture
def hostile_model(tmp_path, saved_model) -> tuple[Path, Path]:
    """A copy of the saved model whose shipped modeling file writes a marker file when imported."""
    folder, marker = tmp_path / "hostile", tmp_path / SHIPPED_CODE_MARKER
    shutil.copytree(saved_model, folder)
    plant_shipped_code(folder, marker)
    return folder, marker


def run_cli(*args: str, environment: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m inference.predict` in a fresh process, offline, with its own Hugging Face home."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(environment or {})}
    return subprocess.run([sys.executable, "-m", "inference.predict", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------- loading


def test_folder_loads_with_installed_classes_and_never_runs_shipped_code(hostile_model):
    folder, marker = hostile_model
    model, processor = load_model_and_processor(ModelSource(str(folder)))
    assert type(model).__module__ == "modeling_mvaema.modeling_mvaema"
    assert type(processor).__module__ == "modeling_mvaema.processing_mvaema"
    assert processor.category_names == CATEGORIES
    assert not marker.exists()


def test_opt_in_loads_a_local_folder_with_remote_code_allowed(hostile_model, tmp_path):
    """Opting in allows the shipped code to run (transformers may still prefer the installed, registered classes)."""
    folder, _ = hostile_model
    image = sixteen_bit_tiff(tmp_path / "deep.tif")
    result = run_cli("--model", str(folder), "--trust-remote-code", "--image", str(image), "--json",
                     environment={"HF_HOME": str(tmp_path / "hf_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert [entry["label"] for entry in json.loads(result.stdout)["categories"]][0] in CATEGORIES


def test_hub_id_from_the_offline_cache_loads_with_installed_classes(hostile_model, tmp_path):
    folder, marker = hostile_model
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--lab--mvaema"
    shutil.copytree(folder, repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    image = sixteen_bit_tiff(tmp_path / "deep.tif")
    environment = {"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    result = run_cli("--model", "lab/mvaema", "--image", str(image), "--json", environment=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["answer"]
    assert not marker.exists()
    pinned = run_cli("--model", "lab/mvaema", "--trust-remote-code", "--revision", sha, "--image", str(image),
                     "--json", environment=environment)
    assert pinned.returncode == 0, pinned.stderr[-3000:]
    assert json.loads(pinned.stdout)["answer"]


@pytest.mark.parametrize(
    ("revision", "expected"),
    [(None, "add --revision <40-character commit sha>"), ("main", "--revision main: with --trust-remote-code")],
)
def test_remote_code_from_the_hub_needs_a_commit_sha(revision, expected, tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="pinned"):
        load_model_and_processor(ModelSource("lab/mvaema", trust_remote_code=True, revision=revision))
    argv = ["--model", "lab/mvaema", "--trust-remote-code", "--image", str(sixteen_bit_tiff(tmp_path / "a.tif"))]
    assert main(argv + (["--revision", revision] if revision else [])) == 2
    assert expected in capsys.readouterr().err


def test_folders_that_are_not_mvaema_models_are_named(tmp_path):
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match=r"bert: its config.json says model_type 'bert', not 'mvaema'"):
        load_model_and_processor(ModelSource(str(bert)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"empty: this folder has no config.json; give a folder saved by MVaEMa"):
        load_model_and_processor(ModelSource(str(empty)))
    with pytest.raises(ModelLoadError, match=r"missing/folder: folder not found"):
        load_model_and_processor(ModelSource(str(tmp_path / "missing" / "folder")))


# ------------------------------------------------------------------------------------------------ one image


def test_one_sixteen_bit_tiff_gets_an_answer_and_five_categories(saved_model, tmp_path, capsys):
    image = sixteen_bit_tiff(tmp_path / "deep.tif")
    assert main(["--model", str(saved_model), "--image", str(image), "--question", "What is shown?"]) == 0
    printed = capsys.readouterr().out
    ranked = printed.split("Top-5 categories:\n")[1].splitlines()
    assert len(ranked) == 5 and all(line.split()[-1] in CATEGORIES for line in ranked)
    # Self-captioned: asked after the caption of the category the ranking puts first, which is shown.
    assert printed.startswith(f"Caption (the model's top category): {caption_for_category(ranked[0].split()[-1])}\n"
                              "Q: What is shown?\nA: ")


def test_self_captioning_is_recorded_and_can_be_turned_off(saved_model, tmp_path, capsys):
    image = sixteen_bit_tiff(tmp_path / "deep.tif")
    arguments = ["--model", str(saved_model), "--image", str(image), "--question", "What is shown?", "--json"]
    assert main(arguments) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["caption_source"] == "own ranking"
    assert own["caption"] == caption_for_category(own["categories"][0]["label"])
    assert main([*arguments, "--no-self-caption"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["caption"] is None and bare["caption_source"] is None
    assert main([*arguments, "--caption", "This image depicts tips."]) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["caption"] == "This image depicts tips." and given["caption_source"] == "given"


def test_one_bad_image_is_named(saved_model, tmp_path, capsys):
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a picture")
    assert main(["--model", str(saved_model), "--image", str(fake)]) == 2
    assert f"error: {fake}: not an image PIL can identify" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- folders


def check_rows(rows: list[dict], expected: dict[str, str | None]) -> None:
    assert sorted(row["path"] for row in rows) == sorted(expected)
    for row in rows:
        problem = expected[row["path"]]
        if problem is None:
            assert row["error"] is None
            assert {key: len(answers) for key, answers in row["answers"].items()} == FAMILY_QUESTION_COUNTS
            assert all(isinstance(entry["answer"], str) for answers in row["answers"].values() for entry in answers)
            assert len(row["categories"]) == 5
            assert {entry["label"] for entry in row["categories"]} <= set(CATEGORIES)
            assert row["caption"] == caption_for_category(row["categories"][0]["label"])  # self-captioned
            scores = [entry["score"] for entry in row["categories"]]
            assert scores == sorted(scores, reverse=True)
        else:
            assert problem in row["error"] and row["answers"] is None and row["categories"] is None


def test_folder_run_answers_good_files_and_names_bad_ones(saved_model, tmp_path, capsys, caplog):
    expected = write_micrograph_folder(tmp_path / "images")
    out = tmp_path / "predictions.jsonl"
    argv = ["--model", str(saved_model), "--images", str(tmp_path / "images"), "--out", str(out),
            "--families", *FAMILIES, "--batch-size", "2"]
    assert main(argv) == 0
    rows = read_rows(out)
    check_rows(rows, expected)
    assert {row["path"]: row["category_folder"] for row in rows}["Nanowires/session_2/c.tif"] == "Nanowires"
    assert "3 images predicted, 2 bad files named and skipped" in capsys.readouterr().err
    assert "bad file Nanowires/fake.jpg: not an image" in caplog.text
    assert "Particles/notes.txt: not an image file" in caplog.text and ".hidden" not in caplog.text


def test_killed_run_resumes_with_every_image_exactly_once(saved_model, tmp_path, capsys, caplog):
    expected = write_micrograph_folder(tmp_path / "images")
    out = tmp_path / "predictions.jsonl"
    argv = ["--model", str(saved_model), "--images", str(tmp_path / "images"), "--out", str(out),
            "--families", *FAMILIES, "--batch-size", "2"]
    assert main(argv) == 0
    lines = out.read_text().splitlines(keepends=True)
    kept = "".join(lines[:2])
    out.write_text(kept + lines[2][: len(lines[2]) // 2])  # a kill in the middle of the third line
    capsys.readouterr()
    assert main(argv) == 0
    assert out.read_text().startswith(kept)
    check_rows(read_rows(out), expected)
    assert "2 already there (of 5 found)" in capsys.readouterr().err
    assert "removing an incomplete last line" in caplog.text
    assert main(argv) == 0
    check_rows(read_rows(out), expected)
    assert "0 images predicted, 0 bad files named and skipped, 5 already there" in capsys.readouterr().err


def test_a_broken_finished_line_stops_the_run_and_keeps_the_file(saved_model, tmp_path, capsys):
    write_micrograph_folder(tmp_path / "images")
    out = tmp_path / "predictions.jsonl"
    content = '{"path": "Particles/a.jpg", "error": null}\nnot json\n'
    out.write_text(content)
    argv = ["--model", str(saved_model), "--images", str(tmp_path / "images"), "--out", str(out)]
    assert main(argv) == 2
    assert f"--out {out}: line 2 is not a prediction row" in capsys.readouterr().err
    assert out.read_text() == content


def test_a_folder_without_categories_is_walked_whole(saved_model, tmp_path):
    images = tmp_path / "flat"
    (images / "day_2").mkdir(parents=True)
    sixteen_bit_tiff(images / "top.tif")
    sixteen_bit_tiff(images / "day_2" / "deep.tiff")
    sixteen_bit_tiff(images / "day_2" / ".hidden.tif")
    out = tmp_path / "predictions.jsonl"
    assert main(["--model", str(saved_model), "--images", str(images), "--out", str(out), "--families", "basics"]) == 0
    rows = read_rows(out)
    assert [(row["path"], row["category_folder"], row["error"]) for row in rows] == [
        ("day_2/deep.tiff", None, None),
        ("top.tif", None, None),
    ]
    assert list(rows[0]["answers"]) == ["basics"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--families", "basics", "colour"], "--families colour: unknown; choose from basics"),
        (["--batch-size", "0"], "argument --batch-size: 0 is not a positive whole number"),
        ([], "--images needs --out FILE.jsonl"),
    ],
)
def test_bad_arguments_are_named(extra, message, tmp_path, capsys):
    argv = ["--model", str(tmp_path), "--images", str(tmp_path)] + (extra if extra else [])
    if extra:
        argv += ["--out", str(tmp_path / "out.jsonl")]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- the output file


def folder_argv(saved_model: Path, images: Path, out: Path) -> list[str]:
    return ["--model", str(saved_model), "--images", str(images), "--out", str(out), "--families", "basics"]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 7).save(buffer, format="PNG")
    return buffer.getvalue() + b"\nafter the last newline"


@pytest.mark.parametrize(
    "content",
    [pytest.param(b"sample,diameter\nA,12\nB,14", id="csv"), pytest.param(None, id="png"),
     pytest.param("safetensors", id="safetensors")],
)
def test_an_out_file_that_is_not_a_prediction_jsonl_is_refused_untouched(content, saved_model, tmp_path, capsys):
    write_micrograph_folder(tmp_path / "images")
    out = tmp_path / "existing"
    if content == "safetensors":
        content = (saved_model / "model.safetensors").read_bytes()
    out.write_bytes(png_bytes() if content is None else content)
    before = out.read_bytes()
    assert main(folder_argv(saved_model, tmp_path / "images", out)) == 2
    assert f"--out {out}: line 1 is not a prediction row" in capsys.readouterr().err
    assert out.read_bytes() == before


def plant_symlink(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("export PATH\n")
    (tmp_path / "predictions.jsonl").symlink_to(tmp_path / "home" / ".bashrc")
    return tmp_path / "predictions.jsonl"


def plant_dangling_symlink(tmp_path: Path) -> Path:
    (tmp_path / "predictions.jsonl").symlink_to(tmp_path / "home" / ".profile")
    return tmp_path / "predictions.jsonl"


def plant_folder(tmp_path: Path) -> Path:
    (tmp_path / "predictions.jsonl").mkdir()
    return tmp_path / "predictions.jsonl"


@pytest.mark.parametrize(
    ("plant", "problem"),
    [
        (plant_symlink, "is a symbolic link"),
        (plant_dangling_symlink, "is a symbolic link"),
        (plant_folder, "is a folder"),
        (lambda tmp_path: tmp_path / "images" / "Particles" / "predictions.jsonl", "lies inside --images"),
        (lambda tmp_path: tmp_path / "images" / "predictions.jsonl", "lies inside --images"),
    ],
)
def test_an_out_that_is_a_link_a_folder_or_inside_the_images_is_refused(plant, problem, saved_model, tmp_path,
                                                                         capsys):
    write_micrograph_folder(tmp_path / "images")
    out = plant(tmp_path)
    files_before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert main(folder_argv(saved_model, tmp_path / "images", out)) == 2
    assert f"error: --out {out}: {problem}" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == files_before


def test_a_deeply_nested_output_line_is_named_not_a_recursion_error(saved_model, tmp_path, capsys):
    write_micrograph_folder(tmp_path / "images")
    out = tmp_path / "predictions.jsonl"
    out.write_text('{"path": "Particles/a.jpg", "error": null}\n' + "[" * 200_000 + "]" * 200_000 + "\n")
    assert main(folder_argv(saved_model, tmp_path / "images", out)) == 2
    assert f"--out {out}: line 2 is not a prediction row (nested too deeply)" in capsys.readouterr().err


@pytest.mark.parametrize("broken", ["processor_config.json", "tokenizer.json", "config.json"])
def test_an_invalid_model_json_file_is_named_in_one_line(broken, saved_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(saved_model, model)
    (model / broken).write_text('{"image_processor": {"size": 224')
    result = run_cli("--model", str(model), "--image", str(sixteen_bit_tiff(tmp_path / "deep.tif")))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --model {model}: {broken} is not valid JSON (")
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------------------- names and layout


def test_an_image_name_that_is_not_utf8_is_stored_losslessly_with_its_batch_mate(saved_model, tmp_path, capsys):
    images = tmp_path / "images"
    (images / "Particles").mkdir(parents=True)
    good, odd = micrographs(2)
    good.save(images / "Particles" / "a.jpg")
    with open(os.fsencode(images / "Particles") + b"/Probe_\xfc.jpg", "wb") as handle:
        odd.save(handle, format="JPEG")
    out = tmp_path / "predictions.jsonl"
    argv = folder_argv(saved_model, images, out) + ["--batch-size", "2"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    assert sorted(os.fsencode(row["path"]) for row in rows) == [b"Particles/Probe_\xfc.jpg", b"Particles/a.jpg"]
    assert all(row["error"] is None and row["category_folder"] == "Particles" for row in rows)
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 images predicted, 0 bad files named and skipped, 2 already there" in capsys.readouterr().err


def test_the_package_own_files_beside_the_categories_keep_the_category_layout(saved_model, tmp_path):
    write_micrograph_folder(tmp_path / "images")
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    assert main(folder_argv(saved_model, tmp_path / "images", first)) == 0
    shutil.copy(first, tmp_path / "images" / "predictions.jsonl")  # where an older version let a run write it
    (tmp_path / "images" / "teacher_cache.jsonl").write_text("")
    assert main(folder_argv(saved_model, tmp_path / "images", second)) == 0
    layout = {row["path"]: row["category_folder"] for row in read_rows(first)}
    assert {row["path"]: row["category_folder"] for row in read_rows(second)} == layout
    assert layout["Nanowires/session_2/c.tif"] == "Nanowires"


@pytest.mark.skipif(not PROC_STATUS.exists(), reason="peak memory is read from Linux's /proc/self")
def test_a_batch_of_large_sixteen_bit_pngs_is_predicted_in_a_few_hundred_megabytes(saved_model, tmp_path, capsys):
    """Small files that decode large: two copies of a 200 KB, 9000 x 9000 px PNG in one batch."""
    (tmp_path / "images").mkdir()
    large_sixteen_bit_png(tmp_path / "images" / "a.png")
    shutil.copy(tmp_path / "images" / "a.png", tmp_path / "images" / "b.png")
    argv = folder_argv(saved_model, tmp_path / "images", tmp_path / "predictions.jsonl") + ["--batch-size", "2"]
    added = peak_mib_added_by(lambda: main(argv))
    assert "2 images predicted, 0 bad files" in capsys.readouterr().err
    assert added < 400  # decoded whole in float64 and kept at full size, they took gigabytes
