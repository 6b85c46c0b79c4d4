"""The Batch API path (half price, results within 24 h): submit, status and collect, resumable at every step.

Requests are written into part files no bigger than the Batch API allows, with a manifest that names
the image behind each custom_id; `<batch dir>/state.json` records each step as it happens (uploaded,
created, finished, collected), so an interrupted call resumes and nothing is sent twice. The very same
request bodies as online runs are sent, and replies are validated with the same code. A batch folder
and its cache are locked while a command works on them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import openai

from ..images import BadImageError, SkippedImage
from ..question_families import PROMPT_VERSION, QuestionFamily, family_by_key
from ..teacher_cache import STATUS_OK, TeacherCache, TeacherRecord
from .credentials import public_url, redact_api_key
from .jobs import TeacherImage, TeacherJob, TeacherKey, completed_keys, pending_jobs, scan_teacher_images
from .locks import exclusive_use
from .pricing import ModelPrice, worst_case_usd
from .protocol import InvalidReply, TeacherSettings, Usage, chat_request_body, encode_micrograph, parse_reply
from .retry import RetryPolicy, call_with_retries, capped_retry_after, is_transient
from .spend import SpendLedger

logger = logging.getLogger(__name__)

BATCH_ENDPOINT = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000  # OpenAI's limits per batch input file
BATCH_MAX_BYTES = 200_000_000
BATCH_TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
BATCH_STATE_FILE = "state.json"
BATCH_STATE_FORMAT = 1


@dataclass
class BatchPart:
    """One input file and the batch made from it; the state file records each step as it happens."""

    id: str  # also stored in the batch's metadata, so a batch whose creation reply was lost is found again
    index: int
    requests: int
    created_at: float
    input_file_id: str | None = None
    batch_id: str | None = None
    status: str = "written"  # then the batch's own status
    request_counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[str] = field(default_factory=list)
    collected: bool = False
    worst_case_usd: float = 0.0  # the most its requests can cost, held against --max-usd until it is collected

    @property
    def name(self) -> str:
        return batch_part_name(self.index)

    @property
    def running(self) -> bool:
        return self.batch_id is not None and not self.collected


@dataclass
class BatchState:
    """`<batch dir>/state.json`: which parts exist, where they are, and what they were asked with."""

    teacher: str
    base_url: str
    prompt_version: str
    image_root: str
    cache_path: str
    price: dict[str, float]
    parts: list[BatchPart] = field(default_factory=list)
    format: int = BATCH_STATE_FORMAT

    @classmethod
    def load(cls, batch_dir: Path) -> BatchState | None:
        path = batch_dir / BATCH_STATE_FILE
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{**data, "parts": [BatchPart(**part) for part in data["parts"]]})
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: not a batch state file this version can read ({error})") from error

    def save(self, batch_dir: Path) -> None:
        stored = {**asdict(self), "base_url": public_url(self.base_url)}  # credentials in a URL never reach disk
        _write_atomically(batch_dir / BATCH_STATE_FILE, json.dumps(stored, indent=1))

    def check_prompt_version(self, batch_dir: Path) -> None:
        if self.prompt_version != PROMPT_VERSION:
            raise ValueError(
                f"{batch_dir}: these batches were asked with prompt version {self.prompt_version!r} but this code has "
                f"{PROMPT_VERSION!r}; collect them with the version that submitted them"
            )


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def batch_part_name(index: int) -> str:
    return f"part-{index:04d}"


def batch_part_file(batch_dir: Path, index: int, kind: str) -> Path:
    """`kind`: "requests" (the Batch API input), "manifest", "output" or "errors" (the downloaded results)."""
    return batch_dir / f"{batch_part_name(index)}.{kind}.jsonl"


def _open_temporary(path: Path) -> TextIO:
    return open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8")  # noqa: SIM115 (the caller closes it)


def custom_id(job: TeacherJob) -> str:
    return f"{job.image.image_id}:{job.family.key}"


class _PartFile:
    """The requests (the Batch API's input) and the manifest (which image each custom_id stands for) of one part."""

    def __init__(self, batch_dir: Path, index: int):
        self.index = index
        self.paths = [batch_part_file(batch_dir, index, "requests"), batch_part_file(batch_dir, index, "manifest")]
        self.handles = [_open_temporary(path) for path in self.paths]  # kept open until commit() or abandon()
        self.requests = 0
        self.bytes = 0
        self.worst_case_usd = 0.0

    def add(self, request_line: str, manifest_line: str, worst_usd: float) -> None:
        self.handles[0].write(request_line)
        self.handles[1].write(manifest_line)
        self.requests += 1
        self.bytes += len(request_line.encode())
        self.worst_case_usd += worst_usd

    def commit(self) -> BatchPart:
        for handle, path in zip(self.handles, self.paths, strict=True):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(handle.name, path)
        return BatchPart(
            id=uuid.uuid4().hex,
            index=self.index,
            requests=self.requests,
            created_at=time.time(),
            worst_case_usd=self.worst_case_usd,
        )

    def abandon(self) -> None:
        for handle in self.handles:
            handle.close()
            os.remove(handle.name)


@dataclass
class BatchSubmitReport:
    submitted: list[BatchPart] = field(default_factory=list)  # this call's parts, resumed ones included
    requests: int = 0
    worst_case_usd: float = 0.0
    cached: int = 0
    in_earlier_batches: int = 0
    skipped_images: list[SkippedImage] = field(default_factory=list)
    duplicates: int = 0
    left_for_budget: int = 0  # requests not submitted because of --max-usd


class _BatchWriter:
    """Writes jobs into part files no bigger than the Batch API allows, and within the budget."""

    def __init__(
        self, batch_dir: Path, settings: TeacherSettings, price: ModelPrice, max_requests: int, max_bytes: int
    ):
        self.batch_dir, self.settings, self.price = batch_dir, settings, price
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self._encode = functools.lru_cache(maxsize=1)(functools.partial(encode_micrograph, max_side=settings.max_side))

    def parts(
        self, jobs: Sequence[TeacherJob], first_index: int, max_usd: float | None, report: BatchSubmitReport
    ) -> Iterator[BatchPart]:
        part: _PartFile | None = None
        bad_images: set[Path] = set()
        try:
            for position, job in enumerate(jobs):
                lines = self._lines(job, bad_images, report)
                if lines is None:
                    continue
                request_line, manifest_line, worst_usd = lines
                if max_usd is not None and report.worst_case_usd + worst_usd > max_usd:
                    report.left_for_budget = len(jobs) - position
                    break
                line_bytes = len(request_line.encode())
                if line_bytes > self.max_bytes:
                    raise ValueError(
                        f"{job.image.path}: one request is {line_bytes:,} bytes, over the "
                        f"{self.max_bytes:,}-byte batch file limit; lower --max-side"
                    )
                if part is not None and (
                    part.requests >= self.max_requests or part.bytes + line_bytes > self.max_bytes
                ):
                    committed, part = part.commit(), None
                    yield committed
                if part is None:
                    part = _PartFile(self.batch_dir, first_index)
                    first_index += 1
                part.add(request_line, manifest_line, worst_usd)
                report.requests += 1
                report.worst_case_usd += worst_usd
            if part is not None:
                committed, part = part.commit(), None
                yield committed
        finally:
            if part is not None:  # stopped by an error: leave no half-written part behind
                part.abandon()

    def _lines(
        self, job: TeacherJob, bad_images: set[Path], report: BatchSubmitReport
    ) -> tuple[str, str, float] | None:
        if job.image.path in bad_images:
            return None
        try:
            image = self._encode(job.image.path)
        except BadImageError as error:
            bad_images.add(job.image.path)
            report.skipped_images.append(SkippedImage(job.image.image_path, error.reason))
            return None
        body = chat_request_body(self.settings, job.family, job.image.category, image.data_url)
        request = {"custom_id": custom_id(job), "method": "POST", "url": BATCH_ENDPOINT, "body": body}
        manifest = {
            "custom_id": custom_id(job),
            "image_id": job.image.image_id,
            "image_path": job.image.image_path,
            "category": job.image.category,
            "family": job.family.key,
        }
        size = (image.width, image.height)
        worst_usd = worst_case_usd(self.settings, self.price, job.family, job.image.category, size, batch=True)
        return json.dumps(request) + "\n", json.dumps(manifest) + "\n", worst_usd


def _read_manifest(batch_dir: Path, part: BatchPart) -> list[dict[str, str]]:
    path = batch_part_file(batch_dir, part.index, "manifest")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _job_from_manifest(entry: dict[str, str], image_root: Path) -> TeacherJob:
    image = TeacherImage(image_root / entry["image_path"], entry["image_path"], entry["category"], entry["image_id"])
    return TeacherJob(image, family_by_key(entry["family"]))


def _open_batch_state(
    batch_dir: Path, settings: TeacherSettings, price: ModelPrice, image_root: Path, cache_path: Path
) -> BatchState:
    state = BatchState.load(batch_dir)
    if state is None:
        batch_dir.mkdir(parents=True, exist_ok=True)
        state = BatchState(
            teacher=settings.teacher_id,
            base_url=public_url(settings.base_url),
            prompt_version=PROMPT_VERSION,
            image_root=str(image_root.resolve()),
            cache_path=str(cache_path.resolve()),
            price=asdict(price),
        )
        state.save(batch_dir)
        return state
    state.check_prompt_version(batch_dir)
    if (state.teacher, state.image_root) != (settings.teacher_id, str(image_root.resolve())):
        raise ValueError(
            f"{batch_dir} holds batches of teacher {state.teacher!r} for {state.image_root}; "
            "use another --batch-dir for another teacher or image folder"
        )
    return state


def batch_submit(
    client: openai.OpenAI,
    batch_dir: str | os.PathLike,
    image_root: str | os.PathLike,
    cache_path: str | os.PathLike,
    settings: TeacherSettings,
    price: ModelPrice,
    families: Sequence[QuestionFamily],
    *,
    max_requests: int = BATCH_MAX_REQUESTS,
    max_bytes: int = BATCH_MAX_BYTES,
    max_usd: float | None = None,
    retry: RetryPolicy = RetryPolicy(),
) -> BatchSubmitReport:
    """Submit every pair that is neither answered in the cache nor in a batch still to collect.

    Resumable: parts written or uploaded by an interrupted call are sent first; nothing is sent twice.
    `max_usd` caps the cache's total: its spend ledger plus the worst case of every uncollected batch.
    """
    batch_dir, image_root = Path(batch_dir), Path(image_root)
    with exclusive_use(batch_dir=batch_dir, cache=cache_path):
        state = _open_batch_state(batch_dir, settings, price, image_root, Path(cache_path))
        report = BatchSubmitReport()
        for part in state.parts:
            if part.batch_id is None:
                _send_part(client, state, part, batch_dir, retry)
                report.submitted.append(part)
        jobs = _jobs_to_submit(state, batch_dir, image_root, cache_path, settings, families, report)
        if max_usd is not None:
            max_usd -= SpendLedger.beside(cache_path).total_usd() + _uncollected_worst_usd(state)
        writer = _BatchWriter(batch_dir, settings, price, max_requests, max_bytes)
        for part in writer.parts(jobs, len(state.parts), max_usd, report):
            state.parts.append(part)
            state.save(batch_dir)
            _send_part(client, state, part, batch_dir, retry)
            report.submitted.append(part)
    return report


def _jobs_to_submit(
    state: BatchState,
    batch_dir: Path,
    image_root: Path,
    cache_path: str | os.PathLike,
    settings: TeacherSettings,
    families: Sequence[QuestionFamily],
    report: BatchSubmitReport,
) -> list[TeacherJob]:
    scan = scan_teacher_images(image_root)
    report.skipped_images, report.duplicates = list(scan.skipped), scan.duplicates
    done = completed_keys(TeacherCache(cache_path))
    in_batches = _uncollected_keys(state, batch_dir)
    all_keys = {TeacherJob(image, family).key(settings.teacher_id) for image in scan.images for family in families}
    report.cached, report.in_earlier_batches = len(all_keys & done), len(all_keys & in_batches - done)
    return pending_jobs(scan.images, families, settings.teacher_id, done | in_batches)


def _uncollected_keys(state: BatchState, batch_dir: Path) -> set[TeacherKey]:
    return {
        (entry["image_id"], entry["family"], state.prompt_version, state.teacher)
        for part in state.parts
        if not part.collected
        for entry in _read_manifest(batch_dir, part)
    }


def _uncollected_worst_usd(state: BatchState) -> float:
    return sum(part.worst_case_usd for part in state.parts if not part.collected)


def batch_dirs_beside(cache_path: str | os.PathLike) -> list[Path]:
    """The batch folders next to a cache (its sibling folders) whose batches write to that cache."""
    cache_path = Path(cache_path).resolve()
    if not cache_path.parent.is_dir():
        return []
    found = []
    for folder in sorted(path for path in cache_path.parent.iterdir() if path.is_dir()):
        try:
            state = BatchState.load(folder)
        except (ValueError, OSError):
            continue
        if state is not None and Path(state.cache_path) == cache_path:
            found.append(folder)
    return found


def pending_batch_keys(batch_dirs: Sequence[str | os.PathLike]) -> set[TeacherKey]:
    """Requests written or submitted in these batch folders and not collected yet: asking them online
    as well would pay twice."""
    keys: set[TeacherKey] = set()
    for batch_dir in map(Path, batch_dirs):
        state = BatchState.load(batch_dir)
        if state is None:
            raise FileNotFoundError(f"--batch-dir {batch_dir}: no {BATCH_STATE_FILE} there; is it a batch folder?")
        keys |= _uncollected_keys(state, batch_dir)
    return keys


def _send_part(client: openai.OpenAI, state: BatchState, part: BatchPart, batch_dir: Path, retry: RetryPolicy) -> None:
    if part.input_file_id is None:
        requests_file = batch_part_file(batch_dir, part.index, "requests")
        part.input_file_id = call_with_retries(
            lambda: client.files.create(file=requests_file, purpose="batch").id, retry
        )
        state.save(batch_dir)
    batch = _create_batch_once(client, part, retry)
    part.batch_id, part.status = batch.id, batch.status
    state.save(batch_dir)


def _create_batch_once(client: openai.OpenAI, part: BatchPart, retry: RetryPolicy):
    """Create the part's batch, or adopt the one an earlier try created but never heard back about:
    re-posting blindly after a lost reply would pay for the part twice."""
    attempt = 0
    while True:
        attempt += 1
        existing = _find_batch(client, part, retry)
        if existing is not None:
            return existing
        try:
            return client.batches.create(
                input_file_id=part.input_file_id,
                endpoint=BATCH_ENDPOINT,
                completion_window="24h",
                metadata={"mvaema_part": part.id},
            )
        except (openai.APIConnectionError, openai.APIStatusError) as error:
            if not is_transient(error) or attempt >= retry.max_attempts:
                raise
            time.sleep(retry.delay_s(attempt, capped_retry_after(error)))


def _find_batch(client: openai.OpenAI, part: BatchPart, retry: RetryPolicy):
    for batch in call_with_retries(lambda: client.batches.list(limit=100), retry):
        if (batch.metadata or {}).get("mvaema_part") == part.id:
            return batch
        if batch.created_at < part.created_at - 3600:  # listed newest first: the rest predate the part
            return None
    return None


def _load_state(batch_dir: Path) -> BatchState:
    state = BatchState.load(batch_dir)
    if state is None:
        raise FileNotFoundError(f"{batch_dir / BATCH_STATE_FILE} not found; run `mvaema-teacher batch-submit` first")
    state.check_prompt_version(batch_dir)
    return state


def refresh_batches(
    client: openai.OpenAI, state: BatchState, batch_dir: Path, retry: RetryPolicy = RetryPolicy()
) -> None:
    """Fetch the status of every batch that is still running and record it in the state file."""
    for part in state.parts:
        if not part.running or part.status in BATCH_TERMINAL_STATUSES:
            continue
        batch = _retrieve_batch(client, part.batch_id, retry)
        part.status = batch.status
        part.request_counts = batch.request_counts.model_dump() if batch.request_counts else {}
        part.output_file_id, part.error_file_id = batch.output_file_id, batch.error_file_id
        part.errors = [f"{error.code}: {error.message}" for error in (batch.errors.data or [])] if batch.errors else []
    state.save(batch_dir)


def _retrieve_batch(client: openai.OpenAI, batch_id: str, retry: RetryPolicy):
    return call_with_retries(lambda: client.batches.retrieve(batch_id), retry)


def batch_status(
    client: openai.OpenAI, batch_dir: str | os.PathLike, retry: RetryPolicy = RetryPolicy()
) -> BatchState:
    with exclusive_use(batch_dir=batch_dir):
        state = _load_state(Path(batch_dir))
        refresh_batches(client, state, Path(batch_dir), retry)
    return state


@dataclass
class BatchCollectReport:
    answered: int = 0
    failed: list[TeacherRecord] = field(default_factory=list)
    spent_usd: float = 0.0
    running: list[BatchPart] = field(default_factory=list)
    unsubmitted: list[BatchPart] = field(default_factory=list)


def batch_collect(
    client: openai.OpenAI,
    batch_dir: str | os.PathLike,
    cache_path: str | os.PathLike | None = None,
    *,
    wait_for_all: bool = False,
    poll_interval_s: float = 60.0,
    retry: RetryPolicy = RetryPolicy(),
) -> BatchCollectReport:
    """Write the results of every finished batch to the cache (results are joined on custom_id, in any
    order); a request without a usable result becomes a "failed" record, which the next submit retries."""
    batch_dir = Path(batch_dir)
    with exclusive_use(batch_dir=batch_dir):
        state = _load_state(batch_dir)
        cache_path = cache_path or state.cache_path
        with exclusive_use(cache=cache_path):
            cache = TeacherCache(cache_path)
            return _collect_until_done(client, state, batch_dir, cache, wait_for_all, poll_interval_s, retry)


def _collect_until_done(
    client: openai.OpenAI,
    state: BatchState,
    batch_dir: Path,
    cache: TeacherCache,
    wait_for_all: bool,
    poll_interval_s: float,
    retry: RetryPolicy,
) -> BatchCollectReport:
    report = BatchCollectReport()
    while True:
        refresh_batches(client, state, batch_dir, retry)
        for part in state.parts:
            if part.running and part.status in BATCH_TERMINAL_STATUSES:
                _collect_part(client, state, part, batch_dir, cache, report, retry)
        report.running = [part for part in state.parts if part.running]
        report.unsubmitted = [part for part in state.parts if part.batch_id is None]
        if not report.running or not wait_for_all:
            return report
        time.sleep(poll_interval_s)


def _collect_part(
    client: openai.OpenAI,
    state: BatchState,
    part: BatchPart,
    batch_dir: Path,
    cache: TeacherCache,
    report: BatchCollectReport,
    retry: RetryPolicy,
) -> None:
    results: dict[str, dict] = {}
    for file_id, kind in ((part.output_file_id, "output"), (part.error_file_id, "errors")):
        if file_id:
            text = _download(client, file_id, retry)
            _write_atomically(batch_part_file(batch_dir, part.index, kind), text)
            results.update(_results_by_custom_id(text, file_id))
    price = ModelPrice(**state.price)
    records = [
        _batch_record(
            _job_from_manifest(entry, Path(state.image_root)),
            results.get(entry["custom_id"]),
            part,
            state.teacher,
            price,
        )
        for entry in _read_manifest(batch_dir, part)
    ]
    done = completed_keys(cache)  # a collect cut short after writing must not write its records twice
    new_records = [record for record in records if record.key not in done]
    cache.append_many(new_records)
    paid_usd = sum(record.cost_usd for record in new_records)
    if paid_usd:
        SpendLedger.beside(cache.path).append(paid_usd, confirmed=True)
    part.collected = True
    state.save(batch_dir)
    for record in new_records:
        report.spent_usd += record.cost_usd
        if record.status == STATUS_OK:
            report.answered += 1
        else:
            report.failed.append(record)


def _download(client: openai.OpenAI, file_id: str, retry: RetryPolicy) -> str:
    return call_with_retries(lambda: client.files.content(file_id).text, retry)


def _results_by_custom_id(text: str, file_id: str) -> dict[str, dict]:
    results = {}
    for line_number, line in enumerate(text.splitlines(), start=1):
        try:
            result = json.loads(line)
            results[result["custom_id"]] = result
        except (ValueError, TypeError, KeyError):
            if line.strip():
                logger.warning("batch result file %s line %d is not a result line; ignored", file_id, line_number)
    return results


def _batch_record(
    job: TeacherJob, result: dict | None, part: BatchPart, teacher_id: str, price: ModelPrice
) -> TeacherRecord:
    if result is None:
        reason = "; ".join(part.errors) or f"no result: batch {part.batch_id} ended {part.status!r}"
        return job.record(teacher_id, error=redact_api_key(reason))
    response = result.get("response") if isinstance(result.get("response"), dict) else {}
    if result.get("error") or response.get("status_code") != 200:
        body = response.get("body") if isinstance(response.get("body"), dict) else {}
        error = result.get("error") or body.get("error")
        error = error if isinstance(error, dict) else {"message": str(error or "no message")}
        status = f"HTTP {response['status_code']}" if response.get("status_code") else "batch error"
        code = f" {error['code']}" if error.get("code") else ""
        return job.record(teacher_id, error=redact_api_key(f"{status}{code}: {error.get('message', 'no message')}"))
    try:
        reply = parse_reply(response.get("body"), job.family)
    except InvalidReply as error:
        usage, cost_usd = error.usage or Usage(), _batch_cost_usd(error.usage, part, price)
        return job.record(teacher_id, error=redact_api_key(error.reason), usage=usage, cost_usd=cost_usd)
    cost_usd = _batch_cost_usd(reply.usage, part, price)
    return job.record(teacher_id, answers=reply.answers, usage=reply.usage or Usage(), cost_usd=cost_usd)


def _batch_cost_usd(usage: Usage | None, part: BatchPart, price: ModelPrice) -> float:
    """A result without usage costs an unknown amount: count the worst case of a request of its part."""
    if usage is None:
        return part.worst_case_usd / max(part.requests, 1)
    return price.cost_usd(usage, batch=True)
