"""The teacher cache: crash-safe appends, tolerant reads, and content ids that follow bytes, not names."""

import json

import pytest

from dataset_builder.question_families import family_by_key
from dataset_builder.teacher_cache import STATUS_FAILED, TeacherCache, TeacherRecord, image_content_id


def make_record(image_id="a" * 64, family="basics", status="ok", answers=("x", "y")):
    questions = list(family_by_key(family).questions)
    return TeacherRecord(image_id=image_id, image_path="Nanowires/a.jpg", category="Nanowires", family=family,
                         prompt_version="v", teacher="t", questions=questions,
                         answers=list(answers) if status == "ok" else [], status=status,
                         error=None if status == "ok" else "refused")


def test_cache_round_trip_and_completed_keys(tmp_path):
    cache = TeacherCache(tmp_path / "cache.jsonl")
    cache.append(make_record(family="basics"))
    cache.append(make_record(family="surface_characteristics", status="failed"))
    records, report = cache.read()
    assert [r.family for r in records] == ["basics", "surface_characteristics"]
    assert report.bad_lines == []
    assert cache.completed_keys() == {("a" * 64, "basics", "v", "t")}


def test_cut_off_last_line_is_reported_and_next_append_survives(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = TeacherCache(path)
    cache.append(make_record(family="basics"))
    with open(path, "ab") as handle:  # what a kill -9 in the middle of a write leaves behind
        handle.write(json.dumps(make_record(family="functional_features").__dict__)[:40].encode())
    cache.append(make_record(family="context_and_application"))
    records, report = cache.read()
    assert [r.family for r in records] == ["basics", "context_and_application"]
    assert len(report.bad_lines) == 1 and report.bad_lines[0][0] == 2


def test_latest_by_key_prefers_success_over_later_failure(tmp_path):
    cache = TeacherCache(tmp_path / "cache.jsonl")
    cache.append(make_record(answers=("first", "one")))
    cache.append(make_record(status="failed"))
    cache.append(make_record(answers=("second", "two")))
    (record,) = cache.latest_by_key().values()
    assert record.answers == ["second", "two"]
    cache.append(make_record(status="failed"))
    (record,) = cache.latest_by_key().values()
    assert record.status != STATUS_FAILED and record.answers == ["second", "two"]


def test_record_rejects_answer_count_mismatch():
    with pytest.raises(ValueError, match="2 questions but 1 answers"):
        make_record(answers=("only one",))


def test_image_content_id_follows_bytes_not_names(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"micrograph")
    (tmp_path / "b.bin").write_bytes(b"micrograph")
    assert image_content_id(tmp_path / "a.bin") == image_content_id(tmp_path / "b.bin")


WRONGLY_TYPED_LINES = {
    "answers": lambda line: {**line, "answers": [5, 6]},
    "family": lambda line: {**line, "family": ["basics"]},
    "created_at": lambda line: {**line, "created_at": "yesterday"},
    "usage.input_tokens": lambda line: {**line, "usage": {"input_tokens": "many"}},
    "status": lambda line: {**line, "status": "maybe"},
}


def test_wrongly_typed_lines_are_skipped_and_named_by_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = TeacherCache(path)
    cache.append(make_record(family="basics"))
    good_line = json.loads(path.read_text())
    with open(path, "a") as handle:
        for make_bad in WRONGLY_TYPED_LINES.values():
            handle.write(json.dumps(make_bad(good_line)) + "\n")
        handle.write("[" * 200_000 + "\n")  # nested deeper than any parser's stack
        handle.write('"just a string"\n')
    cache.append(make_record(family="context_and_application"))

    records, report = cache.read()
    assert [record.family for record in records] == ["basics", "context_and_application"]
    assert [number for number, _ in report.bad_lines] == list(range(2, 2 + len(WRONGLY_TYPED_LINES) + 2))
    for (_, problem), field_name in zip(report.bad_lines, WRONGLY_TYPED_LINES):
        assert problem.startswith(field_name), problem
    assert "recursion limit" in report.bad_lines[-2][1]
    assert cache.completed_keys() == {("a" * 64, "basics", "v", "t"), ("a" * 64, "context_and_application", "v", "t")}
