"""SEMInstruct and mvaema-build-dataset on a tiny, deliberately messy image folder (everything in tmp_path)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import time
import zlib
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard
from PIL import Image, ImageFilter

from dataset_builder import build_cli, builder, prepared_corpus, publishing
from dataset_builder.builder import (
    BuildReport,
    SEMInstruct,
    category_names_for,
    inspect_image_folder,
    load_instruct_corpus,
    load_prepared_corpus,
    near_duplicate_clusters,
    qa_features,
    stratified_group_folds,
)
from dataset_builder.synthetic.grounded_teacher import TEACHER_NAME as GROUNDED_TEACHER_NAME
from dataset_builder.question_families import PROMPT_VERSION, QUESTION_FAMILIES, SEM_CATEGORIES, caption_for_category
from dataset_builder.teacher_cache import TeacherCache, TeacherRecord, image_content_id

BASICS, MORPHOLOGY = QUESTION_FAMILIES[0], QUESTION_FAMILIES[1]
TEACHER = "test-teacher/v1"


# ---------------------------------------------------------------------------------------------- image makers


def texture(seed: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    """A smooth random greyscale texture: distinct seeds give perceptual hashes far apart."""
    coarse = (np.random.default_rng(seed).random((12, 16)) * 255).astype(np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def png_bomb(path: Path, side: int = 20_000) -> Path:
    """A 1-bit PNG whose header claims side x side pixels; all-zero rows compress to a few tens of KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def record(path: Path, category: str, family=BASICS, **overrides) -> TeacherRecord:
    fields = dict(
        image_id=image_content_id(path),
        image_path=path.name,
        category=category,
        family=family.key,
        prompt_version=PROMPT_VERSION,
        teacher=TEACHER,
        questions=list(family.questions),
        answers=[f"{category} answer {index} about {path.name}" for index in range(len(family.questions))],
    )
    return TeacherRecord(**{**fields, **overrides})


