"""The demo's report: a side-by-side table (rich when installed), JSON, and a timeline plot."""

from __future__ import annotations

import json
from typing import Any, TextIO

from ._demo import PHASES, DemoResult

_COLUMNS = (
    ("requests", "requests"),
    ("served", "served"),
    ("served_within_slo", "on time"),
    ("dead_upstream_calls", "dead-upstream calls"),
    ("retries", "retries"),
    ("shed", "shed"),
    ("p50_latency", "p50 s"),
    ("p99_latency", "p99 s"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return f"{value:,}"


def rows(result: DemoResult) -> list[list[str]]:
    """Per phase, one row per run: the figures side by side."""
    out = []
    bounds = {name: (start, end) for name, start, end in result.config.phase_bounds()}
    for phase in PHASES:
        start, end = bounds[phase]
        for run in (result.unguarded, result.guarded):
            summary = run.phases[phase].summary()
            out.append(
                [f"{phase} {start:g}-{end:g}s" if run is result.unguarded else "", run.name]
                + [_cell(summary[key]) for key, _ in _COLUMNS]
            )
    return out


def render_text(result: DemoResult, out: TextIO) -> None:
    """Write the report; with rich installed, as rich tables."""
    title = (
        f"trio-resilience demo (seed {result.config.seed}): {result.config.clients} clients, "
        f"upstream capacity {result.config.upstream_rate:g} req/s"
    )
    transitions = [
        (f"{c.at:7.2f}", str(c.old_state), str(c.new_state), c.reason)
        for c in result.guarded.transitions
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # the plain report: no extra needed
        _render_plain(result, out, title, transitions)
        return
    console = Console(file=out, width=None if out.isatty() else 120, highlight=False)
    table = Table(title=title, title_justify="left")
    table.add_column("phase")
    table.add_column("run")
    for _, header in _COLUMNS:
        table.add_column(header, justify="right")
    for i, row in enumerate(rows(result)):
        style = "green" if row[1] == "guarded" else None
        table.add_row(*row, style=style, end_section=i % 2 == 1)
    console.print(table)
    breaker = Table(title="guarded run: circuit breaker transitions", title_justify="left")
    for header in ("t (s)", "from", "to", "reason"):
        breaker.add_column(header)
    for t in transitions:
        breaker.add_row(*t)
    console.print(breaker)
    console.print("[bold]What each policy bought[/bold]")
    for sentence in result.sentences():
        console.print(f"- {sentence}")


def _render_plain(
    result: DemoResult, out: TextIO, title: str, transitions: list[tuple[str, str, str, str]]
) -> None:
    headers = ["phase", "run"] + [h for _, h in _COLUMNS]
    table = [headers, *rows(result)]
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    print(title, file=out)
    for r in table:
        print(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ),
            file=out,
        )
    print("\nguarded run: circuit breaker transitions", file=out)
    for t in transitions:
        print(f"  t={t[0]}s  {t[1]} -> {t[2]} ({t[3]})", file=out)
    print("\nWhat each policy bought", file=out)
    for sentence in result.sentences():
        print(f"- {sentence}", file=out)


def render_json(result: DemoResult, out: TextIO) -> None:
    """Write every figure as one JSON document."""
    json.dump(result.to_json(), out, indent=2)
    out.write("\n")


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


def plot(result: DemoResult, path: str) -> None:
    """Draw the timeline of both runs to ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'trio-resilience[plot]'"
        ) from exc
    panels = (
        ("upstream_up", "upstream up"),
        ("breaker_state", "breaker (0 closed, 1 open)"),
        ("goodput", "served / s"),
        ("p99_latency", "p99 latency (s)"),
        ("shed", "shed / s"),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 11), sharex=True)
    for ax, (key, label) in zip(axes, panels, strict=True):
        for run, color in ((result.unguarded, "tab:red"), (result.guarded, "tab:green")):
            series = run.timeline[key]
            ax.step(range(len(series)), series, where="post", color=color, label=run.name)
        ax.set_ylabel(label)
        for name, start, _end in result.config.phase_bounds():
            ax.axvline(start, color="grey", linewidth=0.5)
            if key == "upstream_up":
                ax.text(start + 0.5, 1.05, name, fontsize=8)
    axes[0].legend(loc="lower right")
    axes[-1].set_xlabel("virtual seconds")
    fig.suptitle(f"trio-resilience demo, seed {result.config.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
