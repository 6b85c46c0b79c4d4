"""Grounded facts: every synthetic micrograph's facts are kept beside the corpus, and the metric reads them back from
the teacher's own answers (score 1.0) but not from another micrograph's answers."""

import dataclasses
import shutil
from pathlib import Path

import evaluate
import numpy as np
import pytest

from dataset_builder.question_families import FAMILIES_BY_KEY, QUESTION_FAMILIES, SEM_CATEGORIES
from dataset_builder.synthetic import (
    FACTS_FILE_NAME,
    answer_family,
    draw_micrograph,
    generate_synthetic_corpus,
    load_synthetic_facts,
)
from dataset_builder.teacher_cache import TeacherCache, image_content_id
from metrics.grounded_facts.grounded_facts import (
    BOUNDARY_CUES,
    CONTACT_CUES,
    DETECTOR_CUES,
    DISTRIBUTION_CUES,
    LEFT_OUT,
    GroundedFacts,
    count_is_true,
    extent_is_true,
    first_named,
    stated_extents,
    stated_high_voltage,
    stated_magnification,
    stated_scale_bar,
)

PER_CATEGORY = 3
SEED = 5
KEPT_FAMILIES = {family.key for family in QUESTION_FAMILIES} - set(LEFT_OUT)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_synthetic_corpus(tmp_path_factory.mktemp("synthetic"), PER_CATEGORY, SEED)


@pytest.fixture(scope="module")
def teacher_rows(corpus):
    """(answer, image_id, category, family, question) of every cached QA pair, as the built dataset's rows hold them."""
    return [
        (answer, record.image_id, record.category, record.family, question)
        for record in TeacherCache(corpus.cache_path).records()
        for question, answer in zip(record.questions, record.answers, strict=True)
    ]


def score(rows, facts_of) -> dict:
    return GroundedFacts().compute(
        predictions=[answer for answer, *_ in rows],
        references=[facts_of(row) for row in rows],
        families=[family for *_, family, _ in rows],
        questions=[question for *_, question in rows],
    )


def test_facts_are_kept_for_every_image_and_join_the_answers_by_image_id(corpus):
    facts = load_synthetic_facts(corpus.cache_path.parent)
    images = {
        image_content_id(path): path.relative_to(corpus.image_root).as_posix()
        for path in corpus.image_root.rglob("*.jpg")
    }
    assert corpus.facts_path == corpus.cache_path.parent / FACTS_FILE_NAME
    assert len(facts) == len(images) == PER_CATEGORY * len(SEM_CATEGORIES)
    assert {image_id: entry["image_path"] for image_id, entry in facts.items()} == images
    assert {record.image_id for record in TeacherCache(corpus.cache_path).records()} == set(facts)


def test_a_rerun_completes_missing_or_cut_off_facts_without_touching_images_or_answers(corpus, tmp_path):
    out = tmp_path / "corpus"
    shutil.copytree(corpus.cache_path.parent, out)
    facts_file = out / FACTS_FILE_NAME
    complete = facts_file.read_bytes()
    cache = (out / corpus.cache_path.name).read_bytes()

    generate_synthetic_corpus(out, PER_CATEGORY, SEED)
    assert facts_file.read_bytes() == complete  # nothing to add: no duplicate lines

    lines = complete.splitlines(keepends=True)
    facts_file.write_bytes(b"".join(lines[:7]) + lines[7][:40])  # a crash mid-line, 23 images without facts
    rerun = generate_synthetic_corpus(out, PER_CATEGORY, SEED)
    assert rerun.images_written == 0
    assert load_synthetic_facts(out) == load_synthetic_facts(corpus.cache_path.parent)

    facts_file.unlink()  # a corpus generated before facts were kept
    generate_synthetic_corpus(out, PER_CATEGORY, SEED, workers=2)
    assert facts_file.read_bytes() == complete
    assert (out / corpus.cache_path.name).read_bytes() == cache


def test_teacher_answers_score_one_on_every_kept_family(corpus, teacher_rows):
    facts = load_synthetic_facts(corpus.cache_path.parent)
    results = score(teacher_rows, lambda row: facts[row[1]])
    assert set(results["families"]) == KEPT_FAMILIES
    assert set(results["left_out"]) == {family.key for family in QUESTION_FAMILIES} - KEPT_FAMILIES
    for family, result in results["families"].items():
        assert result["accuracy"] == 1.0, (family, result["per_fact"])
        assert result["answers_stating_facts"] >= PER_CATEGORY * len(SEM_CATEGORIES), family
    assert results["accuracy"] == 1.0


def test_answers_of_another_micrograph_score_clearly_lower(corpus, teacher_rows):
    facts = load_synthetic_facts(corpus.cache_path.parent)
    by_path = {entry["image_path"]: entry for entry in facts.values()}

    def next_category_facts(row):
        # The same index of the next category: another micrograph, sub-type, size and data bar.
        category = SEM_CATEGORIES[(SEM_CATEGORIES.index(row[2]) + 1) % len(SEM_CATEGORIES)]
        return by_path[facts[row[1]]["image_path"].replace(row[2], category)]

    results = score(teacher_rows, next_category_facts)
    assert results["accuracy"] < 0.4
    for family, result in results["families"].items():
        assert result["accuracy"] < 0.8, (family, result["per_fact"])