# ---------------------------------------------------------------------------------------------- messy corpus


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Every format and failure the brief lists, plus a teacher cache with every kind of unusable record."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "images"
    near_original = texture(1, (256, 192)).convert("RGB")
    jpeg_bytes = io.BytesIO()
    texture(9).convert("RGB").save(jpeg_bytes, format="JPEG")
    good = {
        "Nanowires/original.jpg": save(near_original, root / "Nanowires/original.jpg", quality=95),
        "Nanowires/resaved.jpg": save(near_original, root / "Nanowires/resaved.jpg", quality=60),
        "Nanowires/resized.png": save(near_original.resize((240, 180)), root / "Nanowires/resized.png"),
        "Nanowires/palette.tif": save(texture(2).convert("RGB").quantize(64), root / "Nanowires/palette.tif"),
        "Nanowires/large.jpg": save(texture(3, (2048, 1536)).convert("RGB"), root / "Nanowires/large.jpg"),
        "Particles/grey16.tif": save(
            Image.fromarray((np.asarray(texture(4), dtype=np.uint16) * 16).astype(np.uint16)),
            root / "Particles/grey16.tif",
        ),
        "Particles/rgb.tif": save(texture(5).convert("RGB"), root / "Particles/rgb.tif"),
        "Particles/plain.png": save(texture(6), root / "Particles/plain.png"),
        "Particles/huge.jpg": save(texture(7, (3072, 2304)).convert("RGB"), root / "Particles/huge.jpg"),
        "Tips/one.jpg": save(texture(8).convert("RGB"), root / "Tips/one.jpg"),
        "Tips/two.jpg": save(texture(10).convert("RGB"), root / "Tips/two.jpg"),
        "Tips/unanswered.jpg": save(texture(11).convert("RGB"), root / "Tips/unanswered.jpg"),
    }
    assert Image.open(good["Particles/grey16.tif"]).mode.startswith("I;16")
    assert Image.open(good["Nanowires/palette.tif"]).mode == "P"
    (root / "Tips/zero.jpg").write_bytes(b"")
    (root / "Particles/truncated.jpg").write_bytes(jpeg_bytes.getvalue()[: len(jpeg_bytes.getvalue()) // 2])
    (root / "Nanowires/text.jpg").write_text("this is a text file, not a micrograph\n")
    png_bomb(root / "Tips/bomb.png")
    (root / "Tips/notes.txt").write_text("lab notes")
    (root / "stray.jpg").write_bytes(good["Tips/one.jpg"].read_bytes())
    shutil.copy(good["Tips/one.jpg"], root / "Tips/one_copy.jpg")
    bad_reasons = {
        "Tips/zero.jpg": "empty file",
        "Particles/truncated.jpg": "truncated",
        "Nanowires/text.jpg": "not an image PIL can identify",
        "Tips/bomb.png": "bomb",
        "Tips/notes.txt": "not an image file",
        "stray.jpg": "not inside a category folder",
    }

    cache = TeacherCache(base / "teacher_cache.jsonl")
    answered = {name: path for name, path in good.items() if name != "Tips/unanswered.jpg"}
    cache.append_many([record(path, name.split("/")[0]) for name, path in answered.items()])
    one, two = good["Tips/one.jpg"], good["Tips/two.jpg"]
    cache.append_many(
        [
            record(one, "Tips", MORPHOLOGY, answers=["old"] * 3, created_at=100.0),
            record(one, "Tips", MORPHOLOGY, answers=["new"] * 3, created_at=200.0),  # supersedes "old"
            record(two, "Tips", MORPHOLOGY, status="failed", answers=[], error="HTTP 500 after 6 retries"),
            record(two, "Tips", MORPHOLOGY, prompt_version="mvaema-cot-v0", answers=["v0"] * 3),
            record(
                two, "Nanowires", QUESTION_FAMILIES[2], answers=["mislabelled"] * len(QUESTION_FAMILIES[2].questions)
            ),
            record(one, "Tips", image_id="0" * 64, image_path="elsewhere/gone.jpg"),
        ]
    )
    with open(cache.path, "ab") as handle:
        handle.write(b'{"image_id": "abc", "image_path": "cut/off')  # a kill mid-write leaves half a line

    built = SEMInstruct(root, [cache.path], num_folds=3, seed=0, num_workers=2, cache_dir=base / "hf_cache")
    built.download_and_prepare()
    return SimpleNamespace(
        root=root,
        cache=cache,
        good=good,
        answered=answered,
        bad_reasons=bad_reasons,
        builder=built,
        dataset=built.as_dataset(split="train"),
        report=built.build_report,
        base=base,
    )


def stored_paths(dataset: datasets.Dataset) -> dict[str, str]:
    """image_id -> the file each row's image column points at (without decoding)."""
    raw = dataset.select_columns(["image_id", "image"]).cast_column("image", datasets.Image(decode=False))
    return {row["image_id"]: row["image"]["path"] for row in raw}


def test_every_good_image_is_used_and_every_bad_file_is_named(messy):
    report = messy.report
    skipped = {item["path"]: item["reason"] for item in report["skipped_files"]}
    assert skipped.keys() == messy.bad_reasons.keys()
    for name, reason in messy.bad_reasons.items():
        assert reason in skipped[name], (name, skipped[name])
    assert report["exact_duplicates"] == [{"path": "Tips/one_copy.jpg", "same_as": "Tips/one.jpg"}]
    assert report["images_used"] == len(messy.good)
    assert report["images_without_answers"] == ["Tips/unanswered.jpg"]

    used = set(messy.dataset["image_id"])
    assert used == {image_content_id(path) for path in messy.answered.values()}
    for path in stored_paths(messy.dataset).values():
        with Image.open(path) as image:
            image.load()


def test_sixteen_bit_tiff_is_stored_as_a_stretched_8bit_rendering(messy):
    grey16 = messy.good["Particles/grey16.tif"]
    stored = stored_paths(messy.dataset)[image_content_id(grey16)]
    assert stored != str(grey16) and stored.endswith(".png")
    pixels = np.asarray(Image.open(stored))
    # A plain convert("RGB") would clip these 12-bit values to white; the rendering spans the full range.
    assert pixels.min() < 30 and pixels.max() > 225
    assert messy.report["images_rendered_to_8bit"] == 1
    assert stored_paths(messy.dataset)[image_content_id(messy.good["Nanowires/palette.tif"])].endswith("palette.tif")


def test_rows_are_one_per_question_with_caption_and_provenance(messy):
    dataset = messy.dataset
    assert dataset.features == qa_features(SEM_CATEGORIES)
    rows = dataset.to_list()
    expected_rows = len(messy.answered) * len(BASICS.questions) + len(MORPHOLOGY.questions) + len(MORPHOLOGY.questions)
    assert len(rows) == expected_rows == messy.report["rows"]
    names = dataset.features["category"].names
    for row in rows:
        assert row["caption"] == caption_for_category(names[row["category"]])
        assert row["teacher"] == TEACHER
    one_id = image_content_id(messy.good["Tips/one.jpg"])
    morphology = [row for row in rows if row["image_id"] == one_id and row["family"] == MORPHOLOGY.key]
    assert [row["question"] for row in morphology] == list(MORPHOLOGY.questions)
    assert [row["answer"] for row in morphology] == ["new"] * 3  # the later record wins
    assert messy.report["rows_per_prompt_version"] == {PROMPT_VERSION: expected_rows - 3, "mvaema-cot-v0": 3}


def test_unusable_records_and_cut_off_lines_are_counted(messy):
    records = messy.report["records"]
    assert records == {
        "read": len(messy.answered) + 6,
        "used": len(messy.answered) + 2,
        "superseded": 1,
        "failed": 1,
        "unknown_image": 1,
        "other_prompt_version": 0,
        "category_mismatch": 1,
    }
    assert messy.report["unknown_image_examples"] == ["elsewhere/gone.jpg"]
    [cut_off] = messy.report["cut_off_cache_lines"]
    assert cut_off["line"] == len(messy.answered) + 7 and cut_off["cache"] == str(messy.cache.path.resolve())


def test_prompt_version_filter_keeps_one_version(messy):
    dataset = load_instruct_corpus(
        messy.root, messy.cache.path, num_folds=3, cache_dir=messy.base / "hf_cache", prompt_version=PROMPT_VERSION
    )
    assert set(dataset["prompt_version"]) == {PROMPT_VERSION}
    assert len(dataset) == messy.report["rows"] - 3


def test_near_duplicates_share_a_fold_and_classes_are_spread(messy):
    fold_of = dict(zip(messy.dataset["image_id"], messy.dataset["fold"], strict=True))
    copies = [messy.good[name] for name in ("Nanowires/original.jpg", "Nanowires/resaved.jpg", "Nanowires/resized.png")]
    assert len({fold_of[image_content_id(path)] for path in copies}) == 1
    assert messy.report["near_duplicate_clusters"] == 1
    assert messy.report["images_in_near_duplicate_clusters"] == 3
    # Tips has 3 usable images (3 groups) for 3 folds: one per fold.
    assert messy.report["images_per_category_and_fold"]["Tips"] == [1, 1, 1]
    assert messy.report["classes_with_fewer_groups_than_folds"] == {}


def test_parallel_inspection_matches_serial(messy):
    def inspect(num_workers):
        report = BuildReport("", [], 3, 0, None, 4)
        entries = inspect_image_folder(messy.root, messy.base / "store", report, num_workers)
        return [asdict(entry) for entry in entries], report.skipped_files

    assert inspect(1) == inspect(2)


# ---------------------------------------------------------------------------------------------- folds


def test_stratified_group_folds_balance_classes_and_never_split_a_group():
    labels = np.repeat([0, 1, 2], [30, 12, 6])
    groups = np.arange(len(labels))
    groups[[0, 1, 2, 40]] = 0  # one group spanning two classes
    folds = stratified_group_folds(labels, groups, num_folds=3, seed=0)
    assert len(set(folds[[0, 1, 2, 40]])) == 1
    for label in range(3):
        counts = np.bincount(folds[labels == label], minlength=3)
        assert counts.max() - counts.min() <= 2, (label, counts)
    assert not np.array_equal(folds, stratified_group_folds(labels, groups, num_folds=3, seed=1))


def test_class_with_fewer_groups_than_folds_lands_in_that_many_folds():
    labels = np.array([0] * 20 + [1])
    folds = stratified_group_folds(labels, np.arange(21), num_folds=5, seed=0)
    assert set(folds[:20]) == set(range(5))  # the rare class's single image is in one fold, others lack it
    with pytest.raises(ValueError, match="lower num_folds"):
        stratified_group_folds(np.array([0, 0, 1]), np.array([0, 0, 1]), num_folds=3, seed=0)


def test_near_duplicate_clusters_are_transitive_and_cross_blocks():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 5000, dtype=np.uint64)  # random 64-bit hashes are ~32 bits apart
    hashes[4990] = hashes[10] ^ np.uint64(0b111)  # distance 3, in different row blocks
    hashes[4991] = hashes[4990] ^ np.uint64(0b111 << 20)  # 3 from 4990, 6 from 10: joined through 4990
    hashes[20] = hashes[30] ^ np.uint64(0b11111)  # distance 5: not a near-duplicate
    clusters = near_duplicate_clusters(hashes, max_distance=4)
    assert clusters[10] == clusters[4990] == clusters[4991]
    assert clusters[20] != clusters[30]
    assert len(np.unique(clusters)) == 5000 - 2


def test_category_names_are_sem_order_or_sorted_folders(tmp_path):
    for name in ("Tips", "Biological"):
        (tmp_path / "sem" / name).mkdir(parents=True)
    for name in ("zinc", "alloy", ".hidden"):
        (tmp_path / "lab" / name).mkdir(parents=True)
    assert category_names_for(tmp_path / "sem") == SEM_CATEGORIES
    assert category_names_for(tmp_path / "lab") == ("alloy", "zinc")
    with pytest.raises(ValueError, match="No category sub-folder"):
        category_names_for(tmp_path / "sem" / "Tips")


# ---------------------------------------------------------------------------------------------- rebuilds


def small_corpus(base: Path) -> tuple[Path, TeacherCache]:
    root, cache = base / "images", TeacherCache(base / "cache.jsonl")
    for index, category in enumerate(["alloy", "alloy", "zinc", "zinc"]):
        path = save(texture(100 + index), root / category / f"{index}.png")
        cache.append(record(path, category))
    return root, cache


def test_changed_inputs_rebuild_and_unchanged_inputs_reuse(tmp_path, monkeypatch):
    root, cache = small_corpus(tmp_path)
    hf_cache = tmp_path / "hf_cache"
    first = load_instruct_corpus(root, cache.path, num_folds=2, cache_dir=hf_cache)
    assert first.features["category"].names == ["alloy", "zinc"]

    monkeypatch.setattr(builder, "inspect_image_folder", lambda *args: pytest.fail("rebuilt unchanged inputs"))
    assert len(load_instruct_corpus(root, cache.path, num_folds=2, cache_dir=hf_cache)) == len(first)
    monkeypatch.undo()

    time.sleep(0.01)  # distinct mtimes even on coarse-clock file systems
    new_image = save(texture(200), root / "zinc" / "new.png")
    cache.append(record(new_image, "zinc"))
    grown = load_instruct_corpus(root, cache.path, num_folds=2, cache_dir=hf_cache)
    assert image_content_id(new_image) in set(grown["image_id"])
    assert len(grown) == len(first) + len(BASICS.questions)

    moved = tmp_path / "moved_images"
    shutil.move(root, moved)
    after_move = load_instruct_corpus(moved, cache.path, num_folds=2, cache_dir=hf_cache)
    assert sorted(after_move["answer"]) == sorted(grown["answer"])  # matched by content, not by path


def test_missing_inputs_fail_with_the_path(tmp_path):
    root, cache = small_corpus(tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such_cache.jsonl"):
        SEMInstruct(root, [tmp_path / "no_such_cache.jsonl"], cache_dir=tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        SEMInstruct(tmp_path / "no_such_folder", [cache.path], cache_dir=tmp_path / "hf")


# ---------------------------------------------------------------------------------------------- CLI, card, Hub


@pytest.fixture(scope="module")
def cli_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    root, cache = base / "images", TeacherCache(base / "cache.jsonl")
    for index, category in enumerate(["Nanowires", "Nanowires", "Nanowires", "Tips", "Tips", "Tips"]):
        path = save(texture(300 + index).convert("RGB"), root / category / f"{index}.jpg")
        cache.append_many([record(path, category), record(path, category, MORPHOLOGY)])
    argv = ["--images", str(root), "--cache", str(cache.path), "--out", str(base / "out"), "--num-folds", "3"]
    argv += ["--cache-dir", str(base / "hf_cache")]
    assert build_cli.main(argv) == 0
    return SimpleNamespace(argv=argv, out=base / "out", base=base, root=root, cache=cache)


def test_cli_writes_parquet_configs_report_and_card(cli_build):
    out = cli_build.out
    report = json.loads((out / "build_report.json").read_text())
    assert report["rows"] == 6 * (len(BASICS.questions) + len(MORPHOLOGY.questions))

    card = DatasetCard.load(out / "README.md")
    metadata = card.data.to_dict()
    assert metadata["license"] == "cc-by-4.0"
    assert [config["config_name"] for config in metadata["configs"]] == ["qa", "images"]
    assert metadata["configs"][0]["data_files"] == [{"split": "train", "path": "qa/train-*.parquet"}]
    infos = {info["config_name"]: info for info in metadata["dataset_info"]}
    assert infos["qa"]["splits"][0]["num_examples"] == report["rows"]
    assert infos["images"]["splits"][0]["num_examples"] == 6
    assert TEACHER in card.text and PROMPT_VERSION in card.text and "Aversa" in card.text

    qa = datasets.load_dataset(str(out), "qa", split="train", cache_dir=str(cli_build.base / "read_cache"))
    images = datasets.load_dataset(str(out), "images", split="train", cache_dir=str(cli_build.base / "read_cache"))
    assert len(qa) == report["rows"] and "image" not in qa.column_names
    assert qa.features["category"].names == list(SEM_CATEGORIES)
    assert sorted(images["image_id"]) == sorted(set(qa["image_id"]))  # each image stored once
    assert images[0]["image"].size == (128, 96)


def test_load_prepared_corpus_restores_builder_rows(cli_build):
    prepared = load_prepared_corpus(cli_build.out, cache_dir=cli_build.base / "load_cache")
    built = load_instruct_corpus(
        cli_build.root, cli_build.cache.path, num_folds=3, cache_dir=cli_build.base / "hf_cache"
    )
    assert prepared.features == built.features
    assert prepared.remove_columns("image").to_list() == built.remove_columns("image").to_list()
    for image_id, path in stored_paths(prepared).items():
        assert image_content_id(path) == image_id  # the original file's bytes, extracted once


def test_load_prepared_corpus_offline_without_cached_copy_says_so(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_prepared_corpus("nobody/not-downloaded", cache_dir=tmp_path / "datasets")


class FakeHfApi:
    """Stands in for the Hub's network calls only; records what would have been sent."""

    calls: list[tuple[str, dict]] = []
    existing_repo_is_private = True

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def repo_info(self, repo_id, **kwargs):
        return SimpleNamespace(private=self.existing_repo_is_private)

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/datasets/{kwargs['repo_id']}/commit/0")


@pytest.fixture
def fake_hub(monkeypatch):
    FakeHfApi.calls = []
    FakeHfApi.existing_repo_is_private = True
    monkeypatch.setattr(publishing, "HfApi", FakeHfApi)
    return FakeHfApi


def test_push_is_private_by_default(cli_build, fake_hub):
    assert build_cli.main(cli_build.argv + ["--push-to-hub", "me/sem-instruct"]) == 0
    (create, created), (upload, uploaded) = fake_hub.calls
    assert create == "create_repo" and created == {
        "repo_id": "me/sem-instruct",
        "repo_type": "dataset",
        "private": True,
        "exist_ok": True,
    }
    assert upload == "upload_folder" and Path(uploaded["folder_path"]) == cli_build.out
    assert uploaded["repo_type"] == "dataset" and "README.md" in uploaded["allow_patterns"]
    assert "build_report.json" not in uploaded["allow_patterns"]  # holds local paths: stays local


def test_push_public_only_when_asked(cli_build, fake_hub):
    publishing.push_prepared_corpus(cli_build.out, "me/sem-instruct", public=True)
    assert fake_hub.calls[0][1]["private"] is False

    fake_hub.calls.clear()
    fake_hub.existing_repo_is_private = False
    with pytest.raises(PermissionError, match="public"):
        publishing.push_prepared_corpus(cli_build.out, "me/sem-instruct")
    assert [name for name, _ in fake_hub.calls] == ["create_repo"]


def test_cli_reports_bad_arguments(tmp_path, capsys):
    assert (
        build_cli.main(
            ["--images", str(tmp_path / "none"), "--cache", str(tmp_path / "c.jsonl"), "--out", str(tmp_path)]
        )
        == 1
    )
    assert "none" in capsys.readouterr().err


def test_nothing_usable_fails_with_the_reason(tmp_path):
    root, cache = small_corpus(tmp_path)
    stranger = TeacherCache(tmp_path / "other_folder_cache.jsonl")
    stranger.append(record(save(texture(999), tmp_path / "elsewhere" / "x.png"), "alloy"))
    with pytest.raises(ValueError, match="No QA pair"):
        load_instruct_corpus(root, stranger.path, num_folds=2, cache_dir=tmp_path / "hf")
    (tmp_path / "texts" / "alloy").mkdir(parents=True)
    (tmp_path / "texts" / "alloy" / "a.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="alloy/a.jpg: not an image PIL can identify"):
        load_instruct_corpus(tmp_path / "texts", cache.path, num_folds=2, cache_dir=tmp_path / "hf")


def test_card_licence_follows_the_image_source(cli_build):
    built = load_instruct_corpus(
        cli_build.root, cli_build.cache.path, num_folds=3, cache_dir=cli_build.base / "hf_cache"
    )
    image_rows, report = (
        prepared_corpus.unique_image_rows(built),
        json.loads((cli_build.out / "build_report.json").read_text()),
    )
    synthetic = built.remove_columns("image").map(lambda row: {"teacher": GROUNDED_TEACHER_NAME})
    card = publishing.build_dataset_card(synthetic, image_rows, report, "me/synthetic")
    assert card.data.license == "cc-by-4.0" and "synthetic" in card.data.tags
    assert "Aversa" not in card.text and "mvaema-synth" in card.text
    override = publishing.build_dataset_card(built.remove_columns("image"), image_rows, report, "me/x", "cc-by-nc-4.0")
    assert override.data.license == "cc-by-nc-4.0"
    assert publishing.image_source(["alloy", "zinc"], {TEACHER}) == "other"


# ---------------------------------------------------------------------------------------------- hostile inputs


def tampered_corpus(cli_build, tmp_path: Path, image_id: str, file_name: str | None = None, data: bytes | None = None):
    """A copy of the CLI's corpus whose first image row carries `image_id` (and optionally another name or bytes)."""
    import pyarrow.parquet as pq

    corpus = tmp_path / "corpus"
    shutil.copytree(cli_build.out, corpus)
    [shard] = sorted((corpus / "images").glob("*.parquet"))
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["image_id"] = image_id
    rows[0]["image"] = {"bytes": data or rows[0]["image"]["bytes"], "path": file_name or rows[0]["image"]["path"]}
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), shard)
    return corpus, rows[0]["image"]["bytes"]


@pytest.mark.parametrize(
    "make_id, file_name, data, problem",
    [
        (lambda tmp, good: "../../x", None, None, "is not an image id"),
        (lambda tmp, good: str(tmp / "escaped"), None, None, "is not an image id"),
        (lambda tmp, good: "0" * 64, None, None, "SHA-256 is"),
        (lambda tmp, good: good, "evil.pth", None, "names a '.pth' file"),
    ],
    ids=["relative-escape", "absolute-path", "wrong-hash", "pth-suffix"],
)
def test_load_prepared_corpus_refuses_hostile_image_rows(cli_build, tmp_path, make_id, file_name, data, problem):
    import hashlib

    first_bytes = tampered_corpus(cli_build, tmp_path / "probe", "0" * 64)[1]
    image_id = make_id(tmp_path, hashlib.sha256(first_bytes).hexdigest())
    corpus, _ = tampered_corpus(cli_build, tmp_path, image_id, file_name, data)
    cache_dir = tmp_path / "datasets"
    with pytest.raises(ValueError, match=problem) as error:
        load_prepared_corpus(corpus, cache_dir=cache_dir)
    assert "row 0" in str(error.value) and repr(image_id) in str(error.value)
    store = cache_dir / "sem_instruct_images"
    assert [path.name for path in store.iterdir()] == []  # the bad row is the first: nothing was written
    escaped = [path for path in tmp_path.rglob("*") if path.name.startswith(("x.", "escaped")) or path.suffix == ".pth"]
    assert escaped == []


def test_load_prepared_corpus_checks_every_row_of_a_good_corpus(cli_build, tmp_path):
    prepared = load_prepared_corpus(cli_build.out, cache_dir=tmp_path / "datasets")
    store = tmp_path / "datasets" / "sem_instruct_images"
    assert {path.name.split(".")[0] for path in store.iterdir()} == set(prepared["image_id"])


def test_cli_refuses_an_output_folder_that_holds_or_is_inside_its_images(tmp_path, capsys):
    root = tmp_path / "synthetic"
    images, cache = root / "images", TeacherCache(tmp_path / "cache.jsonl")
    for index, category in enumerate(["Tips", "Tips", "Particles", "Particles"]):
        cache.append(record(save(texture(400 + index), images / category / f"{index}.png"), category))
    before = {path: path.read_bytes() for path in images.rglob("*.png")}
    for out in (root, images / "Tips" / "corpus", images):
        argv = ["--images", str(images), "--cache", str(cache.path), "--out", str(out), "--num-folds", "2"]
        assert build_cli.main(argv + ["--cache-dir", str(tmp_path / "hf")]) == 1
        error = capsys.readouterr().err
        assert f"--out {out}" in error and f"--images {images}" in error and "overlap" in error
    assert {path: path.read_bytes() for path in images.rglob("*.png")} == before
    assert sorted(path.name for path in root.iterdir()) == ["images"]


def argv_with_out(argv: list[str], out: Path) -> list[str]:
    at = argv.index("--out")
    return [*argv[:at], "--out", str(out), *argv[at + 2 :]]


def test_cli_never_replaces_files_it_did_not_write(cli_build, tmp_path, capsys):
    out = tmp_path / "mine"
    shutil.copytree(cli_build.out, out)
    (out / "notes.txt").write_text("a lab's notes")
    argv = argv_with_out(cli_build.argv, out)
    assert build_cli.main(argv) == 1
    assert "notes.txt" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "a lab's notes" and (out / "qa").is_dir()


def test_cli_failure_keeps_the_previous_output_and_leaves_no_temporary_folder(cli_build, tmp_path, monkeypatch):
    out = tmp_path / "corpus"
    shutil.copytree(cli_build.out, out)
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}

    def failing_card(*args, **kwargs):
        raise ValueError("card template broken")

    monkeypatch.setattr(build_cli, "build_dataset_card", failing_card)
    argv = argv_with_out(cli_build.argv, out)
    assert build_cli.main(argv) == 1
    assert {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]
    monkeypatch.undo()
    assert build_cli.main(argv) == 0  # an output folder the command wrote is replaced whole
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]
    assert f'load_prepared_corpus("{out}")' in (out / "README.md").read_text()  # the new card, not the old


def test_threads_storing_identical_bytes_never_collide(tmp_path):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from dataset_builder.image_store import store_once

    barrier = threading.Barrier(16)
    target = tmp_path / ("a" * 64 + ".png")

    def make_bytes():
        time.sleep(0.02)  # every thread is past the "exists?" check before the first one renames
        return b"identical rendering"

    def store(_):
        barrier.wait()
        return store_once(target, make_bytes)

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(store, range(16)))
    assert results == [str(target)] * 16
    assert target.read_bytes() == b"identical rendering"
    assert [path.name for path in tmp_path.iterdir()] == [target.name]  # no temp file left behind


