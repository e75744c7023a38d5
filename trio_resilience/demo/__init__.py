"""The ``trio-resilience demo`` command's scenes, report and plot.

A user's program built on the public API only. It lives apart from the library: the
core package never imports it; only the command line (``trio_resilience._cli``) does.
"""

from __future__ import annotations

from ._plot import PLOT_SUFFIXES, PlotUnavailable, check_matplotlib, check_plot_path, plot
from ._report import WIDTH, render_json, render_text, rows
from ._scenes import PHASES, SLO, DemoConfig, DemoResult, RunResult, run_scenario, validate
from ._wave2 import Wave2Config, Wave2Result, available, run_wave2

__all__ = [
    "PHASES",
    "PLOT_SUFFIXES",
    "SLO",
    "WIDTH",
    "DemoConfig",
    "DemoResult",
    "PlotUnavailable",
    "RunResult",
    "Wave2Config",
    "Wave2Result",
    "available",
    "check_matplotlib",
    "check_plot_path",
    "plot",
    "render_json",
    "render_text",
    "rows",
    "run_scenario",
    "run_wave2",
    "validate",
]
