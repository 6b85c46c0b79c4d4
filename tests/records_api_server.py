"""A local imitation of B2SHARE's records API for offline tests: one record, its files served with HTTP Range.

It can answer in the B2SHARE 2.x shape (a `files` list beside a bucket link) or the InvenioRDM shape
(`files.entries` with `links.content`), break a file's transfer once after N bytes, answer 503 a few times,
and state a wrong checksum. Every request is logged as (path, Range header). The serving loop ends by
itself when the test leaves the `with` block or after `max_seconds`, whichever comes first.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import unquote


class RecordsAPIServer:
    def __init__(
        self,
        record_id: str,
        files: dict[str, bytes],
        *,
        shape: str = "b2share2",
        checksums: dict[str, str] | None = None,
        drop_after: dict[str, int] | None = None,
        unavailable: dict[str, int] | None = None,
        max_seconds: float = 60.0,
    ):
        self.record_id = record_id
        self.files = files
        self.shape = shape
        self.checksums = {key: f"md5:{hashlib.md5(data).hexdigest()}" for key, data in files.items()}
        self.checksums.update(checksums or {})
        self.drop_after = dict(drop_after or {})  # key -> bytes sent before the connection is closed, once
        self.unavailable = dict(unavailable or {})  # path -> how many 503 answers to give first
        self.requests: list[tuple[str, str | None]] = []
        self._deadline = time.monotonic() + max_seconds
        self._stop = threading.Event()
        self._server = HTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.timeout = 0.05
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/api"

    def file_requests(self) -> list[tuple[str, str | None]]:
        return [(path, byte_range) for path, byte_range in self.requests if "/files/" in path]

    def __enter__(self) -> RecordsAPIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.server_close()

    def _serve(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            self._server.handle_request()

    def record_json(self) -> dict:
        base = self.api_url
        if self.shape == "b2share2":
            files = [
                {"key": key, "size": len(data), "checksum": self.checksums[key], "bucket": "bucket-1",
                 "ePIC_PID": f"http://hdl.handle.net/0/{key}", "version_id": "v1"}
                for key, data in self.files.items()
            ]
            return {"id": self.record_id, "files": files, "links": {"files": f"{base}/files/bucket-1"}}
        entries = {key: {"key": key, "size": len(data), "checksum": self.checksums[key],
                         "links": {"content": f"{base}/records/{self.record_id}/files/{key}/content"}}
                   for key, data in self.files.items()}
        return {"id": self.record_id, "files": {"enabled": True, "entries": entries}, "links": {}}

    def file_for(self, path: str) -> str | None:
        match = re.fullmatch(r"/api/files/bucket-1/([^/]+)", path) or re.fullmatch(
            rf"/api/records/{self.record_id}/files/([^/]+)/content", path
        )
        return unquote(match.group(1)) if match and unquote(match.group(1)) in self.files else None


def _handler_for(api: RecordsAPIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a stalled client cannot hold the serving loop

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            api.requests.append((self.path, self.headers.get("Range")))
            if api.unavailable.get(self.path, 0) > 0:
                api.unavailable[self.path] -= 1
                self._send(503, b"busy", "text/plain")
            elif self.path == f"/api/records/{api.record_id}":
                self._send(200, json.dumps(api.record_json()).encode(), "application/json")
            elif (key := api.file_for(self.path)) is not None:
                self._send_file(key)
            else:
                self._send(404, b"not found", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, key: str) -> None:
            data = api.files[key]
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match:
                start = int(match.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            cut = api.drop_after.pop(key, None)
            # the promised length is not delivered: the client sees a connection broken mid-body
            self.wfile.write(data[start:] if cut is None else data[start:cut])
            self.close_connection = True

    return Handler
