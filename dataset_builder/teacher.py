"""The teacher client: asks a multimodal model the paper's question families about every micrograph.

One request per (micrograph, question family), as in the paper's context-augmented CoT prompts: a
caption that states the category, the family's title and its numbered sub-questions, and the
micrograph as a JPEG data URL. The answer comes back as JSON with one field per sub-question and is
checked against a pydantic model. Any OpenAI-compatible server can be the teacher (OpenAI, vLLM,
Ollama, llama.cpp): the teacher is a base URL and a model name, and both are stored on every answer.

Why it is built this way:
- Each finished answer is appended (and fsynced) to the `TeacherCache` the moment it arrives, by one
  thread, so a run killed at any instant resumes where it stopped and never pays twice for an answer.
- Retries live here, in one place, and the SDK's own retries are off: the SDK cannot retry replies it
  accepts but we cannot use (refusals, cut-off or empty answers, JSON that misses the schema), and a
  budget cap must see every attempt. Retries honour Retry-After, else back off exponentially with jitter.
- `--max-usd` reserves the worst case (every output token used) of each attempt before it is sent, so
  the run stops before the budget could be exceeded, not after.
- The Batch API path sends the very same request bodies and validates replies with the same code.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import logging
import math
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any, TextIO, TypeVar
from urllib.parse import urlsplit

import openai
from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from tqdm.auto import tqdm

from .images import BadImageError, SkippedImage, is_image_file, open_micrograph
from .question_families import (
    ANSWER_INSTRUCTIONS,
    PROMPT_VERSION,
    QuestionFamily,
    TeacherGenerationSettings,
    family_by_key,
    question_prompt,
)
from .teacher_cache import STATUS_FAILED, STATUS_OK, TeacherCache, TeacherRecord, image_content_id

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4.1"
# SEM micrographs are mostly 1024x768, and OpenAI's high detail looks at no more than 768 px on the short side;
# low detail looks at 512x512, so larger images would only make requests (and batch files) bigger.
DEFAULT_MAX_SIDE = 1024
LOW_DETAIL_MAX_SIDE = 512
JPEG_QUALITY = 90
KEY_PLACEHOLDER = "no-key-needed"  # self-hosted servers ignore the key, but the client insists on one

# ------------------------------------------------------------------------------------------------
# Prices and token arithmetic
# ------------------------------------------------------------------------------------------------

PRICES_AS_OF = "November 2026"
BATCH_PRICE_FACTOR = 0.5


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ModelPrice:
    """USD per 1M tokens, and how the model counts an image: OpenAI's tile formula, base + tile x tiles."""

    input_usd_per_1m: float
    output_usd_per_1m: float
    image_base_tokens: int = 85
    image_tile_tokens: int = 170

    def cost_usd(self, usage: Usage, batch: bool = False) -> float:
        usd = (usage.input_tokens * self.input_usd_per_1m + usage.output_tokens * self.output_usd_per_1m) / 1e6
        return usd * BATCH_PRICE_FACTOR if batch else usd


# OpenAI list prices assumed as of PRICES_AS_OF (standard tier, no cached-input discount); check
# https://openai.com/api/pricing before a large run and pass --input-usd-per-1m/--output-usd-per-1m.
# gpt-4o-mini bills images as ~33x more tokens at a lower price per token.
KNOWN_PRICES: dict[str, ModelPrice] = {
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, image_base_tokens=2833, image_tile_tokens=5667),
}


def resolve_price(
    model: str, input_usd_per_1m: float | None = None, output_usd_per_1m: float | None = None
) -> ModelPrice:
    """The price table entry for `model` (dated snapshots like `gpt-4.1-2025-04-14` included), with overrides."""
    snapshot_of = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model)
    known = KNOWN_PRICES.get(model) or KNOWN_PRICES.get(snapshot_of)
    if known is None and (input_usd_per_1m is None or output_usd_per_1m is None):
        raise ValueError(
            f"no price known for model {model!r} (known: {', '.join(KNOWN_PRICES)}); pass --input-usd-per-1m and "
            "--output-usd-per-1m (0 and 0 for a self-hosted server)"
        )
    known = known or ModelPrice(0.0, 0.0)
    return ModelPrice(
        known.input_usd_per_1m if input_usd_per_1m is None else input_usd_per_1m,
        known.output_usd_per_1m if output_usd_per_1m is None else output_usd_per_1m,
        known.image_base_tokens,
        known.image_tile_tokens,
    )


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size a micrograph is sent at: shrunk (never enlarged) so that its longer side is at most `max_side`."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    return max(1, round(width * max_side / longer)), max(1, round(height * max_side / longer))


