"""Which key goes where: the key is read from the environment only, sent only over HTTPS or to this
machine unless the user opts in, never written anywhere, and URLs are stored without credentials."""

from __future__ import annotations

import ipaddress
import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import openai

from .key_leaks import OPENAI_KEY_VARIABLE, SELF_HOSTED_KEY_VARIABLE, redact_keys
from .limits import limited_http_client
from .protocol import is_openai_url

KEY_PLACEHOLDER = "no-key-needed"  # self-hosted servers ignore the key, but the client insists on one
# Query parameters that carry a credential (`?api-key=`, `?access_token=`, `?sig=`): dropped from stored URLs.
_SECRET_QUERY_NAME = re.compile(r"key|token|secret|password|passwd|auth|sig|credential", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def key_variable_for(base_url: str) -> str | None:
    """The environment variable whose key goes to `base_url`, or None when no key is set."""
    candidates = [OPENAI_KEY_VARIABLE] if is_openai_url(base_url) else [SELF_HOSTED_KEY_VARIABLE, OPENAI_KEY_VARIABLE]
    return next((name for name in candidates if os.environ.get(name)), None)


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_key_transport(base_url: str, key_variable: str, allow_insecure_key: bool) -> None:
    """Refuse to send a key in clear text over the network: HTTPS, or a server on this machine, or an opt-in."""
    if urlsplit(base_url).scheme == "https" or is_loopback_url(base_url) or allow_insecure_key:
        return
    raise ValueError(
        f"--base-url {public_url(base_url)} is plain HTTP to another machine: ${key_variable} would travel "
        "unencrypted; use an https:// URL, unset the key for a server that needs none, or pass "
        "--allow-insecure-key if this network is trusted"
    )


def make_client(base_url: str, timeout_s: float = 180.0, *, allow_insecure_key: bool = False) -> openai.OpenAI:
    """An OpenAI client with its own retries off (the teacher retries, in one place), whose requests obey
    `limits.request_limits` (a total deadline, a maximum reply size) where a caller sets them. OpenAI gets
    $OPENAI_API_KEY; any other server gets $MVAEMA_TEACHER_API_KEY, else $OPENAI_API_KEY, else a placeholder."""
    key_variable = key_variable_for(base_url)
    if key_variable is None:
        if is_openai_url(base_url):
            raise ValueError(
                f"{OPENAI_KEY_VARIABLE} is not set: export it (the key is never read from the command line)"
            )
        api_key = KEY_PLACEHOLDER
    else:
        check_key_transport(base_url, key_variable, allow_insecure_key)
        api_key = os.environ[key_variable]
    endpoint, query = split_base_url(base_url)
    return openai.OpenAI(
        api_key=api_key,
        base_url=endpoint,
        default_query=query,
        timeout=timeout_s,
        max_retries=0,
        http_client=limited_http_client(),
    )


def split_base_url(base_url: str) -> tuple[str, dict[str, str]]:
    """The server's URL without its query, and the query, which the client sends with every request (given
    whole, the client would append its paths after the query). A user name and password are refused: the
    HTTP client would send them as Basic auth in place of the API key."""
    parts = urlsplit(base_url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"--base-url {public_url(base_url)} carries a user name and password (user:password@), which would "
            f"replace the API key; remove them from the URL and export the server's key as ${SELF_HOSTED_KEY_VARIABLE}"
        )
    return urlunsplit(parts._replace(query="", fragment="")), dict(parse_qsl(parts.query, keep_blank_values=True))


def public_url(url: str) -> str:
    """`url` without a user name or password and without query parameters that carry a credential:
    the form every state file, cache, batch folder and log line gets."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    query = urlencode([(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
                       if not _SECRET_QUERY_NAME.search(name)])  # fmt: skip
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_api_key(text: str) -> str:
    """Every message printed or stored passes here: servers sometimes echo the key in error bodies (encoded,
    at times), and connection errors quote the URL."""
    return _URL_IN_TEXT.sub(lambda match: public_url(match.group(0)), redact_keys(text))
