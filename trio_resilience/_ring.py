"""A ring of time buckets: sums over a sliding window in fixed memory, O(1) per update.

The breaker's rate rule, the retry budget and adaptive throttling all keep counts
over a window of Trio time. They share this one ring: ``buckets`` equal slots of
``window / buckets`` seconds; a slot is cleared when the time it stands for has
passed. Every field keeps a running total, so reading a sum is O(1). The ring is
approximate to one bucket at its old edge, exact at its new one.

Pure: it takes ``now`` as an argument and imports nothing from Trio, so it tests
without an event loop. It assumes ``now`` never goes backwards within one Trio run;
an owner that may live across runs calls :meth:`TimeRing.clear` when the run changes
(see :func:`trio_resilience._runs.run_token`).
"""

from __future__ import annotations

import math


class TimeRing:
    """``fields`` parallel counters over a sliding window of ``buckets`` time buckets.

    Args:
        window: the window's length in seconds (> 0, finite).
        buckets: how many buckets split it (>= 1).
        fields: how many counters each bucket holds (>= 1).
    """

    __slots__ = ("_end", "_index", "_slots", "buckets", "fields", "totals", "width", "window")

    def __init__(self, window: float, buckets: int = 10, fields: int = 1) -> None:
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be > 0 and finite, got {window!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets!r}")
        if fields < 1:
            raise ValueError(f"fields must be >= 1, got {fields!r}")
        self.window = window
        self.buckets = buckets
        self.fields = fields
        self.width = window / buckets
        # One flat list: bucket b's field f lives at b * fields + f.
        self._slots: list[float] = [0] * (buckets * fields)
        self.totals: list[float] = [0] * fields
        """Running sum of each field over the buckets still in the window."""
        self._index = 0  # absolute bucket number of the newest bucket
        self._end = self.width  # time at which the newest bucket ends

    def advance(self, now: float) -> int:
        """Expire the buckets that ``now`` moved past; return the offset of now's bucket.

        The offset is where :meth:`add` writes: ``(bucket % buckets) * fields``.
        """
        width = self.width
        if now < self._end and now >= self._end - width:
            return (self._index % self.buckets) * self.fields
        return self._move(now)

    def _move(self, now: float) -> int:
        width = self.width
        if not math.isfinite(now):
            # Not a time: start afresh rather than poison the ring.
            self.clear()
            return 0
        index = math.floor(now / width)
        if index < self._index:
            # Time went backwards (a new run's clock): start afresh.
            self.clear()
        else:
            steps = index - self._index
            fields = self.fields
            slots = self._slots
            totals = self.totals
            if steps >= self.buckets:
                for i in range(len(slots)):
                    slots[i] = 0
                for f in range(fields):
                    totals[f] = 0
            else:
                for step in range(1, steps + 1):
                    base = ((self._index + step) % self.buckets) * fields
                    for f in range(fields):
                        totals[f] -= slots[base + f]
                        slots[base + f] = 0
        self._index = index
        self._end = (index + 1) * width
        return (index % self.buckets) * self.fields

    def add(self, offset: int, field: int, amount: float) -> None:
        """Add ``amount`` to ``field`` of the bucket at ``offset`` (from :meth:`advance`)."""
        self._slots[offset + field] += amount
        self.totals[field] += amount

    def count(self, now: float, field: int = 0, amount: float = 1) -> None:
        """Advance to ``now`` and add ``amount`` to ``field`` of now's bucket."""
        offset = self.advance(now)
        self._slots[offset + field] += amount
        self.totals[field] += amount

    def total(self, now: float, field: int = 0) -> float:
        """The sum of ``field`` over the window ending at ``now``."""
        self.advance(now)
        return self.totals[field]

    def clear(self) -> None:
        """Forget every count (a reset, or a new Trio run)."""
        slots = self._slots
        for i in range(len(slots)):
            slots[i] = 0
        for f in range(self.fields):
            self.totals[f] = 0
        self._index = 0
        self._end = self.width

    def __repr__(self) -> str:
        return f"<TimeRing {self.window}s/{self.buckets} totals={self.totals!r}>"
