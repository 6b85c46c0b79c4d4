"""An OpenAI-compatible server on loopback for the teacher tests, with faults injected on a script.

It speaks real HTTP to the real `openai` client: `/v1/chat/completions`, `/v1/files` and
`/v1/batches`. Answers are made from the request's own JSON schema, so a valid reply always fits
whatever the client asked for, and each answer names the image and family it belongs to, so a test
can check that every answer landed on the right (image, family) even when batch results come back
shuffled.

Faults are consumed in call order from `script(...)`; when the script runs out, calls succeed.
The server counts every call per (image, family) and how many of them it answered successfully, so a
test can prove that no completed answer was ever asked for twice.
"""

from __future__ import annotations

import base64
import dataclasses
import email.parser
import email.policy
import functools
import hashlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

CHAT_FAULTS = (
    "rate_limit",  # 429 with Retry-After in seconds
    "rate_limit_ms",  # 429 with retry-after-ms
    "server_error",  # 500
    "bad_request",  # 400 invalid_image: not worth retrying
    "slow",  # a valid answer, sent after the client's timeout
    "drop",  # connection closed without a response
    "malformed_body",  # HTTP 200 whose body is not JSON
    "malformed_json",  # a chat completion whose content is not JSON
    "schema_violation",  # JSON content with a field missing and an unknown one added
    "empty_answer",  # JSON content with a blank answer
    "refusal",  # the model refuses (message.refusal)
    "length",  # finish_reason "length" with cut-off content
    "trickle",  # a valid answer, status line and headers included, one byte every `trickle_s`
    "endless",  # HTTP 200 announcing a huge body and sending it as fast as the client reads
    "leak_key",  # a valid answer that quotes the key the request was authorised with
)
ENDLESS_BODY_CEILING = 64 << 20  # the server gives up after this much, so a client without a size cap is not hung
BATCH_LINE_FAULTS = ("error", "refusal", "schema_violation", "missing")
# How a careless server may echo a key: as given, in capitals, base64 (alone or in a Basic credential),
# url-encoded byte by byte, as hex.
KEY_ECHOES = {
    "verbatim": lambda key: key,
    "upper": str.upper,
    "base64": lambda key: base64.b64encode(key.encode()).decode(),
    "basic": lambda key: base64.b64encode(f"user:{key}".encode()).decode(),
    "url": lambda key: "".join(f"%{byte:02X}" for byte in key.encode()),
    "hex": lambda key: key.encode().hex(),
}


def image_digest(data_url: str) -> str:
    return hashlib.sha256(data_url.encode()).hexdigest()[:16]


def expected_answer(digest: str, family: str, field_name: str) -> str:
    return f"{family} {field_name} for image {digest}"


@dataclass
class ChatCall:
    key: tuple[str, str]  # (image digest, family key)
    fault: str  # "ok" or one of CHAT_FAULTS
    at: float


@dataclass
class _Reply:
    status: int = 200
    payload: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False
    trickle_s: float = 0.0  # > 0: send the whole response one byte at a time
    endless: bool = False