def test_fewer_images_per_category_than_folds_names_classes_counts_and_a_working_fold_count(tmp_path):
    root, cache = small_corpus(tmp_path)  # alloy: 2 images, zinc: 2 images
    before = {path: path.read_bytes() for path in root.rglob("*.png")}
    with pytest.raises(ValueError, match=r"\(alloy: 2, zinc: 2\).*at most 2") as error:
        load_instruct_corpus(root, cache.path, num_folds=3, cache_dir=tmp_path / "hf")
    assert "3 folds" in str(error.value) and "--num-folds" in str(error.value)
    assert {path: path.read_bytes() for path in root.rglob("*.png")} == before
    assert len(load_instruct_corpus(root, cache.path, num_folds=2, cache_dir=tmp_path / "hf")) == 4 * len(
        BASICS.questions
    )


def test_symlinked_category_folder_is_built_and_hidden_folders_are_ignored(tmp_path):
    root, cache = tmp_path / "images", TeacherCache(tmp_path / "cache.jsonl")
    shared = tmp_path / "elsewhere" / "particles"
    tips = [save(texture(500 + index), root / "Tips" / f"{index}.png") for index in range(2)]
    linked = [save(texture(510 + index), shared / f"{index}.png") for index in range(2)]
    (root / "Particles").symlink_to(shared, target_is_directory=True)
    hidden = [
        save(texture(520), root / ".trash" / "Tips" / "old.png"),
        save(texture(521), root / "Tips" / ".ipynb_checkpoints" / "copy.png"),
    ]
    cache.append_many([record(path, "Tips") for path in tips] + [record(path, "Particles") for path in linked])
    cache.append_many([record(path, "Tips") for path in hidden])

    built = SEMInstruct(root, [cache.path], num_folds=2, cache_dir=tmp_path / "hf")
    built.download_and_prepare()
    dataset, report = built.as_dataset(split="train"), built.build_report
    names = dataset.features["category"].names
    category_of = {row["image_id"]: names[row["category"]] for row in dataset}
    assert {image_content_id(path): "Particles" for path in linked}.items() <= category_of.items()
    assert set(category_of) == {image_content_id(path) for path in tips + linked}
    assert report["files_found"] == 4 and report["skipped_files"] == []
    assert report["records"]["unknown_image"] == len(hidden)
