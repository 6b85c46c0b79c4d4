"""The teacher cache: an append-only JSONL file, one record per (image, question family).

Why this shape: a teacher run over thousands of micrographs costs money and hours, and can be killed
at any instant. Each finished (image, family) answer is appended as one line and flushed + fsynced
before the run moves on, so a completed answer is never lost; a line cut off by a crash, or one that is
not a well-typed record (hand-edited, foreign), is ignored on reading and reported by its line number, so
no line can stop a run or a build; a rerun skips every key that already has a
successful record, so no answer is ever paid for twice. The grounded synthetic teacher writes the very
same records, so the builder reads both alike.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydantic

STATUS_OK = "ok"
STATUS_FAILED = "failed"


def image_content_id(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes: the same micrograph keeps its id when folders are moved or renamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class TeacherRecord:
    """The answers of one teacher call: every sub-question of one family, for one image.

    `questions[i]` is answered by `answers[i]`. `status` is "ok" or "failed" (then `answers` is empty
    and `error` says why); failed records are kept so that a report can name them, and a rerun retries
    them. `usage` holds the token counts the server reported (`input_tokens`, `output_tokens`).
    """

    image_id: str
    image_path: str
    category: str
    family: str
    prompt_version: str
    teacher: str
    questions: list[str]
    answers: list[str]
    status: str = STATUS_OK
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.image_id, self.family, self.prompt_version, self.teacher)

    def __post_init__(self) -> None:
        if self.status not in (STATUS_OK, STATUS_FAILED):
            raise ValueError(f"status must be {STATUS_OK!r} or {STATUS_FAILED!r}, not {self.status!r}")
        if self.status == STATUS_OK and len(self.answers) != len(self.questions):
            raise ValueError(
                f"teacher record for {self.image_path} ({self.family}): {len(self.questions)} questions "
                f"but {len(self.answers)} answers"
            )


@functools.cache
def _cache_line_model() -> type[pydantic.BaseModel]:
    """`TeacherRecord`'s fields as a strict pydantic model: a line is parsed and type-checked in one step
    (a hand-edited `"answers": [5]` or `"family": ["basics"]` is refused here, not deep in a build), and
    pydantic's JSON parser refuses nesting too deep for it instead of raising RecursionError."""
    types = typing.get_type_hints(TeacherRecord)
    fields = {
        record_field.name: (types[record_field.name], _pydantic_default(record_field))
        for record_field in dataclasses.fields(TeacherRecord)
    }
    return pydantic.create_model("TeacherCacheLine", __config__=pydantic.ConfigDict(strict=True), **fields)


def _pydantic_default(record_field: dataclasses.Field) -> object:
    if record_field.default_factory is not dataclasses.MISSING:
        return pydantic.Field(default_factory=record_field.default_factory)
    return ... if record_field.default is dataclasses.MISSING else record_field.default


def parse_cache_line(raw_line: bytes) -> TeacherRecord:
    """The record on one cache line; `ValueError` saying which field is wrong (or why the line is not JSON)."""
    try:
        line = _cache_line_model().model_validate_json(raw_line)
    except pydantic.ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where + ': ' if where else ''}{first['msg']}") from None
    return TeacherRecord(**line.model_dump())


@dataclass
class CacheReadReport:
    """What reading a cache found besides good records: cut-off or unreadable lines, by line number."""

    path: Path
    bad_lines: list[tuple[int, str]] = field(default_factory=list)


class TeacherCache:
    """Append-only JSONL store of `TeacherRecord`s with crash-safe appends and tolerant reads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> tuple[list[TeacherRecord], CacheReadReport]:
        """All well-formed records in file order, and a report of the lines that were not."""
        report = CacheReadReport(self.path)
        records: list[TeacherRecord] = []
        if not self.path.exists():
            return records, report
        with open(self.path, "rb") as handle:
            for line_number, raw_line in enumerate(handle, start=1):
                if not raw_line.strip():
                    continue
                try:
                    records.append(parse_cache_line(raw_line))
                except ValueError as error:
                    report.bad_lines.append((line_number, str(error)))
        return records, report

    def records(self) -> list[TeacherRecord]:
        return self.read()[0]

    def completed_keys(self) -> set[tuple[str, str, str, str]]:
        """Keys of (image_id, family, prompt_version, teacher) that already have a successful answer."""
        return {record.key for record in self.records() if record.status == STATUS_OK}

    def latest_by_key(self) -> dict[tuple[str, str, str, str], TeacherRecord]:
        """One record per key: the last successful one, else the last failed one."""
        latest: dict[tuple[str, str, str, str], TeacherRecord] = {}
        for record in self.records():
            previous = latest.get(record.key)
            if previous is None or record.status == STATUS_OK or previous.status != STATUS_OK:
                latest[record.key] = record
        return latest

    def append(self, record: TeacherRecord) -> None:
        self.append_many([record])

    def append_many(self, records: list[TeacherRecord]) -> None:
        """Append whole lines and fsync: after this returns, the records survive a kill -9 or power cut."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = "".join(json.dumps(asdict(record), ensure_ascii=False) + "\n" for record in records)
        with open(self.path, "a+b") as handle:
            self._terminate_cut_off_line(handle)
            handle.write(payload.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())

    @staticmethod
    def _terminate_cut_off_line(handle) -> None:
        # A crash mid-write can leave a last line without its newline; start on a fresh line so the
        # new record is not glued to the fragment (the fragment is then skipped and reported on read).
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")

    def __iter__(self) -> Iterator[TeacherRecord]:
        return iter(self.records())