def any_facts(corpus) -> dict:
    return next(iter(load_synthetic_facts(corpus.cache_path.parent).values()))


def test_left_out_families_are_not_scored(corpus):
    family = FAMILIES_BY_KEY["surface_characteristics"]
    results = GroundedFacts().compute(
        predictions=["No obvious defects, pores or impurities are visible."],
        references=[any_facts(corpus)],
        families=[family.key],
        questions=[family.questions[1]],
    )
    assert results["answers"] == 0 and results["accuracy"] is None and results["families"] == {}
    assert "surface_characteristics" in results["left_out"]


@pytest.mark.parametrize(
    ("field", "family", "question", "cues", "values"),
    [
        ("distribution", "size_and_distribution", 1, DISTRIBUTION_CUES, DISTRIBUTION_CUES),
        ("contact", "interactions_and_boundaries", 0, CONTACT_CUES, CONTACT_CUES),
        ("boundaries", "interactions_and_boundaries", 1, BOUNDARY_CUES, BOUNDARY_CUES),
    ],
)
def test_every_phrasing_of_a_named_value_reads_back_as_that_value(field, family, question, cues, values):
    _, scene = draw_micrograph("Powder", np.random.default_rng(0))
    for value in values:
        changed = dataclasses.replace(scene, morphology=dataclasses.replace(scene.morphology, **{field: value}))
        for seed in range(12):  # enough draws to meet every phrasing of the answer
            answer = answer_family(changed, FAMILIES_BY_KEY[family], np.random.default_rng(seed))[question]
            assert first_named(answer, cues) == value, answer


def test_every_detector_reads_back_from_the_technique_answer():
    scene = next(
        scene for seed in range(20) if (scene := draw_micrograph("Tips", np.random.default_rng(seed))[1]).data_bar
    )
    for detector in DETECTOR_CUES:
        changed = dataclasses.replace(scene, data_bar=dataclasses.replace(scene.data_bar, detector=detector))
        for seed in range(8):
            answer = answer_family(
                changed, FAMILIES_BY_KEY["image_technique_and_modifications"], np.random.default_rng(seed)
            )[0]
            assert first_named(answer, DETECTOR_CUES) == detector, answer


@pytest.mark.parametrize("text", ["x5,000", "x 5,000", "5,000x", "5000 X", "5.00 kx", "×5000", "magnification 5.0 kX."])
def test_magnification_is_read_in_the_usual_notations(text):
    assert stated_magnification(f"The data bar lists {text}") == 5000


def test_data_bar_numbers_and_sizes_are_read_with_their_units():
    assert stated_high_voltage("at 5.00 kV.") == stated_high_voltage("5 kv") == 5.0
    assert stated_scale_bar("a 2 um scale bar") == stated_scale_bar("The scale bar reads 2 µm over 230 px") == 2000.0
    assert stated_magnification("1024x768 pixels") is None
    assert stated_extents("The wire diameter is about 850 nm to 1.2 µm; length about 3-4 um; pitch about 2 mm.") == {
        "feature_size": ("nm", 850.0, 1200.0),
        "length": ("nm", 3000.0, 4000.0),
        "pitch": ("nm", 2e6, 2e6),
    }
    assert stated_extents("The edge length is about 5.3-8.1% of the image width") == {"feature_size": ("%", 5.3, 8.1)}


def test_sizes_count_within_a_factor_1_5_and_counts_within_25_percent():
    facts = {"field_width_nm": 1000.0}
    assert extent_is_true(("nm", 150.0, 150.0), [100.0, 100.0], facts)
    assert not extent_is_true(("nm", 151.0, 151.0), [100.0, 100.0], facts)
    assert extent_is_true(("nm", 20.0, 67.0), [100.0, 120.0], facts)  # a range overlapping within the factor
    assert not extent_is_true(("nm", 20.0, 66.0), [100.0, 120.0], facts)
    assert extent_is_true(("%", 10.0, 10.0), [100.0, 100.0], facts) and not extent_is_true(
        ("%", 16.0, 16.0), [100.0], facts
    )
    assert not extent_is_true(("nm", 100.0, 100.0), None, facts)  # a length of a structure that has none
    assert count_is_true(125, 100) and count_is_true(75, 100) and not count_is_true(126, 100)
    assert not count_is_true(5, None)


def test_an_unknown_question_is_an_error(corpus):
    with pytest.raises(ValueError, match="not a sub-question"):
        GroundedFacts().compute(
            predictions=["Yes."], references=[any_facts(corpus)], families=["basics"], questions=["Why?"]
        )


def test_the_module_loads_with_evaluate_load(corpus, teacher_rows, tmp_path):
    metric = evaluate.load(str(Path(__file__).parents[1] / "metrics" / "grounded_facts"), cache_dir=str(tmp_path))
    facts = load_synthetic_facts(corpus.cache_path.parent)
    assert (
        metric.compute(
            predictions=[teacher_rows[0][0]],
            references=[facts[teacher_rows[0][1]]],
            families=[teacher_rows[0][3]],
            questions=[teacher_rows[0][4]],
        )["accuracy"]
        == 1.0
    )
