"""Downloading one record file: resumed from its `.part` file with HTTP Range after a broken transfer, then verified.

urllib3's `Retry` (in `records.make_session`) repeats requests that fail before the body starts (refused
connections, 5xx answers); a transfer that breaks in the middle of the body is resumed here, from the bytes
already on disk. A file reaches its final name only after its checksum matched, so a file under its final
name is always a verified one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import requests
import urllib3
from tqdm.auto import tqdm

from .errors import FetchError
from .records import RecordFile

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
# requests' errors for the request itself, urllib3's for reading the body (a broken or stalled connection)
BROKEN_TRANSFER_ERRORS = (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(
    session: requests.Session,
    file: RecordFile,
    destination: Path,
    *,
    attempts: int = 5,
    backoff_s: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """`file` saved as `destination` with its checksum verified; an already verified copy is not downloaded again."""
    if file.algorithm not in hashlib.algorithms_available:
        raise FetchError(f"{file.key}: checksum {file.checksum!r} uses an algorithm this Python cannot compute")
    if destination.exists():
        if file_digest(destination, file.algorithm) == file.digest:
            logger.info("%s: already downloaded and verified", destination)
            return destination
        logger.warning("%s: does not match the record's checksum any more; downloading it again", destination)
        destination.unlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    _download_resuming(session, file, part, attempts=attempts, backoff_s=backoff_s, timeout=timeout)
    actual = file_digest(part, file.algorithm)
    if actual != file.digest:
        part.unlink()
        raise FetchError(
            f"{file.key}: checksum mismatch, expected {file.algorithm}:{file.digest}, got {file.algorithm}:{actual}; "
            f"the download was deleted. Run the command again; if it repeats, the copy at {file.url} is damaged"
        )
    part.replace(destination)
    return destination


def _download_resuming(
    session: requests.Session, file: RecordFile, part: Path, *, attempts: int, backoff_s: float, timeout: float
) -> None:
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        if file.size is not None and offset >= file.size:
            if offset == file.size:
                return
            part.unlink()  # longer than the record says: not a prefix of this file
            offset = 0
        try:
            _stream_into(session, file, part, offset, timeout)
            return
        except BROKEN_TRANSFER_ERRORS as error:
            received = part.stat().st_size if part.exists() else 0
            logger.warning(
                "%s: transfer broke after %d bytes (%s); resuming, attempt %d of %d",
                file.key, received, error, attempt, attempts,
            )
            last_error = error
            time.sleep(backoff_s * 2 ** (attempt - 1))
    raise FetchError(
        f"{file.key}: download still failing after {attempts} attempts ({last_error}); "
        f"run the command again to resume from {part}"
    )


def _range_starts_at(response: requests.Response, offset: int) -> bool:
    return response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")


def _stream_into(session: requests.Session, file: RecordFile, part: Path, offset: int, timeout: float) -> None:
    # identity encoding: a Range counts bytes of the stored file, not of a compressed stream
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(file.url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 200:
            offset = 0  # the server sent the whole file: start the part file over
        elif response.status_code != 206 or not _range_starts_at(response, offset):
            raise FetchError(
                f"{file.key}: {file.url} answered HTTP {response.status_code} "
                f"(Content-Range {response.headers.get('Content-Range')!r}) to a request for bytes {offset}-; "
                "try again later or point --api-url at a mirror"
            )
        with part.open("ab" if offset else "wb") as sink, tqdm(
            total=file.size, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=file.key
        ) as progress:
            # read1 hands over what has arrived, so bytes received before a break are kept for the resume
            while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
                sink.write(chunk)
                progress.update(len(chunk))
