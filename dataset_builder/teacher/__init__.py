"""The teacher client: asks a multimodal model (any OpenAI-compatible server: OpenAI, vLLM, Ollama,
llama.cpp) the paper's question families about every micrograph, online or through the Batch API.

    pricing      list prices, token arithmetic, the estimate of a run
    protocol     settings, request body (prompt, image, answer schema), reply validation
    jobs         the images of a folder and the (image, family) requests still to ask
    credentials  which key goes where; URLs stored without credentials; the client factory
    retry        error classes, transient or fatal, Retry-After, the retry policy
    spend        the spend ledger beside a cache and the --max-usd tracker
    locks        one process per cache and per batch folder
    online       the online run
    batch        the Batch API: submit, status, collect
    cli          the `mvaema-teacher` command
"""

from .batch import (
    BATCH_MAX_BYTES,
    BATCH_MAX_REQUESTS,
    BatchPart,
    BatchState,
    batch_collect,
    batch_part_file,
    batch_status,
    batch_submit,
)
from .credentials import make_client, public_url, redact_api_key
from .jobs import TeacherImage, TeacherJob, completed_keys, scan_teacher_images
from .online import OnlineTeacher, RunReport, generate
from .pricing import KNOWN_PRICES, JSON_TOKENS_PER_ANSWER, ModelPrice, TeacherEstimate, estimate, resolve_price
from .protocol import (
    DEFAULT_MAX_SIDE,
    DEFAULT_MODEL,
    TeacherSettings,
    Usage,
    answer_field,
    encode_micrograph,
    parse_reply,
)
from .retry import FatalTeacherError, RetryPolicy, describe_error, retry_after_seconds
from .spend import SpendLedger, SpendTracker

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "DEFAULT_MAX_SIDE",
    "DEFAULT_MODEL",
    "JSON_TOKENS_PER_ANSWER",
    "KNOWN_PRICES",
    "BatchPart",
    "BatchState",
    "FatalTeacherError",
    "ModelPrice",
    "OnlineTeacher",
    "RetryPolicy",
    "RunReport",
    "SpendLedger",
    "SpendTracker",
    "TeacherEstimate",
    "TeacherImage",
    "TeacherJob",
    "TeacherSettings",
    "Usage",
    "answer_field",
    "batch_collect",
    "batch_part_file",
    "batch_status",
    "batch_submit",
    "completed_keys",
    "describe_error",
    "encode_micrograph",
    "estimate",
    "generate",
    "make_client",
    "parse_reply",
    "public_url",
    "redact_api_key",
    "resolve_price",
    "retry_after_seconds",
    "scan_teacher_images",
]
