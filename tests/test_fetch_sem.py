"""`mvaema-fetch-sem` against a local imitation of the B2SHARE records API serving tiny archives."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from dataset_builder.images import scan_image_folder
from dataset_builder.sem_download import FetchError, fetch_sem_dataset
from dataset_builder.sem_download.cli import main
from dataset_builder.sem_download.records import make_session
from records_api_server import RecordsAPIServer

RECORD = "80df8606fcdb4b2bae1656f0dc6db8ba"


def tiny_jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, "JPEG")
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """A tar of regular `members` (name -> bytes) and `links` (name -> (tarfile type, target))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            archive.addfile(info)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def sem_files() -> dict[str, bytes]:
    """Three archives: exact, differently spelled (spaces, case) and zipped category folders."""
    return {
        "Biological.tar": tar_bytes({f"Biological/bio_{i}.jpg": tiny_jpeg(10 + i) for i in range(3)}),
        "MEMS_devices_and_electrodes.tar": tar_bytes(
            {f"mems devices and electrodes/sub/mems_{i}.jpg": tiny_jpeg(80 + i) for i in range(2)}
        ),
        "Tips.zip": zip_bytes({f"TIPS/tip_{i}.jpg": tiny_jpeg(160 + i) for i in range(2)}),
    }


def fetch(server: RecordsAPIServer, out: Path) -> list[str]:
    session = make_session(retries=3, backoff_factor=0)
    return fetch_sem_dataset(out, server.api_url, RECORD, session=session, attempts=3, backoff_s=0)


def image_names(out: Path) -> dict[str, list[str]]:
    scan = scan_image_folder(out)
    assert scan.skipped == []
    layout: dict[str, list[str]] = {}
    for image in scan.images:
        layout.setdefault(image.category, []).append(image.path.name)
    return layout


EXPECTED_LAYOUT = {
    "Biological": ["bio_0.jpg", "bio_1.jpg", "bio_2.jpg"],
    "MEMS_devices_and_electrodes": ["mems_0.jpg", "mems_1.jpg"],
    "Tips": ["tip_0.jpg", "tip_1.jpg"],
}


@pytest.mark.parametrize("shape", ["b2share2", "rdm"])
def test_complete_fetch_lays_out_the_package_category_folders(tmp_path, shape):
    with RecordsAPIServer(RECORD, sem_files(), shape=shape) as server:
        categories = fetch(server, tmp_path / "SEM")
    assert categories == sorted(EXPECTED_LAYOUT)
    assert image_names(tmp_path / "SEM") == EXPECTED_LAYOUT
    assert (tmp_path / "SEM" / "MEMS_devices_and_electrodes" / "sub" / "mems_0.jpg").is_file()
    downloads = tmp_path / "SEM" / ".fetch-sem" / "downloads"
    assert sorted(path.name for path in downloads.iterdir()) == sorted(sem_files())
    assert not (tmp_path / "SEM" / ".fetch-sem" / "staging").exists() or not any(
        (tmp_path / "SEM" / ".fetch-sem" / "staging").iterdir()
    )


def test_rerun_downloads_and_unpacks_nothing(tmp_path):
    out = tmp_path / "SEM"
    with RecordsAPIServer(RECORD, sem_files()) as server:
        fetch(server, out)
        first_mtimes = {path: path.stat().st_mtime_ns for path in out.rglob("*.jpg")}
        server.requests.clear()
        assert fetch(server, out) == sorted(EXPECTED_LAYOUT)
    assert server.requests == [(f"/api/records/{RECORD}", None)]
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.jpg")} == first_mtimes


