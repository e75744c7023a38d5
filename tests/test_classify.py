"""Exception specs and ExceptionGroup-aware classification."""

from __future__ import annotations

import pytest
import trio

from trio_resilience import CircuitOpenError, CircuitState, LoadShedError
from trio_resilience._classify import (
    CANCELLED,
    FAILURE,
    IGNORED,
    SUCCESS,
    Matcher,
    classify,
    is_retryable,
    leaves,
)


def m(spec: object) -> Matcher:
    return Matcher("spec", spec)


def test_leaves_flatten_nested_groups() -> None:
    """leaves() walks nested groups depth first."""
    a, b, c = ValueError(), KeyError(), OSError()
    group = ExceptionGroup("g", [a, ExceptionGroup("h", [b, c])])
    assert list(leaves(group)) == [a, b, c]
    assert list(leaves(a)) == [a]


def test_classify_plain_exceptions() -> None:
    """Ignore wins over failure; other exceptions are successes."""
    assert classify(ValueError(), m(ValueError), m(())) == FAILURE
    assert classify(ValueError(), m(ValueError), m(ValueError)) == IGNORED
    assert classify(KeyError(), m(ValueError), m(())) == SUCCESS
    assert classify(KeyboardInterrupt(), m(BaseException), m(())) == CANCELLED
    assert classify(GeneratorExit(), m(BaseException), m(())) == CANCELLED


def test_classify_groups() -> None:
    """Any failing leaf fails a group; all ignored ignores it; cancellations are dropped."""
    fail, ignore = m(ValueError), m(KeyError)
    assert classify(ExceptionGroup("g", [KeyError(), ValueError()]), fail, ignore) == FAILURE
    assert classify(ExceptionGroup("g", [KeyError(), KeyError()]), fail, ignore) == IGNORED
    assert classify(ExceptionGroup("g", [OSError()]), fail, ignore) == SUCCESS
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), SystemExit()])
    assert classify(group, fail, ignore) == CANCELLED
    group = BaseExceptionGroup("g", [KeyboardInterrupt(), ValueError()])
    assert classify(group, fail, ignore) == FAILURE


def test_retryable_excludes_cancellation_and_own_rejections() -> None:
    """Cancellation is never retried; ResilienceErrors only when named."""
    retry_all = m(Exception)
    assert is_retryable(ValueError(), retry_all)
    assert not is_retryable(KeyboardInterrupt(), m(BaseException))
    shed = LoadShedError(1, "x")
    assert not is_retryable(shed, retry_all)
    assert is_retryable(shed, m((LoadShedError, OSError)))
    assert not is_retryable(CircuitOpenError("x", CircuitState.OPEN, 1.0), m(LoadShedError))
    assert is_retryable(ExceptionGroup("g", [ValueError(), KeyError()]), m(KeyError))
    assert not is_retryable(BaseExceptionGroup("g", [ValueError(), SystemExit()]), retry_all)
    assert not is_retryable(ExceptionGroup("g", [shed]), retry_all)
    assert is_retryable(shed, m(lambda e: True))


async def test_trio_cancelled_is_never_counted() -> None:
    """A real trio.Cancelled classifies as CANCELLED and is never retryable."""
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.lowlevel.checkpoint()
        except trio.Cancelled as exc:
            assert classify(exc, m(BaseException), m(())) == CANCELLED
            assert not is_retryable(exc, m(BaseException))
            raise


def test_bad_specs() -> None:
    """Specs must be a type, a tuple of types or a callable."""
    with pytest.raises(TypeError, match=r"^spec must be an exception type"):
        m("ValueError")
    with pytest.raises(TypeError, match=r"item 0 is 'x'$"):
        m(("x",))
    with pytest.raises(TypeError, match=r"item 1 is <class 'int'>$"):
        m((ValueError, int))
    assert repr(m(ValueError)) == "Matcher(<class 'ValueError'>)"
