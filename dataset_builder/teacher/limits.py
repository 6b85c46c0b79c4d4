"""Limits on one request that the HTTP stack does not set: a total deadline and a maximum reply size.

httpx's timeouts bound each socket operation (connecting, one read, one write), not a request: a server that
sends a byte a second never trips a 5 s read timeout and can hold a worker for as long as it likes, and a reply
has no size limit, so an endless body is read into memory until the process dies. Both limits are enforced
here, at the socket, so they cover every phase of a request (connecting, TLS, the status line and headers, the
body) and error replies as much as answers.

The client made by `limited_http_client` carries a network backend that checks the limits of the request in
progress on the calling thread; a request made outside `request_limits(...)` (Batch API uploads and downloads,
which are large and slow by nature) has none.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpcore2
import httpx2
import openai

T = TypeVar("T")
MIB = 1 << 20
# A chat completion of 3,500 output tokens is about 20 KB of JSON: 4 MiB leaves room for any honest reply.
DEFAULT_MAX_REPLY_BYTES = 4 * MIB


class RequestDeadlinePassed(httpcore2.ReadTimeout):
    """Mapped by httpx to its ReadTimeout and by openai to APITimeoutError, like any other timeout."""


class ReplyTooLarge(httpcore2.ReadError):
    """Mapped by httpx to its ReadError and by openai to APIConnectionError: the reply never arrived whole."""


@dataclass(frozen=True)
class RequestLimits:
    total_s: float
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES


class _RequestInProgress:
    def __init__(self, limits: RequestLimits):
        self.limits = limits
        self.deadline = time.monotonic() + limits.total_s
        self.bytes_read = 0


_in_progress = threading.local()  # each worker thread makes its own requests, one at a time


@contextlib.contextmanager
def request_limits(limits: RequestLimits) -> Iterator[None]:
    """Apply `limits` to the requests this thread makes inside the block (through a `limited_http_client`)."""
    _in_progress.request = _RequestInProgress(limits)
    try:
        yield
    finally:
        _in_progress.request = None


def _bounded_timeout(timeout: float | None) -> float | None:
    """The socket operation's own timeout, shortened to what is left of the request's deadline."""
    request: _RequestInProgress | None = getattr(_in_progress, "request", None)
    if request is None:
        return timeout
    left = request.deadline - time.monotonic()
    if left <= 0:
        raise RequestDeadlinePassed(f"it ran past its {request.limits.total_s:g} s deadline (--timeout)")
    return left if timeout is None else min(timeout, left)


def _within_deadline(operation: Callable[[float | None], T], timeout: float | None) -> T:
    """Run a socket operation with its timeout shortened to the deadline; one that timed out because the deadline
    came first says so."""
    try:
        return operation(_bounded_timeout(timeout))
    except httpcore2.TimeoutException:
        _bounded_timeout(None)  # raises RequestDeadlinePassed if that is why
        raise


def deadline_passed(error: BaseException) -> RequestDeadlinePassed | None:
    """The `RequestDeadlinePassed` behind an error (httpx and openai wrap it), if any."""
    while error is not None and not isinstance(error, RequestDeadlinePassed):
        error = error.__cause__
    return error


def _count_reply_bytes(data: bytes) -> None:
    request: _RequestInProgress | None = getattr(_in_progress, "request", None)
    if request is None:
        return
    request.bytes_read += len(data)
    if request.bytes_read > request.limits.max_reply_bytes:
        limit_mib = request.limits.max_reply_bytes / MIB
        raise ReplyTooLarge(f"the reply exceeded the {limit_mib:g} MiB limit; it was not read further")


class _LimitedStream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream):
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = _within_deadline(functools.partial(self._stream.read, max_bytes), timeout)
        _count_reply_bytes(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        _within_deadline(functools.partial(self._stream.write, buffer), timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None):
        return _LimitedStream(self._stream.start_tls(ssl_context, server_hostname, _bounded_timeout(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _LimitedBackend(httpcore2.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore2.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self._backend.connect_tcp(host, port, _bounded_timeout(timeout), local_address, socket_options)
        return _LimitedStream(stream)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return _LimitedStream(self._backend.connect_unix_socket(path, _bounded_timeout(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def limited_http_client() -> httpx2.Client:
    """The openai SDK's default HTTP client, its connections made by the limit-checking backend. Replies are
    asked for uncompressed, so the bytes counted are about the bytes kept."""
    transport = httpx2.HTTPTransport()
    # httpx has no option for the network backend of the connection pool it makes, so it is set on that pool.
    transport._pool._network_backend = _LimitedBackend()
    return openai.DefaultHttpxClient(transport=transport, headers={"Accept-Encoding": "identity"})
