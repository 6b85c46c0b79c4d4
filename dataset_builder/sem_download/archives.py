"""Unpacking a verified archive into `OUT/<Category>/`, safely and all-or-nothing per category.

Every member path is checked before anything is written: no absolute path, no `..`, no link whose target
leaves the archive's folder, no device or pipe; the archive is refused with the member's name otherwise.
Tar archives are then unpacked with Python's `data` extraction filter as a second line of defence.

An archive is unpacked into a staging folder next to the output; each category folder gets a hidden
ownership mark and is then renamed into place in one step, so a killed run never leaves a half-filled
`OUT/<Category>/` that looks complete.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from ..question_families import SEM_CATEGORIES
from .errors import FetchError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")
CATEGORY_MARK = ".mvaema-fetch-sem.json"
# folders that archivers add beside the content (macOS resource forks)
IGNORED_TOP_LEVEL = frozenset({"__MACOSX"})


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _normalized(name: str) -> str:
    return re.sub(r"[\s_\-]+", "_", name.strip()).casefold()


def category_for(folder_name: str, archive_name: str) -> str:
    """The package's SEM category that `folder_name` names, whatever its case, spaces or hyphens."""
    for category in SEM_CATEGORIES:
        if _normalized(category) == _normalized(folder_name):
            return category
    raise FetchError(
        f"{archive_name}: folder {folder_name!r} is not one of the SEM categories ({', '.join(SEM_CATEGORIES)}); "
        "is --record the NFFA-EUROPE SEM dataset?"
    )


def _refuse(archive_name: str, member: str, why: str) -> FetchError:
    return FetchError(
        f"{archive_name}: member {member!r} {why}; refusing to extract this archive (nothing was written)"
    )


def _check_path(archive_name: str, member: str) -> None:
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", member):
        raise _refuse(archive_name, member, "has an absolute path")
    if ".." in path.parts:
        raise _refuse(archive_name, member, "climbs out of the target folder with '..'")


def _link_leaves_target(member: tarfile.TarInfo) -> bool:
    target = PurePosixPath(member.linkname.replace("\\", "/"))
    if target.is_absolute():
        return True
    # a symlink's target is relative to its own folder, a hard link's to the archive root
    base = PurePosixPath(member.name).parent if member.issym() else PurePosixPath()
    depth = 0
    for part in (base / target).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def check_tar_members(archive: tarfile.TarFile, archive_name: str) -> None:
    for member in archive.getmembers():
        _check_path(archive_name, member.name)
        if (member.issym() or member.islnk()) and _link_leaves_target(member):
            raise _refuse(archive_name, member.name, f"is a link to {member.linkname!r}, outside the target folder")
        if member.isdev():
            raise _refuse(archive_name, member.name, "is a device or pipe")


def check_zip_members(archive: zipfile.ZipFile, archive_name: str) -> None:
    for info in archive.infolist():
        _check_path(archive_name, info.filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(archive_name, info.filename, "is a symbolic link")


def extract_checked(archive_path: Path, target: Path) -> None:
    """Unpack `archive_path` into `target` after every member passed the path checks."""
    name = archive_path.name
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            check_zip_members(archive, name)
            archive.extractall(target)
        return
    try:
        with tarfile.open(archive_path) as archive:
            check_tar_members(archive, name)
            archive.extractall(target, filter="data")
    except tarfile.TarError as error:
        raise FetchError(
            f"{archive_path}: matches the record's checksum but cannot be unpacked ({error}); "
            "the record's copy is not a readable tar or zip archive"
        ) from error


def _category_folders(staging: Path, archive_name: str, stem: str) -> dict[str, Path]:
    """Category -> unpacked folder: each top-level folder names a category, or, with loose files at the top,
    the archive's own name does."""
    entries = [p for p in staging.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_TOP_LEVEL]
    if not entries:
        raise FetchError(f"{archive_name}: the archive holds no files")
    if any(not entry.is_dir() for entry in entries):
        return {category_for(stem, archive_name): staging}
    return {category_for(entry.name, archive_name): entry for entry in entries}


def _mark_matches(folder: Path, archive_name: str, checksum: str) -> bool:
    mark = folder / CATEGORY_MARK
    if not mark.is_file():
        return False
    return json.loads(mark.read_text(encoding="utf-8")) == {"archive": archive_name, "checksum": checksum}


def install_archive(archive_path: Path, archive_name: str, checksum: str, output_dir: Path, staging: Path) -> list[str]:
    """Unpack the verified archive into `output_dir/<Category>/`; returns the categories it holds.

    A category folder already there is kept when this tool made it from this very archive (a run killed
    after the rename); any other existing folder of that name stops the run rather than being mixed into.
    """
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left half-unpacked
    staging.mkdir(parents=True)
    extract_checked(archive_path, staging)
    stem = archive_name[: -len(next(s for s in ARCHIVE_SUFFIXES if archive_name.lower().endswith(s)))]
    folders = _category_folders(staging, archive_name, stem)
    for category, folder in folders.items():
        destination = output_dir / category
        if destination.exists():
            if _mark_matches(destination, archive_name, checksum):
                continue
            raise FetchError(
                f"{destination} already exists and was not unpacked from {archive_name} by mvaema-fetch-sem; "
                "move it away or choose another --out"
            )
        mark = {"archive": archive_name, "checksum": checksum}
        (folder / CATEGORY_MARK).write_text(json.dumps(mark), encoding="utf-8")
        folder.rename(destination)
    shutil.rmtree(staging, ignore_errors=True)
    return sorted(folders)
