"""Finding an API key in text a server sent back, in the forms servers and proxies echo it: as given, in
another case, base64-encoded (alone or inside a Basic credential), url-encoded, hex. Every message printed or
stored has them replaced, and an answer that holds one is not stored (it would flow into a dataset)."""

from __future__ import annotations

import base64
import functools
import os
import re
from urllib.parse import quote

OPENAI_KEY_VARIABLE = "OPENAI_API_KEY"
SELF_HOSTED_KEY_VARIABLE = "MVAEMA_TEACHER_API_KEY"  # a self-hosted server's key, so OpenAI's stays home


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 characters that depend on `secret` alone, at each of the three offsets it can start at
    inside a longer encoded value (`user:KEY` in a Basic credential starts anywhere)."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + secret).decode()
        first = -(-8 * offset // 6)  # the first character with no bit of the padding before the secret
        last = 8 * (offset + len(secret)) // 6  # the characters before this one hold no bit of what follows
        cores += [encoded[first:last], encoded[first:last].translate(str.maketrans("+/", "-_"))]
    return cores


@functools.lru_cache(maxsize=8)
def _key_pattern(key: str) -> re.Pattern[str]:
    secret = key.encode()
    forms = {
        key,  # any case: IGNORECASE below
        quote(key, safe=""),
        "".join(f"%{byte:02x}" for byte in secret),  # every byte percent-encoded
        secret.hex(),
        *_base64_cores(secret),
    }
    # Longest first, so a form that contains another is replaced whole.
    return re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))), re.IGNORECASE)


def _keys() -> list[tuple[str, str]]:
    """(variable, key) of the keys set in the environment."""
    keys = [(variable, os.environ.get(variable)) for variable in (OPENAI_KEY_VARIABLE, SELF_HOSTED_KEY_VARIABLE)]
    return [(variable, key) for variable, key in keys if key]


def redact_keys(text: str) -> str:
    for variable, key in _keys():
        text = _key_pattern(key).sub(f"[{variable}]", text)
    return text


def leaked_key_variable(text: str) -> str | None:
    """The variable whose key `text` holds, in any of the forms above, or None."""
    return next((variable for variable, key in _keys() if _key_pattern(key).search(text)), None)
