"""An output folder that a command replaces whole, without ever deleting a file it did not write.

The command writes into a fresh folder next to the target and swaps it in at the end, so a crash or an error
leaves the previous output as it was. The target may only be replaced when everything in it is something the
command writes, and it may neither contain nor lie inside one of the command's inputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path


def check_output_folder(
    out_dir: Path, inputs: Iterable[tuple[str, Path]], is_own_output: Callable[[Path], bool], option: str = "--out"
) -> None:
    """Raise a ValueError naming the clash unless `out_dir` may be replaced whole.

    `inputs`: (option name, path) of everything the command reads. `is_own_output(entry)` says whether an
    existing entry of `out_dir` is one the command writes (and may therefore replace).
    """
    target = out_dir.expanduser().resolve()
    for name, path in inputs:
        source = path.expanduser().resolve()
        if source == target or target in source.parents or source in target.parents:
            raise ValueError(
                f"{option} {out_dir} and {name} {path} overlap: the output folder is replaced whole, so it must "
                f"neither contain nor lie inside an input. Choose another {option} folder."
            )
    if target.exists() and not target.is_dir():
        raise ValueError(f"{option} {out_dir} is a file, not a folder: choose a folder path.")
    foreign = sorted(entry.name for entry in target.iterdir() if not is_own_output(entry)) if target.is_dir() else []
    if foreign:
        raise ValueError(
            f"{option} {out_dir} holds files this command did not write ({', '.join(foreign[:5])}"
            f"{', ...' if len(foreign) > 5 else ''}); they would be lost when the folder is replaced. "
            f"Choose an empty or new {option} folder."
        )


@contextlib.contextmanager
def replaced_on_success(out_dir: Path) -> Iterator[Path]:
    """Yield a fresh folder next to `out_dir`; when the block succeeds it becomes `out_dir` (the previous
    `out_dir`, already checked by `check_output_folder`, is removed), when it fails it is removed."""
    target = out_dir.expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.new-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not target.exists():
        os.rename(staging, target)
        return
    # Two renames on one file system: at every moment either the old or the new output is complete on disk.
    previous = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.rename(target, previous / target.name)
    os.rename(staging, target)
    shutil.rmtree(previous)