def test_verified_archive_is_unpacked_again_without_downloading(tmp_path):
    out = tmp_path / "SEM"
    with RecordsAPIServer(RECORD, sem_files()) as server:
        fetch(server, out)
        for path in sorted((out / "Biological").rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        (out / "Biological").rmdir()
        server.requests.clear()
        fetch(server, out)
    assert server.file_requests() == []
    assert image_names(out) == EXPECTED_LAYOUT


def test_dropped_connection_resumes_with_a_range_request_and_verifies(tmp_path):
    files = sem_files()
    cut = len(files["Biological.tar"]) // 3
    with RecordsAPIServer(RECORD, files, drop_after={"Biological.tar": cut}) as server:
        fetch(server, tmp_path / "SEM")
    biological = [byte_range for path, byte_range in server.file_requests() if path.endswith("/Biological.tar")]
    assert biological == [None, f"bytes={cut}-"]
    downloaded = tmp_path / "SEM" / ".fetch-sem" / "downloads" / "Biological.tar"
    assert hashlib.md5(downloaded.read_bytes()).hexdigest() == hashlib.md5(files["Biological.tar"]).hexdigest()
    assert not downloaded.with_name("Biological.tar.part").exists()
    assert image_names(tmp_path / "SEM") == EXPECTED_LAYOUT


def test_partial_file_from_a_killed_run_is_resumed(tmp_path):
    files = sem_files()
    downloads = tmp_path / "SEM" / ".fetch-sem" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / "Tips.zip.part").write_bytes(files["Tips.zip"][:100])
    with RecordsAPIServer(RECORD, files) as server:
        fetch(server, tmp_path / "SEM")
    assert [r for p, r in server.file_requests() if p.endswith("/Tips.zip")] == ["bytes=100-"]
    assert image_names(tmp_path / "SEM") == EXPECTED_LAYOUT


def test_server_errors_are_retried(tmp_path):
    unavailable = {f"/api/records/{RECORD}": 2, "/api/files/bucket-1/Tips.zip": 1}
    with RecordsAPIServer(RECORD, sem_files(), unavailable=unavailable) as server:
        fetch(server, tmp_path / "SEM")
    assert server.requests.count((f"/api/records/{RECORD}", None)) == 3
    assert image_names(tmp_path / "SEM") == EXPECTED_LAYOUT


def test_wrong_checksum_stops_removes_the_file_and_keeps_finished_work(tmp_path):
    files = sem_files()
    wrong = "0" * 32
    out = tmp_path / "SEM"
    with RecordsAPIServer(RECORD, files, checksums={"Tips.zip": f"md5:{wrong}"}) as server:
        with pytest.raises(FetchError) as caught:
            fetch(server, out)
    actual = hashlib.md5(files["Tips.zip"]).hexdigest()
    assert "Tips.zip" in str(caught.value)
    assert f"expected md5:{wrong}" in str(caught.value) and f"got md5:{actual}" in str(caught.value)
    downloads = out / ".fetch-sem" / "downloads"
    assert not (downloads / "Tips.zip").exists() and not (downloads / "Tips.zip.part").exists()
    assert sorted(path.name for path in downloads.iterdir()) == ["Biological.tar", "MEMS_devices_and_electrodes.tar"]
    assert image_names(out) == {key: value for key, value in EXPECTED_LAYOUT.items() if key != "Tips"}


def with_link(name: str, kind: bytes, target: str) -> bytes:
    return tar_bytes({"Biological/ok.jpg": tiny_jpeg(1)}, {name: (kind, target)})


@pytest.mark.parametrize(
    "archive, member",
    [
        (tar_bytes({"Biological/ok.jpg": b"x", "../evil.jpg": b"x"}), "../evil.jpg"),
        (tar_bytes({"Biological/ok.jpg": b"x", "/etc/evil.jpg": b"x"}), "/etc/evil.jpg"),
        (with_link("Biological/out", tarfile.SYMTYPE, "../../outside"), "Biological/out"),
        (with_link("Biological/abs", tarfile.SYMTYPE, "/etc/passwd"), "Biological/abs"),
        (with_link("Biological/hard", tarfile.LNKTYPE, "../outside"), "Biological/hard"),
        (with_link("Biological/dev", tarfile.CHRTYPE, ""), "Biological/dev"),
        (zip_bytes({"Biological/ok.jpg": b"x", "Biological/../../evil.jpg": b"x"}), "Biological/../../evil.jpg"),
    ],
)
def test_malicious_archive_is_refused_naming_the_member(tmp_path, archive, member):
    name = "Biological.zip" if archive.startswith(b"PK") else "Biological.tar"
    out = tmp_path / "deep" / "SEM"
    with RecordsAPIServer(RECORD, {name: archive}) as server:
        with pytest.raises(FetchError, match="refusing to extract") as caught:
            fetch(server, out)
    assert repr(member) in str(caught.value) and name in str(caught.value)
    assert not (out / "Biological").exists()
    assert [path.name for path in tmp_path.rglob("*evil*")] == []
    assert (out / ".fetch-sem" / "downloads" / name).is_file()


