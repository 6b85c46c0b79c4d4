"""The synthetic corpus: layout, determinism, complete teacher records, and answers grounded in the image."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_builder.images import open_micrograph
from dataset_builder.question_families import (
    CLASSIFICATION_QUESTION,
    PROMPT_VERSION,
    QUESTION_FAMILIES,
    SEM_CATEGORIES,
    QuestionFamily,
    category_answer_prefix,
    family_by_key,
)
from dataset_builder.synthetic import (
    DATA_BAR_SHARE,
    IMAGE_WIDTH,
    SUBTYPES,
    TEACHER_NAME,
    answer_family,
    draw_micrograph,
    format_length,
    generate_synthetic_corpus,
    grounded_records,
    main,
    sample_acquisition,
)
from dataset_builder.teacher_cache import TeacherCache, image_content_id

PER_CATEGORY = 2
SEED = 3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_synthetic_corpus(tmp_path_factory.mktemp("synthetic"), PER_CATEGORY, SEED)


def _image_files(image_root: Path) -> list[Path]:
    return sorted(image_root.rglob("*.jpg"))


def _digests(image_root: Path) -> dict[str, str]:
    return {
        path.relative_to(image_root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in _image_files(image_root)
    }


def _records_without_timestamps(cache_path: Path) -> list[dict]:
    return [
        {key: value for key, value in asdict(record).items() if key != "created_at"}
        for record in TeacherCache(cache_path).records()
    ]


def _words(text: str) -> int:
    return len(text.split())


def _has_data_bar(pixels: np.ndarray) -> bool:
    """The data bar ends in a noise-free band of its paper grey (10 dark, 225 bright); a noisy specimen never does."""
    bottom = pixels[-12:].astype(int)
    paper = np.bincount(bottom.ravel(), minlength=256).argmax()
    return min(abs(paper - 10), abs(paper - 225)) <= 3 and float(np.mean(np.abs(bottom - paper) <= 3)) > 0.95


def test_layout_sizes_and_format(corpus):
    files = _image_files(corpus.image_root)
    assert {path.parent.name for path in files} == set(SEM_CATEGORIES)
    assert corpus.counts == dict.fromkeys(SEM_CATEGORIES, PER_CATEGORY)
    assert len(files) == corpus.images_written == PER_CATEGORY * len(SEM_CATEGORIES)
    for path in files:
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (1024, 768))
        pixels = np.asarray(open_micrograph(path)).astype(int)
        # SEM images are greyscale saved as RGB: the channels agree up to JPEG rounding.
        assert np.abs(pixels[..., 0] - pixels[..., 2]).max() <= 3
        assert pixels.std() > 2, f"{path} is blank"


def test_data_bar_share_matches_the_real_dataset():
    draws = {
        category: [sample_acquisition(category, np.random.default_rng([1, index]))[2] for index in range(400)]
        for category in SEM_CATEGORIES
    }
    shares = {category: np.mean([bar is not None for bar in bars]) for category, bars in draws.items()}
    assert 0.55 <= np.mean(list(shares.values())) <= 0.65
    for category, share in shares.items():
        assert abs(share - DATA_BAR_SHARE[category]) < 0.08, category
    assert max(shares.values()) - min(shares.values()) > 0.15, "per-category shares should differ, as in the real data"
    bars = [bar for bars in draws.values() for bar in bars if bar is not None]
    assert all(663 <= bar.top_row <= 700 for bar in bars)
    assert {bar.background for bar in bars} == {"dark", "bright"}


def test_data_bar_pixels_agree_with_the_answers(corpus):
    records = TeacherCache(corpus.cache_path).latest_by_key().values()
    labels_answer = {
        record.image_path: record.answers[1] for record in records if record.family == "composition_and_elements"
    }
    seen = set()
    for path in _image_files(corpus.image_root):
        has_bar = _has_data_bar(np.asarray(Image.open(path).convert("L")))
        answer = labels_answer[path.relative_to(corpus.image_root).as_posix()]
        assert ("data bar" in answer) == has_bar, (path, answer)
        seen.add(has_bar)
    assert seen == {True, False}


def test_same_seed_gives_the_same_bytes_with_any_number_of_workers(corpus, tmp_path):
    again = generate_synthetic_corpus(tmp_path / "again", PER_CATEGORY, SEED, workers=2)
    assert _digests(again.image_root) == _digests(corpus.image_root)
    assert _records_without_timestamps(again.cache_path) == _records_without_timestamps(corpus.cache_path)
    other = generate_synthetic_corpus(tmp_path / "other", 1, SEED + 1, categories=["Nanowires"])
    assert set(_digests(other.image_root).values()).isdisjoint(_digests(corpus.image_root).values())


def test_teacher_records_are_valid_and_complete(corpus):
    records, report = TeacherCache(corpus.cache_path).read()
    assert report.bad_lines == []
    assert len(records) == corpus.records_written == len(_image_files(corpus.image_root)) * len(QUESTION_FAMILIES)
    by_image = defaultdict(dict)
    for record in records:
        by_image[record.image_path][record.family] = record
        family = family_by_key(record.family)
        assert record.status == "ok" and record.error is None
        assert (record.teacher, record.prompt_version, record.usage, record.cost_usd) == (
            TEACHER_NAME,
            PROMPT_VERSION,
            {},
            0.0,
        )
        assert record.questions == list(family.questions)
        assert len(record.answers) == len(record.questions)
        assert record.category == record.image_path.split("/")[0]
        for answer in record.answers:
            assert 8 <= _words(answer) <= 40, answer
    for image_path, families in by_image.items():
        assert set(families) == {family.key for family in QUESTION_FAMILIES}
        assert {record.image_id for record in families.values()} == {image_content_id(corpus.image_root / image_path)}
        basics = families["basics"]
        classification = basics.answers[basics.questions.index(CLASSIFICATION_QUESTION)]
        assert classification.startswith(category_answer_prefix(basics.category))


def test_answers_vary_between_images_of_a_category(corpus):
    answers = defaultdict(list)
    for record in TeacherCache(corpus.cache_path).records():
        answers[record.category].append(tuple(record.answers))
    for category, per_family in answers.items():
        first, second = per_family[: len(QUESTION_FAMILIES)], per_family[len(QUESTION_FAMILIES) :]
        assert first != second, category
    by_question = defaultdict(set)
    for record in TeacherCache(corpus.cache_path).records():
        for question, answer in zip(record.questions, record.answers):
            by_question[question].add(answer)
    assert all(len(distinct) > 3 for distinct in by_question.values())


def _scene_with_bar(category, subtype, want_bar):
    for index in range(200):
        rng = np.random.default_rng([11, index])
        if (sample_acquisition(category, np.random.default_rng([11, index]), subtype)[2] is not None) == want_bar:
            return draw_micrograph(category, rng, subtype)
    raise AssertionError("no such draw")


def test_size_scale_and_settings_answers_follow_the_generator():
    image, scene = _scene_with_bar("Particles", "dispersed", want_bar=True)
    bar, morphology = scene.data_bar, scene.morphology
    rng = np.random.default_rng(0)
    size, distribution, _ = answer_family(scene, family_by_key("size_and_distribution"), rng)
    low, high = (format_length(pixels * scene.instrument.nm_per_pixel) for pixels in morphology.size_px)
    assert f"about {low} to {high}" in size
    assert (
        f"{morphology.count} visible" in distribution or f"about {float(f'{morphology.count:.2g}'):.0f}" in distribution
    )
    _, scale = answer_family(scene, family_by_key("basics"), rng)
    assert bar.scale_label in scale
    technique, _ = answer_family(scene, family_by_key("image_technique_and_modifications"), rng)
    assert bar.high_voltage_label in technique
    # The scale bar the answer quotes is drawn with the length it quotes: the longest ink run in the data bar.
    band = np.asarray(image.convert("L"))[bar.top_row :]
    ink = np.abs(band.astype(int) - int(np.median(band))) > 100
    longest = max(_longest_run(row) for row in ink)
    assert abs(longest - bar.scale_bar_pixels) <= 2


def _longest_run(row: np.ndarray) -> int:
    padded = np.concatenate([[0], row.astype(int), [0]])
    changes = np.flatnonzero(np.diff(padded))
    return int((changes[1::2] - changes[::2]).max()) if len(changes) else 0


def test_without_a_data_bar_sizes_are_relative_and_no_scale_is_claimed():
    _, scene = _scene_with_bar("Nanowires", "few", want_bar=False)
    rng = np.random.default_rng(0)
    _, scale = answer_family(scene, family_by_key("basics"), rng)
    assert "no scale bar" in scale.lower()
    size = answer_family(scene, family_by_key("size_and_distribution"), rng)[0]
    assert "% of the image width" in size and "nm" not in size and "µm" not in size
    widest = max(scene.morphology.size_px) / IMAGE_WIDTH * 100
    assert f"{float(f'{widest:.2g}'):g}%" in size


# SHA-256 prefixes of the raw pixels and of the grounded answers of one image per category, drawn from
# default_rng([2024, index]). A change here means the renderer or the teacher no longer reproduces existing
# corpora byte for byte; if that is intended, regenerate the corpora and these pins together.
PINNED_DRAWS = (
    ("Biological", "532017486b6b6857", "8882dbbfe2fa7663"),
    ("Fibres", "949a3873bef15e03", "7f090c117dbecee6"),
    ("Films_Coated_Surface", "6e77e42fc2532879", "6f14f9c21ff65731"),
    ("MEMS_devices_and_electrodes", "85b6c49226d78a3e", "dc79c61299c88147"),
    ("Nanowires", "8663199c1d1adddf", "1cbd8530dc8ee351"),
    ("Particles", "4f3428ab1c21ff60", "38810a2d93f33af7"),
    ("Patterned_surface", "dd5aebe36791a193", "992d760af2c8cb00"),
    ("Porous_Sponge", "54b5b3bcf7773c13", "be58740322304f13"),
    ("Powder", "b658cd12e83d0a75", "11c961570ec4beb6"),
    ("Tips", "a18a635dc5276788", "e9c7e17fee9b42a9"),
)


@pytest.mark.parametrize(
    ("index", "category", "pixels_sha", "answers_sha"), [(i, *pin) for i, pin in enumerate(PINNED_DRAWS)]
)
def test_pinned_draws_reproduce_the_same_pixels_and_answers(index, category, pixels_sha, answers_sha):
    image, scene = draw_micrograph(category, np.random.default_rng([2024, index]))
    records = grounded_records(scene, "id", f"{category}/x.jpg", np.random.default_rng(index))
    answers = json.dumps([record.answers for record in records])
    assert hashlib.sha256(image.tobytes()).hexdigest()[:16] == pixels_sha
    assert hashlib.sha256(answers.encode()).hexdigest()[:16] == answers_sha


@pytest.mark.parametrize("category", SEM_CATEGORIES)
def test_every_subtype_draws_and_answers_every_family(category):
    for index, subtype in enumerate(SUBTYPES[category]):
        image, scene = draw_micrograph(category, np.random.default_rng([5, index]), subtype.name)
        assert image.size == (1024, 768) and scene.subtype == subtype.name
        assert np.asarray(image).std() > 2, subtype.name
        for record in grounded_records(scene, "id", f"{category}/x.jpg", np.random.default_rng(index)):
            assert all(8 <= _words(answer) <= 40 for answer in record.answers), record.answers


def test_a_family_the_teacher_does_not_cover_is_named():
    family = QuestionFamily("basics", "Basics", ("Only one question?",))
    _, scene = draw_micrograph("Tips", np.random.default_rng(0))
    with pytest.raises(KeyError, match="grounded_teacher.py"):
        answer_family(scene, family, np.random.default_rng(0))


def test_cli_writes_and_resumes_in_process(tmp_path, capsys):
    arguments = ["--out", str(tmp_path), "--per-category", "1", "--seed", "5", "--categories", "Tips", "Powder"]
    assert main(arguments) == 0
    assert "2 images written (0 already complete)" in capsys.readouterr().out
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.jpg")) == [
        "images/Powder/s5_00000.jpg",
        "images/Tips/s5_00000.jpg",
    ]
    assert main(arguments) == 0
    assert "0 images written (2 already complete)" in capsys.readouterr().out
    assert len(TeacherCache(tmp_path / "teacher_cache.jsonl").records()) == 2 * len(QUESTION_FAMILIES)


def test_bad_arguments_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--per-category", "0"])
    assert exit_info.value.code == 2
    assert "per_category must be a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Nanotubes"):
        generate_synthetic_corpus(tmp_path, 1, 0, categories=["Nanotubes"])
    with pytest.raises(ValueError, match="sub-type 'spirals' of Tips"):
        draw_micrograph("Tips", np.random.default_rng(0), "spirals")
