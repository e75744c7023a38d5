"""Key layout: every key of one breaker carries one hash tag, and names are escaped.

A breaker named ``name`` under ``prefix`` owns the keys ``{P:N}:state``, ``{P:N}:trips``,
``{P:N}:sharers``, ``{P:N}:probes`` and ``{P:N}:counts:<window>`` (plus its
``:origins`` set), where ``P`` and ``N`` are the escaped prefix and name: ``%``,
``{``, ``}``, ``:`` and ``|`` become ``%25``, ``%7B``, ``%7D``, ``%3A`` and ``%7C``.
Escaping is injective, a hash tag holds exactly one unescaped ``:`` for breakers
(``{P:budget:N}`` and ``{P:limiter:N}`` hold two), so no two names, and no breaker and
budget, share a key, and every key of one breaker maps to one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", ":": "%3A", "|": "%7C"})


def escape(text: str) -> str:
    """``text`` with ``%``, ``{``, ``}``, ``:`` and ``|`` percent-encoded (injective)."""
    return text.translate(_ESCAPES)


#: Escaped names longer than this (in UTF-8 bytes) go into hints as a digest.
HINT_NAME_BYTES = 256


def hint_name(escaped: str) -> str:
    """How hints name a breaker: its escaped name, or ``%h`` and a SHA-1 digest of it
    when longer than :data:`HINT_NAME_BYTES` (``%h`` never occurs in an escaped name),
    so that every hint the library sends fits the size hints are read at."""
    data = escaped.encode("utf-8", "surrogatepass")
    if len(data) <= HINT_NAME_BYTES:
        return escaped
    return "%h" + hashlib.sha1(data).hexdigest()


class BreakerKeys:
    """The keys of one shared breaker."""

    __slots__ = ("counts", "origins", "probes", "sharers", "state", "tag", "trips")

    def __init__(self, prefix: str, name: str, window_ms: int) -> None:
        self.tag = tag = "{" + escape(prefix) + ":" + escape(name) + "}"
        self.state = tag + ":state"
        self.trips = tag + ":trips"
        self.sharers = tag + ":sharers"
        self.probes = tag + ":probes"
        # Counts of sharers with another failure_window live elsewhere: never mixed.
        self.counts = f"{tag}:counts:{window_ms}"
        self.origins = f"{tag}:origins:{window_ms}"


def budget_key(prefix: str, name: str, window_ms: int) -> str:
    """The time-bucket hash of a shared RetryBudget (per window length)."""
    return "{" + escape(prefix) + ":budget:" + escape(name) + "}:" + str(window_ms)


def limiter_key(prefix: str, name: str) -> str:
    """The GCRA state (theoretical arrival time) of a shared RateLimiter."""
    return "{" + escape(prefix) + ":limiter:" + escape(name) + "}:tat"


def channel(prefix: str) -> str:
    """The pub/sub channel of change hints."""
    return escape(prefix) + ":events"