class OpenAITestServer:
    """Start with `with OpenAITestServer() as server:`; point the client at `server.base_url`."""

    def __init__(
        self,
        *,
        retry_after_s: float = 0.05,
        slow_s: float = 3.0,
        trickle_s: float = 0.05,
        latency_s: float = 0.0,
        prompt_tokens: int = 1000,
        completion_tokens: int = 100,
        required_key: str | None = None,
        echo_key_in_errors: bool = False,
        key_echoes: tuple[str, ...] = ("verbatim",),
        batch_polls_until_done: int = 2,
        report_usage: bool = True,
    ):
        self.retry_after_s = retry_after_s
        self.slow_s = slow_s
        self.trickle_s = trickle_s
        self.latency_s = latency_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.required_key = required_key
        self.echo_key_in_errors = echo_key_in_errors
        self.key_echoes = key_echoes  # names of KEY_ECHOES used by echo_key_in_errors
        self.batch_polls_until_done = batch_polls_until_done
        self.report_usage = report_usage  # False: replies without `usage`, as some self-hosted servers send
        self.drop_next_batch_create_response = False

        self._lock = threading.Lock()
        self._faults: deque[str] = deque()
        self._batch_line_faults: deque[str] = deque()
        self.calls: list[ChatCall] = []
        self.answered: Counter[tuple[str, str]] = Counter()
        self.injected: Counter[str] = Counter()
        self.batch_lines: Counter[tuple[str, str]] = Counter()
        self.authorizations: set[str] = set()
        self.request_targets: list[str] = []  # path and query of every request, in order
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._http: ThreadingHTTPServer | None = None

    # -- control ----------------------------------------------------------------------------------
    def script(self, *faults: str) -> None:
        """Queue faults for the next chat calls, in order ("ok" lets one call through)."""
        unknown = set(faults) - set(CHAT_FAULTS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown chat faults {sorted(unknown)}; known: {CHAT_FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def script_batch_lines(self, *faults: str) -> None:
        """Queue faults for the next batch request lines, in input order ("ok" lets one through)."""
        unknown = set(faults) - set(BATCH_LINE_FAULTS) - {"ok"}
        if unknown:
            raise ValueError(f"unknown batch faults {sorted(unknown)}; known: {BATCH_LINE_FAULTS}")
        with self._lock:
            self._batch_line_faults.extend(faults)

    @property
    def pending_faults(self) -> int:
        return len(self._faults)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def start(self) -> OpenAITestServer:
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._http.daemon_threads = True
        self._http.app = self
        serve = functools.partial(self._http.serve_forever, poll_interval=0.02)
        threading.Thread(target=serve, name="openai-test-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> OpenAITestServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"  # itertools.count is atomic under the GIL

    # -- chat completions -------------------------------------------------------------------------
    def chat(self, body: dict) -> _Reply:
        key = _request_key(body)
        with self._lock:
            fault = self._faults.popleft() if self._faults else "ok"
            self.calls.append(ChatCall(key, fault, time.monotonic()))
            if fault == "ok":
                self.answered[key] += 1
            else:
                self.injected[fault] += 1
        if fault == "ok":
            return self._json_reply(self._completion(body, key), delay_s=self.latency_s)
        if fault in ("rate_limit", "rate_limit_ms"):
            header = ("Retry-After", f"{self.retry_after_s}")
            if fault == "rate_limit_ms":
                header = ("retry-after-ms", f"{self.retry_after_s * 1000:.0f}")
            return self._error(429, "Rate limit reached for requests", "rate_limit_exceeded", dict([header]))
        if fault == "server_error":
            return self._error(500, "The server had an error while processing your request", "server_error")
        if fault == "bad_request":
            return self._error(400, "The image could not be processed", "invalid_image")
        if fault == "slow":
            return self._json_reply(self._completion(body, key), delay_s=self.slow_s)
        if fault == "drop":
            return _Reply(drop=True)
        if fault == "trickle":
            return dataclasses.replace(self._json_reply(self._completion(body, key)), trickle_s=self.trickle_s)
        if fault == "endless":
            return _Reply(payload=b"", headers={"Content-Type": "application/json"}, endless=True)
        if fault == "malformed_body":
            return _Reply(
                payload=b'{"id": "chatcmpl-broken", "choices": [', headers={"Content-Type": "application/json"}
            )
        return self._json_reply(self._completion(body, key, fault))

    def _completion(self, body: dict, key: tuple[str, str], fault: str = "ok") -> dict:
        digest, family = key
        fields = body["response_format"]["json_schema"]["schema"]["required"]
        answers = {name: expected_answer(digest, family, name) for name in fields}
        content: str | None = json.dumps(answers)
        refusal, finish_reason = None, "stop"
        if fault == "malformed_json":
            content = content[: len(content) // 2]
        elif fault == "schema_violation":
            answers.pop(fields[-1])
            answers["extra_field"] = "not asked for"
            content = json.dumps(answers)
        elif fault == "empty_answer":
            content = json.dumps({**answers, fields[0]: "   "})
        elif fault == "refusal":
            content, refusal = None, "I'm sorry, I can't help with that."
        elif fault == "length":
            content, finish_reason = content[: len(content) // 3], "length"
        elif fault == "leak_key":
            content = json.dumps({**answers, fields[0]: f"Authorised with {self._echoed_keys()}."})
        completion = {
            "id": self._next_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
            },
        }
        if not self.report_usage:
            del completion["usage"]
        return completion

    def _error(self, status: int, message: str, code: str, headers: dict | None = None) -> _Reply:
        if self.echo_key_in_errors:
            message += f" (request authorised with {self._echoed_keys()})"
        error = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
        return self._json_reply(error, status=status, headers=headers)

    def _echoed_keys(self) -> str:
        return ", ".join(KEY_ECHOES[echo](key) for key in sorted(self.authorizations) for echo in self.key_echoes)

    @staticmethod
    def _json_reply(payload: dict, *, status: int = 200, headers: dict | None = None, delay_s: float = 0.0) -> _Reply:
        return _Reply(
            status=status,
            payload=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
            delay_s=delay_s,
        )

    # -- files and batches ------------------------------------------------------------------------
    def upload(self, fields: dict[str, tuple[str | None, bytes]]) -> _Reply:
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        return self._json_reply(self._store_file(filename or "upload.jsonl", purpose, content))

    def _store_file(self, filename: str, purpose: str, content: bytes) -> dict:
        file_object = {
            "id": self._next_id("file"),
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_object["id"]] = {**file_object, "content": content}
        return file_object

    def file_object(self, file_id: str) -> _Reply:
        stored = self.files.get(file_id)
        if stored is None:
            return self._error(404, f"No such File object: {file_id}", "not_found")
        return self._json_reply({k: v for k, v in stored.items() if k != "content"})

    def file_content(self, file_id: str) -> _Reply:
        stored = self.files.get(file_id)
        if stored is None:
            return self._error(404, f"No such File object: {file_id}", "not_found")
        return _Reply(payload=stored["content"], headers={"Content-Type": "application/octet-stream"})

    def create_batch(self, body: dict) -> _Reply:
        input_file = self.files.get(body["input_file_id"])
        if input_file is None or input_file["purpose"] != "batch":
            return self._error(400, f"input file {body['input_file_id']} is not a batch file", "invalid_file")
        batch = {
            "id": self._next_id("batch"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "completion_window": body["completion_window"],
            "input_file_id": body["input_file_id"],
            "status": "validating",
            "created_at": int(time.time()),
            "metadata": body.get("metadata"),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        with self._lock:
            self.batches[batch["id"]] = {**batch, "polls": 0, "lines": input_file["content"].decode().splitlines()}
            drop = self.drop_next_batch_create_response
            self.drop_next_batch_create_response = False
        return _Reply(drop=True) if drop else self._json_reply(batch)

    def retrieve_batch(self, batch_id: str) -> _Reply:
        batch = self.batches.get(batch_id)
        if batch is None:
            return self._error(404, f"No such batch: {batch_id}", "not_found")
        with self._lock:
            batch["polls"] += 1
            if batch["status"] == "validating":
                batch["status"] = "in_progress"
            elif batch["status"] == "in_progress" and batch["polls"] >= self.batch_polls_until_done:
                self._run_batch(batch)
        return self._json_reply(_public_batch(batch))

    def list_batches(self) -> _Reply:
        newest_first = reversed(list(self.batches.values()))
        page = {"object": "list", "data": [_public_batch(batch) for batch in newest_first], "has_more": False}
        return self._json_reply(page)

    def _run_batch(self, batch: dict) -> None:
        """Answer every line (called under the lock): outputs shuffled, scripted lines failed or missing."""
        outputs, errors = [], []
        for line in batch["lines"]:
            request = json.loads(line)
            key = _request_key(request["body"])
            self.batch_lines[key] += 1
            fault = self._batch_line_faults.popleft() if self._batch_line_faults else "ok"
            if fault != "ok":
                self.injected[f"batch_{fault}"] += 1
            result = {
                "id": f"batch_req_{len(outputs) + len(errors)}",
                "custom_id": request["custom_id"],
                "error": None,
            }
            if fault == "missing":
                continue
            if fault == "error":
                error_body = {"error": {"message": "The server had an error", "type": "server_error", "code": None}}
                errors.append({**result, "response": {"status_code": 500, "request_id": "r", "body": error_body}})
                continue
            body = self._completion(request["body"], key, fault)
            outputs.append({**result, "response": {"status_code": 200, "request_id": "r", "body": body}})
        random.Random(batch["id"]).shuffle(outputs)
        missing = len(batch["lines"]) - len(outputs) - len(errors)
        batch["status"] = "expired" if missing else "completed"
        batch["request_counts"] = {"total": len(batch["lines"]), "completed": len(outputs), "failed": len(errors)}
        batch["output_file_id"] = self._store_jsonl(outputs, "batch_output")
        batch["error_file_id"] = self._store_jsonl(errors, "batch_output") if errors else None

    def _store_jsonl(self, lines: list[dict], purpose: str) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        return self._store_file("results.jsonl", purpose, content)["id"]


def _public_batch(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("polls", "lines")}


def _request_key(body: dict) -> tuple[str, str]:
    """(image digest, family key) from a chat request: the data URL and the schema name `<family>_answers`."""
    image_url = next(
        part["image_url"]["url"]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    )
    family = body["response_format"]["json_schema"]["name"].removesuffix("_answers")
    return image_digest(image_url), family


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    return {
        part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
        for part in message.iter_parts()
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass

    @property
    def app(self) -> OpenAITestServer:
        return self.server.app

    def do_GET(self) -> None:
        self._serve(self._route_get)

    def do_POST(self) -> None:
        self._serve(self._route_post)

    def _route_get(self, path: str) -> _Reply:
        if match := re.fullmatch(r"/v1/files/([^/]+)/content", path):
            return self.app.file_content(match[1])
        if match := re.fullmatch(r"/v1/files/([^/]+)", path):
            return self.app.file_object(match[1])
        if path == "/v1/batches":
            return self.app.list_batches()
        if match := re.fullmatch(r"/v1/batches/([^/]+)", path):
            return self.app.retrieve_batch(match[1])
        return self.app._error(404, f"unknown route GET {path}", "not_found")

    def _route_post(self, path: str) -> _Reply:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if path == "/v1/chat/completions":
            return self.app.chat(json.loads(body))
        if path == "/v1/files":
            return self.app.upload(_parse_multipart(self.headers["Content-Type"], body))
        if path == "/v1/batches":
            return self.app.create_batch(json.loads(body))
        return self.app._error(404, f"unknown route POST {path}", "not_found")

    def _serve(self, route) -> None:
        authorization = self.headers.get("Authorization", "")
        key = authorization.removeprefix("Bearer ")
        with self.app._lock:
            self.app.authorizations.add(key)
            self.app.request_targets.append(self.path)
        if self.app.required_key is not None and key != self.app.required_key:
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
            reply = self.app._error(401, f"Incorrect API key provided: {key}.", "invalid_api_key")
        else:
            reply = route(urlsplit(self.path).path)
        try:
            self._send(reply)
        except OSError:  # the client gave up (timeout) or the connection was dropped on purpose
            self.close_connection = True

    def _send(self, reply: _Reply) -> None:
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.trickle_s:
            self._send_trickling(reply)
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(ENDLESS_BODY_CEILING * 1000 if reply.endless else len(reply.payload)))
        self.end_headers()
        if reply.endless:
            self._send_endless_body()
            return
        self.wfile.write(reply.payload)

    def _send_trickling(self, reply: _Reply) -> None:
        self.close_connection = True
        headers = "".join(f"{name}: {value}\r\n" for name, value in reply.headers.items())
        head = f"HTTP/1.1 {reply.status} OK\r\n{headers}Content-Length: {len(reply.payload)}\r\n\r\n"
        for byte in head.encode() + reply.payload:
            self.wfile.write(bytes([byte]))
            time.sleep(reply.trickle_s)

    def _send_endless_body(self) -> None:
        self.close_connection = True
        chunk = b" " * (64 << 10)
        for _ in range(ENDLESS_BODY_CEILING // len(chunk)):
            self.wfile.write(chunk)