def test_link_inside_the_category_folder_is_kept(tmp_path):
    archive = with_link("Biological/alias.jpg", tarfile.SYMTYPE, "ok.jpg")
    with RecordsAPIServer(RECORD, {"Biological.tar": archive}) as server:
        fetch(server, tmp_path / "SEM")
    alias = tmp_path / "SEM" / "Biological" / "alias.jpg"
    assert alias.is_symlink() and alias.read_bytes() == (tmp_path / "SEM" / "Biological" / "ok.jpg").read_bytes()


def test_unreadable_archive_with_a_matching_checksum_is_named(tmp_path):
    with RecordsAPIServer(RECORD, {"Biological.tar": b"not a tar archive"}) as server:
        with pytest.raises(FetchError, match="Biological.tar: matches the record's checksum but cannot be unpacked"):
            fetch(server, tmp_path / "SEM")
    assert not (tmp_path / "SEM" / "Biological").exists()


def test_unknown_category_folder_is_named(tmp_path):
    with RecordsAPIServer(RECORD, {"Cats.tar": tar_bytes({"Cats/cat.jpg": tiny_jpeg(1)})}) as server:
        with pytest.raises(FetchError, match=r"folder 'Cats' is not one of the SEM categories \(Biological, Fibres"):
            fetch(server, tmp_path / "SEM")
    assert not (tmp_path / "SEM" / "Cats").exists()


def test_existing_folder_of_the_user_is_not_mixed_into(tmp_path):
    out = tmp_path / "SEM"
    (out / "Biological").mkdir(parents=True)
    (out / "Biological" / "mine.jpg").write_bytes(b"mine")
    with RecordsAPIServer(RECORD, sem_files()) as server:
        with pytest.raises(FetchError, match="already exists and was not unpacked from Biological.tar"):
            fetch(server, out)
    assert sorted(path.name for path in (out / "Biological").iterdir()) == ["mine.jpg"]


def test_half_unpacked_leftover_never_reaches_the_category_folder(tmp_path):
    out = tmp_path / "SEM"
    leftover = out / ".fetch-sem" / "staging" / "Biological.tar" / "Biological"
    leftover.mkdir(parents=True)
    (leftover / "half.jpg").write_bytes(b"half")
    with RecordsAPIServer(RECORD, sem_files()) as server:
        fetch(server, out)
    assert image_names(out) == EXPECTED_LAYOUT


def test_record_file_name_with_a_folder_is_refused(tmp_path):
    with RecordsAPIServer(RECORD, {"../Biological.tar": b"x"}) as server:
        with pytest.raises(FetchError, match=r"'\.\./Biological\.tar', which is not a plain file name"):
            fetch(server, tmp_path / "SEM")
    assert not (tmp_path / "SEM" / ".fetch-sem" / "Biological.tar").exists()


def test_command_line_fetches_and_reports_a_missing_record(tmp_path, capsys):
    with RecordsAPIServer(RECORD, sem_files()) as server:
        assert main(["--out", str(tmp_path / "SEM"), "--api-url", server.api_url, "--record", RECORD]) == 0
        assert main(["--out", str(tmp_path / "other"), "--api-url", server.api_url, "--record", "nope"]) == 1
    captured = capsys.readouterr()
    assert "3 categories (Biological, MEMS_devices_and_electrodes, Tips)" in captured.out
    assert "records/nope answered HTTP 404: no such record; check --record and --api-url" in captured.err
    assert image_names(tmp_path / "SEM") == EXPECTED_LAYOUT
    assert not (tmp_path / "other").exists()


def test_remove_archives_keeps_rerun_free_of_downloads(tmp_path):
    out = tmp_path / "SEM"
    with RecordsAPIServer(RECORD, sem_files()) as server:
        fetch_sem_dataset(out, server.api_url, RECORD, session=make_session(backoff_factor=0), remove_archives=True)
        server.requests.clear()
        fetch(server, out)
    assert list((out / ".fetch-sem" / "downloads").iterdir()) == []
    assert server.file_requests() == []
    assert json.loads((out / ".fetch-sem" / "done" / "Tips.zip.json").read_text())["categories"] == ["Tips"]
