"""Limit algorithms of AdaptiveConcurrency: pure functions of one window's measurements.

Each algorithm maps the current (float) limit and one measurement window to the next
limit. A window holds the mean latency of the calls that finished in it
(``short``), the best (lowest) recent window mean (``baseline``, the no-load
latency), the most calls in flight and whether any call failed. They take no clock
and no Trio import, so they test without an event loop.
"""

from __future__ import annotations

import math

#: Gradient2 allows this much latency over the baseline before it shrinks the limit.
#: Netflix ships 1.5, which under a 1.25x overload lets the limit sit at 1.5-2.5x the
#: capacity (concurrency-limits #134); below 1.25 a standing queue is always seen.
GRADIENT_TOLERANCE = 1.1
#: Gradient2's allowance for queueing, as a share of the limit (Netflix's queueSize,
#: a fixed 4 there, which at small limits lets latency settle far above tolerance).
GRADIENT_QUEUE_SHARE = 0.1
#: Gradient2's smoothing of decreases (Netflix's 0.2).
GRADIENT_SMOOTHING = 0.2
#: AIMD backs off when latency exceeds the baseline by more than this share.
AIMD_BAND = 0.25
#: AIMD's multiplicative decrease.
AIMD_BACKOFF = 0.9


def aimd(limit: float, short: float, baseline: float, inflight: int, dropped: bool) -> float:
    """Additive increase (+1 a window), multiplicative decrease on failure or latency.

    Latency past ``baseline * (1 + AIMD_BAND)`` counts as congestion, so AIMD reacts
    to queueing before anything fails.
    """
    if dropped or short > baseline * (1 + AIMD_BAND):
        return limit * AIMD_BACKOFF
    if inflight * 2 < limit:
        return limit  # app-limited: the limit is not what holds calls back
    return limit + 1


def gradient2(limit: float, short: float, baseline: float, inflight: int, dropped: bool) -> float:
    """Netflix's Gradient2 with the overload growth fixed.

    ``gradient = clamp(tolerance * baseline / short, 0.5, 1)``. No queue seen
    (gradient 1): grow by ``sqrt(limit)`` at once (no smoothing on the way up, so it
    converges in seconds). A queue seen: move a fifth of the way to
    ``limit * gradient + queue`` with ``queue = max(1, limit / 10)``, so latency
    settles near ``1.1 / 0.9`` of the baseline at any limit. Unlike Netflix's, the
    baseline is the best recent window (re-measured by a probe, see
    ``AdaptiveConcurrency``), not an average that drifts up with the queue it should
    detect, and the tolerance is 1.1.
    """
    # An instant window (short == 0) has no queue. While the limit is unused (fewer
    # than half of it in flight) it never grows, but latency still shrinks it.
    gradient = GRADIENT_TOLERANCE * baseline / short if short > 0 else 1.0
    if gradient >= 1.0:
        if inflight * 2 < limit:
            return limit
        return limit + max(1.0, math.sqrt(limit))
    gradient = max(0.5, gradient)
    target = limit * gradient + max(1.0, limit * GRADIENT_QUEUE_SHARE)
    return limit * (1 - GRADIENT_SMOOTHING) + target * GRADIENT_SMOOTHING


def vegas(limit: float, short: float, baseline: float, inflight: int, dropped: bool) -> float:
    """TCP Vegas as in Netflix's VegasLimit: keep an estimated queue of 3-6 log10(limit).

    ``queue = limit * (1 - baseline / short)``; grow by ``beta`` while the queue is
    under ``log10(limit)``, by ``log10(limit)`` under ``alpha``, shrink by it over
    ``beta`` or on failure.
    """
    step = math.log10(max(limit, 10.0))
    if dropped:
        return limit - step
    queue = limit * (1 - baseline / short) if short > 0 else 0.0
    alpha = 3 * step
    beta = 6 * step
    if queue > beta:
        return limit - step  # latency shrinks the limit even while it is unused
    if inflight * 2 < limit:
        return limit  # app-limited: no growth
    if queue <= step:
        return limit + beta
    if queue < alpha:
        return limit + step
    return limit


ALGORITHMS = {"aimd": aimd, "gradient2": gradient2, "vegas": vegas}
