"""Money: the spend ledger kept beside a teacher cache, and the tracker that holds a run to `--max-usd`.

The ledger makes the cap a cap on the cache's total: every run and process that pays for answers
written to one cache appends what it paid, so a second run starts with the first one's spend counted.
`--max-usd` reserves the worst case (every output token used) of each attempt before it is sent, so a
run stops before the budget could be exceeded, not after; an attempt whose cost the server did not
report (no reply, no `usage`, a body that is not JSON) is counted at that worst case, never at $0.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

LEDGER_SUFFIX = ".spend.jsonl"


def ledger_path_for(cache_path: str | os.PathLike) -> Path:
    """`teacher_cache.jsonl` -> `teacher_cache.spend.jsonl`, beside it."""
    cache_path = Path(cache_path)
    return cache_path.with_name(cache_path.name.removesuffix(".jsonl") + LEDGER_SUFFIX)


class SpendLedger:
    """An append-only JSONL file, one line per paid attempt: `{"usd": ..., "confirmed": ..., "at": ...}`.

    Each line goes out in one `write` on a file opened for appending and is fsynced, so a kill leaves at
    most one cut-off last line, which reading skips (it is then counted as nothing, like the attempt whose
    line it was: the ledger may undercount by one attempt, never double count).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, cache_path: str | os.PathLike) -> SpendLedger:
        return cls(ledger_path_for(cache_path))

    def total_usd(self) -> float:
        if not self.path.exists():
            return 0.0
        total = 0.0
        for line in self.path.read_bytes().splitlines():
            try:
                total += float(json.loads(line)["usd"])
            except (ValueError, TypeError, KeyError):
                continue
        return total

    def append(self, usd: float, *, confirmed: bool) -> None:
        line = json.dumps({"usd": usd, "confirmed": confirmed, "at": round(time.time(), 3)}) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(descriptor).st_size
                if size and os.pread(descriptor, 1, size - 1) != b"\n":
                    line = "\n" + line  # after a cut-off line, start a fresh one
                os.write(descriptor, line.encode())
                os.fsync(descriptor)
            finally:
                os.close(descriptor)


class SpendTracker:
    """Money spent, and the worst case of the attempts in flight, against an optional limit (thread-safe).

    `earlier_usd` is what the ledger held when the run started. `spent_usd` comes from the usage servers
    report. `unconfirmed_usd` is the worst case of attempts whose cost is unknown: the server may have
    finished and billed them, so they keep counting against the limit.
    """

    def __init__(self, limit_usd: float | None = None, ledger: SpendLedger | None = None):
        self.limit_usd = limit_usd
        self.ledger = ledger
        self.earlier_usd = ledger.total_usd() if ledger is not None else 0.0
        self.spent_usd = 0.0
        self.unconfirmed_usd = 0.0
        self._reserved_usd = 0.0
        self._in_flight = 0  # counted, not inferred from _reserved_usd, which float rounding leaves near zero
        self._changed = threading.Condition()

    def reserve(self, worst_usd: float) -> bool:
        """Reserve an attempt's worst case; False once it cannot fit even with nothing else in flight.
        While other attempts are in flight, wait for them: they usually cost far less than reserved."""
        with self._changed:
            while self.limit_usd is not None and self._committed_usd() + worst_usd > self.limit_usd:
                if self._in_flight == 0:
                    return False
                self._changed.wait()
            self._reserved_usd += worst_usd
            self._in_flight += 1
            return True

    def settle(self, worst_usd: float, actual_usd: float | None) -> None:
        """Replace a reservation by the actual cost, or by the worst case if the cost is unknown (None)."""
        with self._changed:
            self._reserved_usd -= worst_usd
            self._in_flight -= 1
            if actual_usd is None:
                self.unconfirmed_usd += worst_usd
            else:
                self.spent_usd += actual_usd
            if self.ledger is not None and (actual_usd is None or actual_usd > 0):
                self.ledger.append(worst_usd if actual_usd is None else actual_usd, confirmed=actual_usd is not None)
            self._changed.notify_all()

    def release(self, worst_usd: float) -> None:
        """Give back a reservation whose attempt was never sent."""
        with self._changed:
            self._reserved_usd -= worst_usd
            self._in_flight -= 1
            self._changed.notify_all()

    def _committed_usd(self) -> float:
        return self.earlier_usd + self.spent_usd + self.unconfirmed_usd + self._reserved_usd
