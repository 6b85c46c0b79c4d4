"""The one error type of `mvaema-fetch-sem`: its message names the file, address or value at fault and the fix."""


class FetchError(RuntimeError):
    """A download, verification or extraction step that cannot go on; `str()` says what to do about it."""
