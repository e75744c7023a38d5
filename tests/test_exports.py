"""The public surface: everything in __all__ is importable, sorted and re-homed."""

from __future__ import annotations

import trio_resilience


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name in it exists."""
    assert trio_resilience.__all__ == sorted(trio_resilience.__all__)
    for name in trio_resilience.__all__:
        assert hasattr(trio_resilience, name), name


def test_public_objects_live_in_the_package() -> None:
    """Classes show trio_resilience as their module, as trio does."""
    for name in trio_resilience.__all__:
        obj = getattr(trio_resilience, name)
        if isinstance(obj, type):
            assert obj.__module__ == "trio_resilience", name


def test_contract_names_are_exported() -> None:
    """The names the API contract promises are all there."""
    expected = {
        "ResilienceError",
        "CircuitOpenError",
        "LoadShedError",
        "LoopBudgetExhausted",
        "RetryError",
        "CircuitBreaker",
        "CircuitState",
        "CircuitBreakerStatistics",
        "StateChange",
        "BreakerRegistry",
        "ExponentialBackoff",
        "LinearBackoff",
        "FibonacciBackoff",
        "ConstantBackoff",
        "FullJitterBackoff",
        "DecorrelatedJitterBackoff",
    }
    assert expected <= set(trio_resilience.__all__)


def test_exception_hierarchy() -> None:
    """Every rejection derives from ResilienceError, itself an Exception."""
    for name in ("CircuitOpenError", "LoadShedError", "LoopBudgetExhausted", "RetryError"):
        assert issubclass(getattr(trio_resilience, name), trio_resilience.ResilienceError)
    assert issubclass(trio_resilience.ResilienceError, Exception)


def test_package_is_typed() -> None:
    """py.typed ships with the package."""
    from importlib.resources import files

    assert files("trio_resilience").joinpath("py.typed").is_file()


def test_admission_control_names_are_exported() -> None:
    """The admission-control policies and their statistics are public."""
    expected = {
        "AdaptiveConcurrency",
        "AdaptiveConcurrencyStatistics",
        "AdaptiveThrottle",
        "AdaptiveThrottleStatistics",
        "Hedge",
        "HedgeStatistics",
        "RateLimiter",
        "RateLimiterStatistics",
    }
    assert expected <= set(trio_resilience.__all__)
