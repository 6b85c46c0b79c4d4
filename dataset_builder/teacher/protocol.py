"""What is sent and what counts as an answer: the teacher's settings, the request body (prompt, image as a
JPEG data URL, strict JSON answer schema) and the validation of chat-completion replies.

One request per (micrograph, question family), as in the paper's context-augmented CoT prompts: a
caption that states the category, the family's title and its numbered sub-questions, and the
micrograph. The answer comes back as JSON with one field per sub-question and is checked against a
pydantic model. Online requests and Batch API lines share these bodies and this validation.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any
from urllib.parse import urlsplit

from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from ..images import open_micrograph
from ..question_families import ANSWER_INSTRUCTIONS, QuestionFamily, TeacherGenerationSettings, question_prompt
from .key_leaks import leaked_key_variable

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4.1"
# SEM micrographs are mostly 1024x768, and OpenAI's high detail looks at no more than 768 px on the short side;
# low detail looks at 512x512, so larger images would only make requests (and batch files) bigger.
DEFAULT_MAX_SIDE = 1024
LOW_DETAIL_MAX_SIDE = 512
JPEG_QUALITY = 90
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English text
MESSAGE_OVERHEAD_TOKENS = 3 * 2 + 3  # per message (system, user) and the reply's priming, per OpenAI's cookbook


@dataclass(frozen=True)
class Usage:
    """Tokens a reply was billed for, as the server reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


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


def is_openai_url(base_url: str) -> bool:
    return urlsplit(base_url).hostname == "api.openai.com"


def resolve_base_url(base_url: str | None) -> str:
    """The server the client will talk to: --base-url, else $OPENAI_BASE_URL, else OpenAI."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL


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


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size a micrograph is sent at: shrunk (never enlarged) so that its longer side is at most `max_side`."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    return max(1, round(width * max_side / longer)), max(1, round(height * max_side / longer))


@dataclass(frozen=True)
class EncodedImage:
    data_url: str
    width: int
    height: int


def encode_micrograph(path: str | os.PathLike, max_side: int) -> EncodedImage:
    """RGB JPEG data URL of the micrograph, shrunk to `max_side`; raises `BadImageError` for unusable files."""
    image = open_micrograph(path, max_side=max_side)  # reduced while decoded, never below the side asked for
    size = scaled_size(*image.size, max_side)
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return EncodedImage("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), *size)


# ------------------------------------------------------------------------------------------------
# Replies: what counts as an answer
# ------------------------------------------------------------------------------------------------


class InvalidReply(ValueError):
    """A reply that cannot be used (refused, cut off, empty, off-schema). `usage` says what it cost, or is
    None when the server did not say (a body that is not JSON, a reply without `usage`)."""

    def __init__(self, reason: str, usage: Usage | None = None):
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

    def token_usage(self) -> Usage | None:
        """None when the server did not report both token counts: the cost is then unknown, not zero."""
        if self.usage is None or self.usage.prompt_tokens is None or self.usage.completion_tokens is None:
            return None
        return Usage(self.usage.prompt_tokens, self.usage.completion_tokens)


@dataclass(frozen=True)
class TeacherReply:
    answers: list[str]  # answers[i] answers the family's questions[i]
    usage: Usage | None  # None: the server did not report it


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
    if variable := leaked_key_variable(choice.message.content):
        raise InvalidReply(f"the answer contains the API key (${variable}), so it was not stored", usage)
    try:
        answers = answer_model(family).model_validate_json(choice.message.content)
    except ValidationError as error:
        raise InvalidReply(
            f"the answer JSON does not fit the {family.key} schema ({_first_problem(error)})", usage
        ) from None
    return TeacherReply([getattr(answers, answer_field(n)) for n in range(1, len(family.questions) + 1)], usage)


def json_payload(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidReply(f"the response body is not JSON ({error})") from None