def image_tokens(width: int, height: int, detail: str, price: ModelPrice) -> int:
    """OpenAI's published formula for gpt-4o-class models: the image is fitted into 2048x2048, then its
    short side is brought down to 768 px, and each 512 px tile costs `image_tile_tokens` on top of the
    base. Low detail is the base alone; "auto" is counted as high (an upper bound)."""
    if detail == "low":
        return price.image_base_tokens
    if max(width, height) > 2048:
        width, height = int(width * 2048 / max(width, height)), int(height * 2048 / max(width, height))
    if min(width, height) > 768:
        width, height = int(width * 768 / min(width, height)), int(height * 768 / min(width, height))
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return price.image_base_tokens + price.image_tile_tokens * tiles


CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
MESSAGE_OVERHEAD_TOKENS = 3 * 2 + 3  # per message (system, user) and the reply's priming, per OpenAI's cookbook
JSON_TOKENS_PER_ANSWER = 8  # `"answer_1": "...",` around each answer


# ------------------------------------------------------------------------------------------------
# The prompt and the answer schema
# ------------------------------------------------------------------------------------------------

# Part of the prompt: bump question_families.PROMPT_VERSION whenever this text changes.
def answer_field(number: int) -> str:
    return f"answer_{number}"


def _not_blank(answer: str) -> str:
    if not answer.strip():
        raise ValueError("the answer is empty")
    return answer.strip()


@functools.cache
def answer_model(family: QuestionFamily) -> type[BaseModel]:
    """A pydantic model with one required, non-blank string per sub-question and nothing else."""
    fields = {
        answer_field(number): (Annotated[str, AfterValidator(_not_blank)], Field(description=question))
        for number, question in enumerate(family.questions, start=1)
    }
    model_name = "".join(word.capitalize() for word in family.key.split("_")) + "Answers"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


@functools.cache
def response_format(family: QuestionFamily) -> dict[str, Any]:
    """Structured outputs (OpenAI, vLLM, Ollama and llama.cpp all accept a strict JSON schema)."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": f"{family.key}_answers",
            "strict": True,
            "schema": answer_model(family).model_json_schema(),
        },
    }


@dataclass(frozen=True)
class TeacherSettings:
    """Who the teacher is and what it is sent: server, model, image encoding and sampling settings."""

    model: str = DEFAULT_MODEL
    base_url: str = OPENAI_BASE_URL
    detail: str = "high"
    max_side: int = DEFAULT_MAX_SIDE
    generation: TeacherGenerationSettings = field(default_factory=TeacherGenerationSettings)

    @property
    def is_openai(self) -> bool:
        return is_openai_url(self.base_url)

    @property
    def teacher_id(self) -> str:
        """`openai:<model>` or `<host>:<model>`: without the port, so a local server moved to another port
        stays the same teacher and its cached answers still count."""
        return f"{'openai' if self.is_openai else urlsplit(self.base_url).hostname}:{self.model}"

    @property
    def output_limit_field(self) -> str:
        # OpenAI deprecated max_tokens (its reasoning models reject it); every other server knows max_tokens.
        return "max_completion_tokens" if self.is_openai else "max_tokens"


def is_openai_url(base_url: str) -> bool:
    return urlsplit(base_url).hostname == "api.openai.com"


def resolve_base_url(base_url: str | None) -> str:
    """The server the client will talk to: --base-url, else $OPENAI_BASE_URL, else OpenAI."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL


def chat_request_body(
    settings: TeacherSettings, family: QuestionFamily, category: str, image_url: str
) -> dict[str, Any]:
    """The /v1/chat/completions body, shared by online requests and Batch API lines."""
    return {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": ANSWER_INSTRUCTIONS},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question_prompt(family, category)},
                    {"type": "image_url", "image_url": {"url": image_url, "detail": settings.detail}},
                ],
            },
        ],
        "response_format": response_format(family),
        "temperature": settings.generation.temperature,
        "top_p": settings.generation.top_p,
        settings.output_limit_field: settings.generation.max_output_tokens,
    }


@functools.cache
def _prompt_text(family: QuestionFamily, category: str) -> str:
    """All text the model reads besides the image (the schema is shown to it too)."""
    return ANSWER_INSTRUCTIONS + question_prompt(family, category) + json.dumps(response_format(family))


