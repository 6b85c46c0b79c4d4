"""The shared foundations of the data side: the crash-safe teacher cache and safe image opening."""

import json

import numpy as np
import pytest
from PIL import Image

from dataset_builder.images import BadImageError, open_micrograph, to_rgb
from dataset_builder.question_families import QUESTION_FAMILIES, caption_for_category, family_by_key
from dataset_builder.teacher_cache import STATUS_FAILED, TeacherCache, TeacherRecord, image_content_id


def make_record(image_id="a" * 64, family="basics", status="ok", answers=("x", "y")):
    questions = list(family_by_key(family).questions)
    return TeacherRecord(image_id=image_id, image_path="Nanowires/a.jpg", category="Nanowires", family=family,
                         prompt_version="v", teacher="t", questions=questions,
                         answers=list(answers) if status == "ok" else [], status=status,
                         error=None if status == "ok" else "refused")


def test_question_families_cover_the_paper():
    assert len(QUESTION_FAMILIES) == 10
    assert sum(len(f.questions) for f in QUESTION_FAMILIES) == 22
    assert "nanowires" in caption_for_category("Nanowires")
    with pytest.raises(KeyError, match="unknown question family 'nope'"):
        family_by_key("nope")


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


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "I;16", "CMYK", "RGBA", "F"])
def test_every_mode_becomes_rgb(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(1000, 4000, (8, 8), dtype=np.uint16))
    elif mode == "F":
        image = Image.fromarray(rng.random((8, 8), dtype=np.float32))
    else:
        image = Image.new(mode, (8, 8))
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.size == (8, 8)


def test_sixteen_bit_is_stretched_not_darkened():
    values = np.linspace(1000, 4000, 64, dtype=np.uint16).reshape(8, 8)
    converted = np.asarray(to_rgb(Image.fromarray(values)))
    assert converted.min() == 0 and converted.max() == 255


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is a text file", "not an image"), (None, "corrupt or truncated")],
)
def test_bad_files_name_the_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content is None:
        Image.new("RGB", (64, 64), "white").save(path, "JPEG")
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as error:
        open_micrograph(path)
    assert str(path) in str(error.value)


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(path)
    with pytest.raises(BadImageError, match="decompression bomb|exceeds"):
        open_micrograph(path, max_pixels=50_000_000)
