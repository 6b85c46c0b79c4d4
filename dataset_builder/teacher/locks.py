"""One process at a time per teacher cache and per batch folder: two would both pay for the same answers.

The locks are `filelock` locks (an OS file lock, released by the kernel when the process dies, so a
killed run never leaves a stale lock behind)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from filelock import FileLock, Timeout


class ResourceBusy(RuntimeError):
    """Another process holds the lock of a cache or batch folder."""


def cache_lock_path(cache_path: str | os.PathLike) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name + ".lock")


def batch_dir_lock_path(batch_dir: str | os.PathLike) -> Path:
    return Path(batch_dir) / "batch-folder.lock"


@contextmanager
def _held(lock_path: Path, what: str) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ResourceBusy(
            f"{what} is in use by another mvaema-teacher process (it holds the lock {lock_path}); wait for that "
            "run to finish: two runs on one cache or batch folder would pay twice for the same answers"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def exclusive_use(
    *, cache: str | os.PathLike | None = None, batch_dir: str | os.PathLike | None = None
) -> Iterator[None]:
    """Hold the locks of `batch_dir` and `cache` (in that order, the same in every command: no deadlock)."""
    with ExitStack() as stack:
        if batch_dir is not None:
            stack.enter_context(_held(batch_dir_lock_path(batch_dir), f"the batch folder {batch_dir}"))
        if cache is not None:
            stack.enter_context(_held(cache_lock_path(cache), f"the teacher cache {cache}"))
        yield