def estimated_text_tokens(family: QuestionFamily, category: str) -> int:
    return math.ceil(len(_prompt_text(family, category)) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS


def text_token_bound(family: QuestionFamily, category: str) -> int:
    """An upper bound: a token never covers less than one UTF-8 byte."""
    return len(_prompt_text(family, category).encode()) + MESSAGE_OVERHEAD_TOKENS


# ------------------------------------------------------------------------------------------------
# Micrographs and jobs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Micrograph:
    path: Path
    image_path: str  # relative to the image root, with "/" separators
    category: str
    image_id: str  # sha256 of the file's bytes


@dataclass
class ImageScan:
    micrographs: list[Micrograph]
    skipped: list[SkippedImage]
    duplicates: int  # byte-identical copies of an earlier file: asked once, under the first file's path


def scan_image_folder(image_root: str | os.PathLike) -> ImageScan:
    """Every image under `image_root/<Category>/` (sub-folders included), identified by content hash."""
    root = Path(image_root)
    layout_hint = "expected one sub-folder per category holding its images: IMAGE_ROOT/<Category>/<image>"
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found; {layout_hint}")
    category_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
    if not category_dirs:
        raise ValueError(f"{root}: no category sub-folders; {layout_hint}")
    skipped = [
        SkippedImage(path.name, "not inside a category folder")
        for path in sorted(root.iterdir())
        if is_image_file(path)
    ]
    micrographs: list[Micrograph] = []
    seen_ids: set[str] = set()
    duplicates = 0
    for category_dir in category_dirs:
        for path in sorted(category_dir.rglob("*")):
            relative = path.relative_to(root)
            if not is_image_file(path) or any(part.startswith(".") for part in relative.parts):
                continue
            try:
                image_id = image_content_id(path)
            except OSError as error:
                skipped.append(SkippedImage(relative.as_posix(), f"cannot read file ({error.strerror})"))
                continue
            if image_id in seen_ids:
                duplicates += 1
                continue
            seen_ids.add(image_id)
            micrographs.append(Micrograph(path, relative.as_posix(), category_dir.name, image_id))
    return ImageScan(micrographs, skipped, duplicates)


@dataclass(frozen=True)
class EncodedImage:
    data_url: str
    width: int
    height: int


def encode_micrograph(path: str | os.PathLike, max_side: int) -> EncodedImage:
    """RGB JPEG data URL of the micrograph, shrunk to `max_side`; raises `BadImageError` for unusable files."""
    image = open_micrograph(path)
    size = scaled_size(*image.size, max_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return EncodedImage("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), *size)


def read_image_size(path: Path) -> tuple[int, int]:
    """Width and height from the file header alone (fast, for estimates); `BadImageError` if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(path, f"cannot read the image header ({error})") from error


TeacherKey = tuple[str, str, str, str]  # (image_id, family, prompt_version, teacher), as in TeacherRecord.key


@dataclass(frozen=True)
class TeacherJob:
    """One request: one micrograph, one question family."""

    micrograph: Micrograph
    family: QuestionFamily

    def key(self, teacher_id: str) -> TeacherKey:
        return (self.micrograph.image_id, self.family.key, PROMPT_VERSION, teacher_id)

    def record(
        self,
        teacher_id: str,
        *,
        answers: Sequence[str] = (),
        error: str | None = None,
        usage: Usage = Usage(),
        cost_usd: float = 0.0,
    ) -> TeacherRecord:
        return TeacherRecord(
            image_id=self.micrograph.image_id,
            image_path=self.micrograph.image_path,
            category=self.micrograph.category,
            family=self.family.key,
            prompt_version=PROMPT_VERSION,
            teacher=teacher_id,
            questions=list(self.family.questions),
            answers=list(answers),
            status=STATUS_FAILED if error else STATUS_OK,
            error=error,
            usage=usage.as_dict(),
            cost_usd=cost_usd,
        )


def pending_jobs(
    micrographs: Iterable[Micrograph],
    families: Sequence[QuestionFamily],
    teacher_id: str,
    done: AbstractSet[TeacherKey],
) -> list[TeacherJob]:
    """Jobs without a successful answer yet, image by image (so each image is encoded once for all families)."""
    jobs = (TeacherJob(micrograph, family) for micrograph in micrographs for family in families)
    return [job for job in jobs if job.key(teacher_id) not in done]


def completed_keys(cache: TeacherCache) -> set[TeacherKey]:
    records, read_report = cache.read()
    for line_number, problem in read_report.bad_lines:
        logger.warning("%s line %d ignored (cut off by a crash?): %s", cache.path, line_number, problem)
    return {record.key for record in records if record.status == STATUS_OK}


# ------------------------------------------------------------------------------------------------
# Replies: what counts as an answer
# ------------------------------------------------------------------------------------------------


class InvalidReply(ValueError):
    """A reply that cannot be used (refused, cut off, empty, off-schema); `usage` still says what it cost."""

    def __init__(self, reason: str, usage: Usage = Usage()):
        super().__init__(reason)
        self.reason = reason
        self.usage = usage


class _ReplyMessage(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _ReplyChoice(BaseModel):
    message: _ReplyMessage
    finish_reason: str | None = None


class _ReplyUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _ChatCompletionReply(BaseModel):
    """Just the parts of a chat completion we rely on; servers differ in everything else."""

    choices: list[_ReplyChoice] = Field(min_length=1)
    usage: _ReplyUsage | None = None

    def token_usage(self) -> Usage:
        usage = self.usage or _ReplyUsage()
        return Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)


@dataclass(frozen=True)
class TeacherReply:
    answers: list[str]  # answers[i] answers the family's questions[i]
    usage: Usage


def _first_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "reply"
    return f"{error.error_count()} problem(s), first: {where}: {first['msg']}"


def parse_reply(payload: object, family: QuestionFamily) -> TeacherReply:
    """The answers in a chat-completion JSON payload, or `InvalidReply` saying what is wrong with it."""
    try:
        completion = _ChatCompletionReply.model_validate(payload)
    except ValidationError as error:
        raise InvalidReply(f"the reply is not a chat completion ({_first_problem(error)})") from None
    usage = completion.token_usage()
    choice = completion.choices[0]
    if choice.finish_reason == "length":
        raise InvalidReply("the answer was cut off at the output-token limit (finish_reason 'length')", usage)
    if choice.finish_reason == "content_filter":
        raise InvalidReply("the answer was withheld by the content filter", usage)
    if choice.message.refusal:
        raise InvalidReply(f"the teacher refused: {choice.message.refusal}", usage)
    if not (choice.message.content or "").strip():
        raise InvalidReply("the reply has no content", usage)
    try:
        answers = answer_model(family).model_validate_json(choice.message.content)
    except ValidationError as error:
        raise InvalidReply(
            f"the answer JSON does not fit the {family.key} schema ({_first_problem(error)})", usage
        ) from None
    return TeacherReply([getattr(answers, answer_field(n)) for n in range(1, len(family.questions) + 1)], usage)


def _json_payload(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidReply(f"the response body is not JSON ({error})") from None


# ------------------------------------------------------------------------------------------------
# Errors and retries
# ------------------------------------------------------------------------------------------------


class FatalTeacherError(RuntimeError):
    """The teacher cannot answer anything (bad key, unknown model, unsupported parameter, no quota)."""


class BudgetExhausted(RuntimeError):
    """The next attempt could push the spend past --max-usd."""


# Errors that would repeat for every request: stop the run instead of failing every record.
FATAL_ERROR_CODES = frozenset(
    {"invalid_api_key", "insufficient_quota", "model_not_found", "unsupported_parameter", "unsupported_value"}
)


def is_fatal(error: openai.APIStatusError) -> bool:
    fatal_types = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
    return isinstance(error, fatal_types) or error.code in FATAL_ERROR_CODES


def is_transient_status(status_code: int) -> bool:
    return status_code in (408, 409, 429) or status_code >= 500


def is_transient(error: openai.APIConnectionError | openai.APIStatusError) -> bool:
    if isinstance(error, openai.APIConnectionError):
        return True
    return is_transient_status(error.status_code) and not is_fatal(error)


def retry_after_seconds(headers: Any) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date."""
    for name, seconds_per_unit in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * seconds_per_unit
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError):
                continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _retry_after_of(error: Exception) -> float | None:
    return retry_after_seconds(error.response.headers) if isinstance(error, openai.APIStatusError) else None


def redact_api_key(text: str) -> str:
    """Every message we print or store passes here: servers sometimes echo the key in error bodies."""
    key = os.environ.get("OPENAI_API_KEY")
    return text.replace(key, "[OPENAI_API_KEY]") if key else text


def describe_error(error: BaseException) -> str:
    if isinstance(error, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(error, openai.APIConnectionError):
        return redact_api_key(f"connection error ({error.__cause__ or error})")
    if isinstance(error, openai.APIStatusError):
        body_message = error.body.get("message") if isinstance(error.body, dict) else None
        code = f" {error.code}" if error.code else ""
        return redact_api_key(f"HTTP {error.status_code}{code}: {body_message or error.message}")
    return redact_api_key(str(error))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for 429/5xx/timeouts/dropped connections and unusable replies: more patient than the SDK's 2."""

    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Wait before attempt `attempt + 1`: what the server asked for, else exponential backoff with jitter."""
        if retry_after_s is not None:
            return retry_after_s * random.uniform(1.0, 1.1)  # a little late, so waiting workers do not return at once
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


T = TypeVar("T")


def call_with_retries(call: Callable[[], T], retry: RetryPolicy) -> T:
    """For idempotent management calls (uploads, batch look-ups, downloads)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except (openai.APIConnectionError, openai.APIStatusError) as error:
            if not is_transient(error) or attempt >= retry.max_attempts:
                raise
            delay = retry.delay_s(attempt, _retry_after_of(error))
            logger.info("%s; retrying in %.1f s", describe_error(error), delay)
            time.sleep(delay)


def make_client(base_url: str, timeout_s: float = 180.0) -> openai.OpenAI:
    """An OpenAI client with its own retries off (we retry, in one place). The key comes from
    $OPENAI_API_KEY only; a self-hosted server without one gets a placeholder."""
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if is_openai_url(base_url):
            raise ValueError("OPENAI_API_KEY is not set: export it (the key is never read from the command line)")
        api_key = KEY_PLACEHOLDER
    return openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)


# ------------------------------------------------------------------------------------------------
# Spend
# ------------------------------------------------------------------------------------------------


class SpendTracker:
    """Money spent, and the worst case of the attempts in flight, against an optional limit (thread-safe).

    `spent_usd` comes from the usage servers report. `unconfirmed_usd` is the worst case of attempts that
    never got a reply (timeouts, dropped connections): the server may have finished and billed them, so
    they keep counting against the limit.
    """

    def __init__(self, limit_usd: float | None = None):
        self.limit_usd = limit_usd
        self.spent_usd = 0.0
        self.unconfirmed_usd = 0.0
        self._reserved_usd = 0.0
        self._in_flight = 0  # counted, not inferred from _reserved_usd, which float rounding leaves near zero
        self._changed = threading.Condition()

    def reserve(self, worst_usd: float) -> bool:
        """Reserve an attempt's worst case; False once it cannot fit even with nothing else in flight.
        While other attempts are in flight, wait for them: they usually cost far less than reserved."""
        with self._changed:
            while self.limit_usd is not None and self._committed_usd() + worst_usd > self.limit_usd:
                if self._in_flight == 0:
                    return False
                self._changed.wait()
            self._reserved_usd += worst_usd
            self._in_flight += 1
            return True

    def settle(self, worst_usd: float, actual_usd: float | None) -> None:
        """Replace a reservation by the actual cost, or by the worst case if the cost is unknown (None)."""
        with self._changed:
            self._reserved_usd -= worst_usd
            self._in_flight -= 1
            if actual_usd is None:
                self.unconfirmed_usd += worst_usd
            else:
                self.spent_usd += actual_usd
            self._changed.notify_all()

    def _committed_usd(self) -> float:
        return self.spent_usd + self.unconfirmed_usd + self._reserved_usd


# ------------------------------------------------------------------------------------------------
# Online runs
# ------------------------------------------------------------------------------------------------


@dataclass
class _Attempt:
    reply: TeacherReply | None = None
    error: str = ""
    retryable: bool = False
    retry_after_s: float | None = None
    usage: Usage = Usage()
    cost_known: bool = True  # False when no reply came back: the server may still have done (and billed) the work


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
    ):
        self.client = client
        self.settings = settings
        self.price = price
        self.retry = retry
        self.spend = spend or SpendTracker()
        # Jobs come image by image: keeping a few encoded images saves re-encoding one for every family.
        self._encode = functools.lru_cache(maxsize=encoded_images_kept)(
            functools.partial(encode_micrograph, max_side=settings.max_side)
        )

    def worst_case_usd(self, job: TeacherJob, image: EncodedImage) -> float:
        input_tokens = image_tokens(image.width, image.height, self.settings.detail, self.price) + text_token_bound(
            job.family, job.micrograph.category
        )
        return self.price.cost_usd(Usage(input_tokens, self.settings.generation.max_output_tokens))

    def answer(self, job: TeacherJob) -> TeacherRecord:
        """Raises `BadImageError`, `BudgetExhausted` or `FatalTeacherError`; every other problem ends in a record."""
        image = self._encode(job.micrograph.path)
        body = chat_request_body(self.settings, job.family, job.micrograph.category, image.data_url)
        worst_usd = self.worst_case_usd(job, image)
        teacher_id, max_attempts = self.settings.teacher_id, self.retry.max_attempts
        usage, number = Usage(), 0
        while True:
            number += 1
            attempt = self._attempt(body, job.family, worst_usd)
            usage += attempt.usage
            if attempt.reply is not None:
                return job.record(
                    teacher_id, answers=attempt.reply.answers, usage=usage, cost_usd=self.price.cost_usd(usage)
                )
            if not attempt.retryable or number == max_attempts:
                why_stopped = "" if attempt.retryable else ", not retryable"
                error = f"{attempt.error} (attempt {number} of {max_attempts}{why_stopped})"
                return job.record(teacher_id, error=error, usage=usage, cost_usd=self.price.cost_usd(usage))
            delay = self.retry.delay_s(number, attempt.retry_after_s)
            logger.debug(
                "%s [%s]: %s; retrying in %.2f s", job.micrograph.image_path, job.family.key, attempt.error, delay
            )
            time.sleep(delay)

    def _attempt(self, body: dict[str, Any], family: QuestionFamily, worst_usd: float) -> _Attempt:
        if not self.spend.reserve(worst_usd):
            raise BudgetExhausted(
                f"the next request (up to ${worst_usd:.4f}) could exceed --max-usd ${self.spend.limit_usd}"
            )
        try:
            attempt = self._send(body, family)
        except BaseException:
            self.spend.settle(worst_usd, 0.0)
            raise
        self.spend.settle(worst_usd, self.price.cost_usd(attempt.usage) if attempt.cost_known else None)
        return attempt

    def _send(self, body: dict[str, Any], family: QuestionFamily) -> _Attempt:
        try:
            response = self.client.chat.completions.with_raw_response.create(**body)
            reply = parse_reply(_json_payload(response.text), family)
        except InvalidReply as error:
            return _Attempt(error=redact_api_key(error.reason), retryable=True, usage=error.usage)
        except openai.APIConnectionError as error:  # timeouts included
            return _Attempt(error=describe_error(error), retryable=True, cost_known=False)
        except openai.APIStatusError as error:
            if is_fatal(error):
                raise FatalTeacherError(describe_error(error)) from None
            return _Attempt(
                error=describe_error(error),
                retryable=is_transient_status(error.status_code),
                retry_after_s=retry_after_seconds(error.response.headers),
            )
        return _Attempt(reply=reply, usage=reply.usage)


STOP_BUDGET = "budget"
STOP_INTERRUPTED = "interrupted"
STOP_FATAL = "fatal"


@dataclass
class RunReport:
    requests: int  # asked for in this run
    cached: int  # (image, family) pairs answered before this run
    answered: int = 0
    failed: list[TeacherRecord] = field(default_factory=list)
    skipped_images: list[SkippedImage] = field(default_factory=list)
    skipped_requests: int = 0  # requests of skipped images
    duplicates: int = 0
    stopped: str | None = None  # STOP_BUDGET, STOP_INTERRUPTED or STOP_FATAL
    fatal_error: str | None = None
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
        with self.bar, ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mvaema-teacher") as pool:
            try:
                for job in jobs:
                    if self.report.stopped:
                        break
                    if job.micrograph.path in self.bad_images:
                        self._count_skipped()
                        continue
                    while len(self.in_flight) >= self.concurrency:
                        self._collect_finished()
                    self.in_flight[pool.submit(self.teacher.answer, job)] = job
            except KeyboardInterrupt:
                self.report.stopped = STOP_INTERRUPTED
                logger.warning(
                    "interrupted: saving the %d answers in flight (Ctrl-C again to drop them)", len(self.in_flight)
                )
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
            if job.micrograph.path not in self.bad_images:
                self.bad_images.add(job.micrograph.path)
                self.report.skipped_images.append(SkippedImage(job.micrograph.image_path, error.reason))
            self._count_skipped()
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
) -> RunReport:
    """Ask the teacher every (image, family) pair not yet answered in the cache; resumable at any instant."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    scan = scan_image_folder(image_root)
    cache = TeacherCache(cache_path)
    jobs = pending_jobs(scan.micrographs, families, teacher.settings.teacher_id, completed_keys(cache))
    report = RunReport(
        requests=len(jobs),
        cached=len(scan.micrographs) * len(families) - len(jobs),
        skipped_images=list(scan.skipped),
        duplicates=scan.duplicates,
    )
    _OnlineRun(teacher, cache, report, concurrency, progress).run(jobs)
    report.spent_usd, report.unconfirmed_usd = teacher.spend.spent_usd, teacher.spend.unconfirmed_usd
    return report


# ------------------------------------------------------------------------------------------------
# Estimate
# ------------------------------------------------------------------------------------------------


@dataclass
class TeacherEstimate:
    """Tokens and dollars for the requests a run would still make, before anything is spent."""

    teacher: str
    detail: str
    max_side: int
    images: int
    skipped_images: list[SkippedImage]
    duplicates: int
    families: int
    requests: int
    cached_requests: int
    image_tokens: int
    text_tokens: int
    expected_output_tokens: int
    max_output_tokens: int
    price: ModelPrice

    @property
    def input_tokens(self) -> int:
        return self.image_tokens + self.text_tokens

    def cost_usd(self, *, worst_case: bool = False, batch: bool = False) -> float:
        output_tokens = self.max_output_tokens if worst_case else self.expected_output_tokens
        return self.price.cost_usd(Usage(self.input_tokens, output_tokens), batch=batch)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{key: value for key, value in asdict(self).items() if key != "skipped_images"},
            "skipped_images": [asdict(skipped) for skipped in self.skipped_images],
            "input_tokens": self.input_tokens,
            "prices_as_of": PRICES_AS_OF,
            "expected_usd": self.cost_usd(),
            "worst_case_usd": self.cost_usd(worst_case=True),
            "batch_expected_usd": self.cost_usd(batch=True),
            "batch_worst_case_usd": self.cost_usd(worst_case=True, batch=True),
        }


def estimate(
    image_root: str | os.PathLike,
    settings: TeacherSettings,
    price: ModelPrice,
    families: Sequence[QuestionFamily],
    done: AbstractSet[TeacherKey] = frozenset(),
    expected_answer_tokens: int = 70,
) -> TeacherEstimate:
    """Count requests and tokens from image headers alone (fast: nothing is decoded or sent)."""
    scan = scan_image_folder(image_root)
    skipped = list(scan.skipped)
    jobs = pending_jobs(scan.micrographs, families, settings.teacher_id, done)
    sizes: dict[Path, tuple[int, int] | None] = {}
    totals = dict(requests=0, image_tokens=0, text_tokens=0, expected_output_tokens=0)
    for job in jobs:
        path = job.micrograph.path
        if path not in sizes:
            try:
                sizes[path] = scaled_size(*read_image_size(path), settings.max_side)
            except BadImageError as error:
                sizes[path] = None
                skipped.append(SkippedImage(job.micrograph.image_path, error.reason))
        if sizes[path] is None:
            continue
        totals["requests"] += 1
        totals["image_tokens"] += image_tokens(*sizes[path], settings.detail, price)
        totals["text_tokens"] += estimated_text_tokens(job.family, job.micrograph.category)
        totals["expected_output_tokens"] += len(job.family.questions) * (
            expected_answer_tokens + JSON_TOKENS_PER_ANSWER
        )
    return TeacherEstimate(
        teacher=settings.teacher_id,
        detail=settings.detail,
        max_side=settings.max_side,
        images=len(scan.micrographs),
        skipped_images=skipped,
        duplicates=scan.duplicates,
        families=len(families),
        cached_requests=len(scan.micrographs) * len(families) - len(jobs),
        max_output_tokens=totals["requests"] * settings.generation.max_output_tokens,
        price=price,
        **totals,
    )


# ------------------------------------------------------------------------------------------------
# Batch API
# ------------------------------------------------------------------------------------------------

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
        _write_atomically(batch_dir / BATCH_STATE_FILE, json.dumps(asdict(self), indent=1))

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
    return f"{job.micrograph.image_id}:{job.family.key}"


class _PartFile:
    """The requests (the Batch API's input) and the manifest (which image each custom_id stands for) of one part."""

    def __init__(self, batch_dir: Path, index: int):
        self.index = index
        self.paths = [batch_part_file(batch_dir, index, "requests"), batch_part_file(batch_dir, index, "manifest")]
        self.handles = [_open_temporary(path) for path in self.paths]  # kept open until commit() or abandon()
        self.requests = 0
        self.bytes = 0

    def add(self, request_line: str, manifest_line: str) -> None:
        self.handles[0].write(request_line)
        self.handles[1].write(manifest_line)
        self.requests += 1
        self.bytes += len(request_line.encode())

    def commit(self) -> BatchPart:
        for handle, path in zip(self.handles, self.paths, strict=True):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            os.replace(handle.name, path)
        return BatchPart(id=uuid.uuid4().hex, index=self.index, requests=self.requests, created_at=time.time())

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
                        f"{job.micrograph.path}: one request is {line_bytes:,} bytes, over the "
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
                part.add(request_line, manifest_line)
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
        if job.micrograph.path in bad_images:
            return None
        try:
            image = self._encode(job.micrograph.path)
        except BadImageError as error:
            bad_images.add(job.micrograph.path)
            report.skipped_images.append(SkippedImage(job.micrograph.image_path, error.reason))
            return None
        body = chat_request_body(self.settings, job.family, job.micrograph.category, image.data_url)
        request = {"custom_id": custom_id(job), "method": "POST", "url": BATCH_ENDPOINT, "body": body}
        manifest = {
            "custom_id": custom_id(job),
            "image_id": job.micrograph.image_id,
            "image_path": job.micrograph.image_path,
            "category": job.micrograph.category,
            "family": job.family.key,
        }
        input_tokens = image_tokens(image.width, image.height, self.settings.detail, self.price) + text_token_bound(
            job.family, job.micrograph.category
        )
        worst_usd = self.price.cost_usd(Usage(input_tokens, self.settings.generation.max_output_tokens), batch=True)
        return json.dumps(request) + "\n", json.dumps(manifest) + "\n", worst_usd


def _read_manifest(batch_dir: Path, part: BatchPart) -> list[dict[str, str]]:
    path = batch_part_file(batch_dir, part.index, "manifest")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _job_from_manifest(entry: dict[str, str], image_root: Path) -> TeacherJob:
    micrograph = Micrograph(
        image_root / entry["image_path"], entry["image_path"], entry["category"], entry["image_id"]
    )
    return TeacherJob(micrograph, family_by_key(entry["family"]))


def _open_batch_state(
    batch_dir: Path, settings: TeacherSettings, price: ModelPrice, image_root: Path, cache_path: Path
) -> BatchState:
    state = BatchState.load(batch_dir)
    if state is None:
        batch_dir.mkdir(parents=True, exist_ok=True)
        state = BatchState(
            teacher=settings.teacher_id,
            base_url=settings.base_url,
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
    """
    batch_dir, image_root = Path(batch_dir), Path(image_root)
    state = _open_batch_state(batch_dir, settings, price, image_root, Path(cache_path))
    report = BatchSubmitReport()
    for part in state.parts:
        if part.batch_id is None:
            _send_part(client, state, part, batch_dir, retry)
            report.submitted.append(part)

    scan = scan_image_folder(image_root)
    report.skipped_images, report.duplicates = list(scan.skipped), scan.duplicates
    done = completed_keys(TeacherCache(cache_path))
    in_batches = {
        (entry["image_id"], entry["family"], PROMPT_VERSION, settings.teacher_id)
        for part in state.parts
        if not part.collected
        for entry in _read_manifest(batch_dir, part)
    }
    all_keys = {TeacherJob(m, f).key(settings.teacher_id) for m in scan.micrographs for f in families}
    report.cached, report.in_earlier_batches = len(all_keys & done), len(all_keys & in_batches - done)
    jobs = pending_jobs(scan.micrographs, families, settings.teacher_id, done | in_batches)

    writer = _BatchWriter(batch_dir, settings, price, max_requests, max_bytes)
    for part in writer.parts(jobs, len(state.parts), max_usd, report):
        state.parts.append(part)
        state.save(batch_dir)
        _send_part(client, state, part, batch_dir, retry)
        report.submitted.append(part)
    return report


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
            time.sleep(retry.delay_s(attempt, _retry_after_of(error)))


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
    state = _load_state(batch_dir)
    cache = TeacherCache(cache_path or state.cache_path)
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
        cost_usd = price.cost_usd(error.usage, batch=True)
        return job.record(teacher_id, error=redact_api_key(error.reason), usage=error.usage, cost_usd=cost_usd)
    return job.record(
        teacher_id, answers=reply.answers, usage=reply.usage, cost_usd=price.cost_usd(reply.usage, batch=True)
    )
