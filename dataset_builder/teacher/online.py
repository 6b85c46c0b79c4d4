"""The online run: workers that ask the teacher, retry, and hand each finished record to the main thread,
which appends (and fsyncs) it to the cache at once, so a run killed at any instant resumes where it
stopped and never pays twice for an answer.

Ctrl-C once: no new requests; the answers in flight are saved, none is retried. Ctrl-C again: the run
stops at once and the answers in flight are dropped (a rerun asks them again).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

from ..images import BadImageError, SkippedImage
from ..question_families import QuestionFamily
from ..teacher_cache import STATUS_OK, TeacherCache, TeacherRecord
from .batch import batch_dirs_beside, pending_batch_keys
from .credentials import redact_api_key
from .jobs import TeacherJob, completed_keys, pending_jobs, scan_teacher_images
from .limits import RequestLimits, request_limits
from .locks import exclusive_use
from .pricing import ModelPrice, worst_case_usd
from .protocol import (
    InvalidReply,
    TeacherReply,
    TeacherSettings,
    Usage,
    chat_request_body,
    encode_micrograph,
    json_payload,
    parse_reply,
)
from .retry import (
    MAX_RETRY_AFTER_S,
    BudgetExhausted,
    FatalTeacherError,
    RetryPolicy,
    describe_error,
    is_fatal,
    is_transient_status,
    retry_after_seconds,
    too_long_wait_message,
)
from .spend import SpendTracker

logger = logging.getLogger(__name__)


class RunStopped(Exception):
    """A job given up because the run was interrupted: no record is written, a rerun asks again."""


class RunAbandoned(KeyboardInterrupt):
    """The second Ctrl-C: the run stopped without waiting for the requests in flight."""


@dataclass
class _Attempt:
    reply: TeacherReply | None = None
    error: str = ""
    retryable: bool = False
    retry_after_s: float | None = None
    usage: Usage | None = Usage()  # None: the cost is unknown (no reply, or a reply that did not say)
    replied: bool = True  # False when no reply came back: the server may still have done (and billed) the work


class OnlineTeacher:
    """Answers one job at a time, from any number of threads: encode, ask, validate, retry, and return an
    "ok" record or, once the retries are spent, a "failed" one."""

    def __init__(
        self,
        client: openai.OpenAI,
        settings: TeacherSettings,
        price: ModelPrice,
        retry: RetryPolicy = RetryPolicy(),
        spend: SpendTracker | None = None,
        encoded_images_kept: int = 32,
        limits: RequestLimits = RequestLimits(total_s=180.0),
    ):
        self.client = client
        self.limits = limits  # enforced by a client from `make_client`
        self.settings = settings
        self.price = price
        self.retry = retry
        self.spend = spend or SpendTracker()
        self.stopping = threading.Event()  # set by an interrupted run: finish the attempt in flight, retry nothing
        # Jobs come image by image: keeping a few encoded images saves re-encoding one for every family.
        self._encode = functools.lru_cache(maxsize=encoded_images_kept)(
            functools.partial(encode_micrograph, max_side=settings.max_side)
        )

    def answer(self, job: TeacherJob) -> TeacherRecord:
        """Raises `BadImageError`, `BudgetExhausted`, `FatalTeacherError` or `RunStopped`; every other problem
        ends in a record."""
        image = self._encode(job.image.path)
        body = chat_request_body(self.settings, job.family, job.image.category, image.data_url)
        size = (image.width, image.height)
        worst_usd = worst_case_usd(self.settings, self.price, job.family, job.image.category, size)
        teacher_id, max_attempts = self.settings.teacher_id, self.retry.max_attempts
        usage, cost_usd, number = Usage(), 0.0, 0
        while True:
            if self.stopping.is_set():
                raise RunStopped
            number += 1
            attempt = self._attempt(body, job.family, worst_usd)
            usage += attempt.usage or Usage()
            if attempt.usage is not None:
                cost_usd += self.price.cost_usd(attempt.usage)
            elif attempt.replied:
                cost_usd += worst_usd  # billed for sure, amount unknown: the most it can be
            if attempt.reply is not None:
                return job.record(teacher_id, answers=attempt.reply.answers, usage=usage, cost_usd=cost_usd)
            if not attempt.retryable or number == max_attempts:
                why_stopped = "" if attempt.retryable else ", not retryable"
                error = f"{attempt.error} (attempt {number} of {max_attempts}{why_stopped})"
                return job.record(teacher_id, error=error, usage=usage, cost_usd=cost_usd)
            delay = self.retry.delay_s(number, attempt.retry_after_s)
            logger.debug("%s [%s]: %s; retrying in %.2f s", job.image.image_path, job.family.key, attempt.error, delay)
            if self.stopping.wait(delay):
                raise RunStopped

    def _attempt(self, body: dict[str, Any], family: QuestionFamily, worst_usd: float) -> _Attempt:
        if not self.spend.reserve(worst_usd):
            raise BudgetExhausted(
                f"the next request (up to ${worst_usd:.4f}) could exceed --max-usd ${self.spend.limit_usd}"
            )
        try:
            attempt = self._send(body, family)
        except BaseException:
            self.spend.release(worst_usd)
            raise
        self.spend.settle(worst_usd, None if attempt.usage is None else self.price.cost_usd(attempt.usage))
        return attempt

    def _send(self, body: dict[str, Any], family: QuestionFamily) -> _Attempt:
        try:
            with request_limits(self.limits):
                response = self.client.chat.completions.with_raw_response.create(**body)
            reply = parse_reply(json_payload(response.text), family)
        except InvalidReply as error:
            return _Attempt(error=redact_api_key(error.reason), retryable=True, usage=error.usage)
        except openai.APIConnectionError as error:  # timeouts included
            return _Attempt(error=describe_error(error), retryable=True, usage=None, replied=False)
        except openai.APIStatusError as error:
            return _status_error_attempt(error)
        return _Attempt(reply=reply, usage=reply.usage)


def _status_error_attempt(error: openai.APIStatusError) -> _Attempt:
    if is_fatal(error):
        raise FatalTeacherError(describe_error(error)) from None
    wait_s = retry_after_seconds(error.response.headers)
    if wait_s is not None and wait_s > MAX_RETRY_AFTER_S:
        return _Attempt(error=f"{describe_error(error)}: {too_long_wait_message(wait_s)}", retryable=False)
    return _Attempt(error=describe_error(error), retryable=is_transient_status(error.status_code), retry_after_s=wait_s)


STOP_BUDGET = "budget"
STOP_INTERRUPTED = "interrupted"
STOP_FATAL = "fatal"


@dataclass
class RunReport:
    requests: int  # asked for in this run
    cached: int  # (image, family) pairs answered before this run
    in_batches: int = 0  # pairs left out because an uncollected batch already asks them
    answered: int = 0
    failed: list[TeacherRecord] = field(default_factory=list)
    skipped_images: list[SkippedImage] = field(default_factory=list)
    skipped_requests: int = 0  # requests of skipped images
    duplicates: int = 0
    stopped: str | None = None  # STOP_BUDGET, STOP_INTERRUPTED or STOP_FATAL
    fatal_error: str | None = None
    earlier_usd: float = 0.0  # the cache's spend ledger before this run
    spent_usd: float = 0.0
    unconfirmed_usd: float = 0.0

    @property
    def not_started(self) -> int:
        return self.requests - self.answered - len(self.failed) - self.skipped_requests


class _OnlineRun:
    """Keeps `concurrency` requests in flight and appends each finished record to the cache at once,
    from this (the main) thread only."""

    def __init__(
        self, teacher: OnlineTeacher, cache: TeacherCache, report: RunReport, concurrency: int, progress: bool
    ):
        self.teacher, self.cache, self.report, self.concurrency = teacher, cache, report, concurrency
        self.in_flight: dict[Future, TeacherJob] = {}
        self.bad_images: set[Path] = set()
        self.bar = tqdm(
            total=report.requests, unit="req", desc="teacher", dynamic_ncols=True, disable=None if progress else True
        )

    def run(self, jobs: Iterable[TeacherJob]) -> None:
        # Not a `with` block: leaving one waits for every worker, which is what a second Ctrl-C must not do.
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mvaema-teacher")
        try:
            with self.bar:
                try:
                    self._submit_all(pool, jobs)
                    self._drain()
                except KeyboardInterrupt:
                    self._stop_submitting()
                    self._drain()
        except KeyboardInterrupt:
            self.teacher.stopping.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise RunAbandoned(f"stopped at once; {len(self.in_flight)} answers in flight were dropped") from None
        pool.shutdown(wait=True)

    def _submit_all(self, pool: ThreadPoolExecutor, jobs: Iterable[TeacherJob]) -> None:
        for job in jobs:
            if self.report.stopped:
                break
            if job.image.path in self.bad_images:
                self._count_skipped()
                continue
            while len(self.in_flight) >= self.concurrency:
                self._collect_finished()
            self.in_flight[pool.submit(self.teacher.answer, job)] = job

    def _stop_submitting(self) -> None:
        self.report.stopped = STOP_INTERRUPTED
        self.teacher.stopping.set()
        logger.warning("interrupted: saving the %d answers in flight (Ctrl-C again to drop them)", len(self.in_flight))

    def _drain(self) -> None:
        while self.in_flight:
            self._collect_finished()

    def _collect_finished(self) -> None:
        finished, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        for future in finished:
            self._finish(self.in_flight.pop(future), future)

    def _finish(self, job: TeacherJob, future: Future) -> None:
        try:
            record = future.result()
        except BadImageError as error:
            if job.image.path not in self.bad_images:
                self.bad_images.add(job.image.path)
                self.report.skipped_images.append(SkippedImage(job.image.image_path, error.reason))
            self._count_skipped()
            return
        except RunStopped:
            return
        except BudgetExhausted:
            self.report.stopped = STOP_BUDGET
            return
        except FatalTeacherError as error:
            self.report.stopped, self.report.fatal_error = STOP_FATAL, str(error)
            return
        self.cache.append(record)
        if record.status == STATUS_OK:
            self.report.answered += 1
        else:
            self.report.failed.append(record)
        self._advance()

    def _count_skipped(self) -> None:
        self.report.skipped_requests += 1
        self._advance()

    def _advance(self) -> None:
        spend = self.teacher.spend
        self.bar.set_postfix(
            ok=self.report.answered,
            failed=len(self.report.failed),
            cached=self.report.cached,
            spent=f"${spend.spent_usd + spend.unconfirmed_usd:.2f}",
            refresh=False,
        )
        self.bar.update()


def generate(
    image_root: str | os.PathLike,
    cache_path: str | os.PathLike,
    teacher: OnlineTeacher,
    families: Sequence[QuestionFamily],
    concurrency: int = 8,
    progress: bool = True,
    batch_dirs: Sequence[str | os.PathLike] | None = None,
) -> RunReport:
    """Ask the teacher every (image, family) pair not yet answered in the cache and not pending in an
    uncollected batch of `batch_dirs` (default: the batch folders beside the cache that write to it);
    resumable at any instant. Holds the cache's lock for the whole run."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    with exclusive_use(cache=cache_path):
        scan = scan_teacher_images(image_root)
        cache = TeacherCache(cache_path)
        teacher_id = teacher.settings.teacher_id
        done = completed_keys(cache)
        all_jobs = pending_jobs(scan.images, families, teacher_id, done)
        in_batches = pending_batch_keys(batch_dirs_beside(cache_path) if batch_dirs is None else batch_dirs)
        jobs = [job for job in all_jobs if job.key(teacher_id) not in in_batches]
        report = RunReport(
            requests=len(jobs),
            cached=len(scan.images) * len(families) - len(all_jobs),
            in_batches=len(all_jobs) - len(jobs),
            skipped_images=list(scan.skipped),
            duplicates=scan.duplicates,
            earlier_usd=teacher.spend.earlier_usd,
        )
        _OnlineRun(teacher, cache, report, concurrency, progress).run(jobs)
    report.spent_usd, report.unconfirmed_usd = teacher.spend.spent_usd, teacher.spend.unconfirmed_usd
    return report
