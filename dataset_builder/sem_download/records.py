"""Listing a B2SHARE record's files (name, size, checksum, download address) through the public records API.

`GET {api_url}/records/{record_id}` answers in one of two shapes, and both are read:

- B2SHARE 2.x (Invenio 3): `files` is a list of `{"key", "size", "checksum": "md5:<hex>", "bucket",
  "ePIC_PID", "version_id"}` and `links.files` is the bucket's address; a file is downloaded from
  `{links.files}/{key}` (the EUDAT B2SHARE training guide "Retrieve record details" shows this response).
- InvenioRDM, which runs B2SHARE today: `files` is `{"enabled", "entries": {key: entry}}` (or the entries
  are listed at `links.files`), and each entry carries `links.content`, its download address.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import FetchError

DEFAULT_API_URL = "https://b2share.eudat.eu/api"
SEM_RECORD_ID = "80df8606fcdb4b2bae1656f0dc6db8ba"
RETRIED_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class RecordFile:
    """One file of a record, as the repository describes it."""

    key: str  # the file name, a plain name without folders
    size: int | None  # bytes, when the record states it
    checksum: str  # "<algorithm>:<hex digest>", e.g. "md5:d6eb3208..."
    url: str  # where its bytes are served

    @property
    def algorithm(self) -> str:
        return self.checksum.split(":", 1)[0].lower()

    @property
    def digest(self) -> str:
        return self.checksum.split(":", 1)[1].lower()


def make_session(retries: int = 5, backoff_factor: float = 1.0) -> requests.Session:
    """A `requests` session whose connection errors and 5xx answers are retried by urllib3 with exponential backoff."""
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=backoff_factor,
        status_forcelist=RETRIED_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "mvaema-fetch-sem"
    return session


def get_json(session: requests.Session, url: str, timeout: float = 60.0) -> dict[str, Any]:
    """The JSON object at `url`, or a `FetchError` that names the address and what to check."""
    try:
        response = session.get(url, timeout=timeout, headers={"Accept": "application/json"})
    except requests.RequestException as error:
        raise FetchError(f"cannot reach {url} ({error}); check the network, or point --api-url at a mirror") from error
    if response.status_code == 404:
        raise FetchError(f"{url} answered HTTP 404: no such record; check --record and --api-url")
    if response.status_code != 200:
        raise FetchError(f"{url} answered HTTP {response.status_code}; try again later or point --api-url at a mirror")
    try:
        payload = response.json()
    except ValueError as error:
        raise FetchError(f"{url} did not answer with JSON; is --api-url a B2SHARE records API?") from error
    if not isinstance(payload, dict):
        raise FetchError(f"{url} answered JSON that is not a record object; is --api-url a B2SHARE records API?")
    return payload


def list_record_files(session: requests.Session, api_url: str, record_id: str) -> list[RecordFile]:
    """Every file of record `record_id` at `api_url`, sorted by name."""
    record_url = f"{api_url.rstrip('/')}/records/{quote(record_id, safe='')}"
    record = get_json(session, record_url)
    files = record.get("files")
    links = record.get("links") or {}
    if isinstance(files, list):
        entries = [(entry, _bucket_url(entry, links, api_url)) for entry in files]
    else:
        entries = [(entry, (entry.get("links") or {}).get("content")) for entry in _rdm_entries(session, files, links)]
    if not entries:
        raise FetchError(f"{record_url} lists no files (restricted or empty record?); check --record")
    return sorted((_record_file(entry, url, record_url) for entry, url in entries), key=lambda file: file.key)


def _rdm_entries(session: requests.Session, files: Any, links: dict[str, Any]) -> list[dict[str, Any]]:
    entries = (files or {}).get("entries") if isinstance(files, dict) else None
    if not entries and links.get("files"):
        entries = get_json(session, links["files"]).get("entries")
    if isinstance(entries, dict):
        entries = list(entries.values())
    return list(entries or [])


def _bucket_url(entry: dict[str, Any], links: dict[str, Any], api_url: str) -> str | None:
    key = quote(str(entry.get("key", "")))
    if (entry.get("links") or {}).get("self"):
        return entry["links"]["self"]
    if links.get("files"):
        return f"{links['files'].rstrip('/')}/{key}"
    if entry.get("bucket"):
        return f"{api_url.rstrip('/')}/files/{entry['bucket']}/{key}"
    return None


def _record_file(entry: dict[str, Any], url: str | None, record_url: str) -> RecordFile:
    key = str(entry.get("key", ""))
    # The key becomes a local file name: a record must not be able to write outside the download folder.
    if key in ("", ".", "..") or PurePosixPath(key).name != key or "\\" in key:
        raise FetchError(f"{record_url} lists a file named {key!r}, which is not a plain file name; refusing it")
    checksum = str(entry.get("checksum") or "")
    if ":" not in checksum:
        raise FetchError(f"{record_url}: file {key!r} has no checksum ({checksum!r}), so it cannot be verified")
    if not url:
        raise FetchError(f"{record_url}: file {key!r} has no download address (links.content or links.files)")
    size = entry.get("size")
    return RecordFile(key=key, size=int(size) if size is not None else None, checksum=checksum, url=url)
