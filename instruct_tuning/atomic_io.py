"""Files and folders that are either wholly written or not there at all.

A kill or a full disk in the middle of a write must never leave a half-written file where a complete one is
expected: everything is written under a temporary name in the same folder, flushed to disk (fsync) and renamed
over the target (`os.replace` is atomic within one file system).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

REPLACED_SUFFIX = ".replaced"


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entry list, to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, then the folders themselves."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(root) / name)
        fsync_path(Path(root))


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary_path)`, then flush it and rename it to `path`; on any error `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(Path(temporary))
        fsync_path(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    write_file_atomically(path, lambda temporary: temporary.write_text(text))


def replace_directory(staged: Path, final: Path) -> None:
    """Put the complete, flushed folder `staged` in place of `final`. Between the two renames a kill leaves the old
    folder under `<final>.replaced`, which `recover_directory` puts back."""
    fsync_tree(staged)
    replaced = final.with_name(final.name + REPLACED_SUFFIX)
    shutil.rmtree(replaced, ignore_errors=True)
    if final.exists():
        os.replace(final, replaced)
    os.replace(staged, final)
    fsync_path(final.parent)
    shutil.rmtree(replaced, ignore_errors=True)


def recover_directory(final: Path) -> None:
    """Undo a `replace_directory` that was killed between its two renames."""
    replaced = final.with_name(final.name + REPLACED_SUFFIX)
    if not final.exists() and replaced.exists():
        os.replace(replaced, final)
