"""The demo's report: tables that fit 80 columns (rich when installed), and JSON."""

from __future__ import annotations

import json
import textwrap
from typing import Any, TextIO

from ._scenes import PHASES, SLO, DemoResult
from ._wave2 import Wave2Result

WIDTH = 80  # the report's width when the output is not a terminal

# (summary key, header): two-line headers keep every column narrow.
_COLUMNS = (
    ("requests", "requests"),
    ("served", "served"),
    ("served_within_slo", "on\ntime"),
    ("dead_upstream_calls", "dead\ncalls"),
    ("retries", "retries"),
    ("shed", "shed"),
    ("p99_latency", "p99\ns"),
)
LEGEND = (
    f"on time: served within {SLO:g} s. dead calls: calls that reached the upstream "
    "during its outage. p99: latency of the requests served in the phase."
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return f"{value:,}"


def rows(result: DemoResult) -> list[list[str]]:
    """Per phase, one row per run; the phase's name, then its time span, in column one."""
    out = []
    for phase, start, end in result.config.phase_bounds():
        label = (phase, f"{start:g}-{end:g}s")
        for i, run in enumerate((result.unguarded, result.guarded)):
            summary = run.phases[phase].summary()
            out.append([label[i], run.name] + [_cell(summary[key]) for key, _ in _COLUMNS])
    assert len(out) == 2 * len(PHASES)
    return out


def _wave2_tables(wave2: Wave2Result) -> list[tuple[str, list[str], list[list[str]]]]:
    tables = []
    c = wave2.config
    if wave2.admission is not None:
        body = []
        for figures in wave2.admission:
            s = figures.summary()
            body.append(
                [
                    figures.name,
                    _cell(s["requests"]),
                    _cell(s["served"]),
                    _cell(s["rejected"]),
                    _cell(s["timed_out"]),
                    _cell(s["wasted_work"]),
                    _cell(s["p99_latency"]),
                    "-" if s["limit_end"] is None else f"{s['limit_end']:g}",
                ]
            )
        tables.append(
            (
                f"Overload: {c.overload:g}x the capacity of {c.upstream_rate:g} req/s, "
                f"callers wait {c.deadline:g} s",
                [
                    "limit",
                    "requests",
                    "served",
                    "rejected",
                    "timed\nout",
                    "wasted\nwork",
                    "p99\ns",
                    "limit\nat end",
                ],
                body,
            )
        )
    if wave2.hedge is not None:
        body = []
        for hedge_figures in wave2.hedge:
            s = hedge_figures.summary()
            body.append(
                [
                    hedge_figures.name,
                    _cell(s["requests"]),
                    _cell(s["upstream_calls"]),
                    _cell(s["p50_latency"]),
                    _cell(s["p99_latency"]),
                    _cell(s["p999_latency"]),
                ]
            )
        tables.append(
            (
                f"Long tail: {100 * c.tail_share:g}% of calls pause 1-2 s",
                ["run", "requests", "upstream\ncalls", "p50\ns", "p99\ns", "p99.9\ns"],
                body,
            )
        )
    return tables


def _title(result: DemoResult) -> str:
    c = result.config
    return (
        f"trio-resilience demo (seed {c.seed}): {c.clients} clients, "
        f"upstream capacity {c.upstream_rate:g} req/s"
    )


def render_text(result: DemoResult | None, out: TextIO, wave2: Wave2Result | None = None) -> None:
    """Write the report, at most 80 columns wide off a terminal; rich tables if installed."""
    try:
        from rich.console import Console
    except ImportError:  # the plain report: no extra needed
        _render_plain(result, out, wave2)
        return
    _render_rich(result, out, wave2, Console)


def _render_rich(
    result: DemoResult | None, out: TextIO, wave2: Wave2Result | None, console_type: Any
) -> None:
    from rich import box
    from rich.table import Table

    width = None if out.isatty() else WIDTH
    console = console_type(file=out, width=width, highlight=False)
    if width is None:
        console.width = min(console.width, 120)

    # Collapsed padding and no outer edge: the widest table is 76 columns.
    look: dict[str, Any] = {"box": box.SIMPLE_HEAD, "show_edge": False, "collapse_padding": True}

    def table(title: str, headers: list[str], body: list[list[str]], left: int) -> Any:
        t = Table(title=title, title_justify="left", **look)
        for i, header in enumerate(headers):
            t.add_column(header, justify="left" if i < left else "right", no_wrap=True)
        for i, row in enumerate(body):
            # The second row of each pair is the guarded (or wave-2) run.
            style = "green" if i % 2 else None
            t.add_row(*row, style=style, end_section=left == 2 and i % 2 == 1)
        return t

    if result is not None:
        headers = ["phase", "run"] + [h for _, h in _COLUMNS]
        console.print(table(_title(result), headers, rows(result), 2))
        console.print(LEGEND)
        transitions = Table(
            title="guarded run: circuit breaker transitions",
            title_justify="left",
            **look,
        )
        for header in ("t (s)", "from", "to", "reason"):
            transitions.add_column(header, justify="right" if header == "t (s)" else "left")
        for t in _transitions(result):
            transitions.add_row(*t)
        console.print(transitions)
    for title, headers, body in _wave2_tables(wave2) if wave2 else ():
        console.print(table(title, headers, body, 1))
    console.print("[bold]What each policy bought[/bold]")
    for sentence in _sentences(result, wave2):
        console.print(f"- {sentence}")


def _transitions(result: DemoResult) -> list[tuple[str, str, str, str]]:
    return [
        (f"{c.at:.2f}", str(c.old_state), str(c.new_state), c.reason)
        for c in result.guarded.transitions
    ]


def _sentences(result: DemoResult | None, wave2: Wave2Result | None) -> list[str]:
    lines = result.sentences() if result is not None else []
    if wave2 is not None:
        lines += wave2.sentences()
        lines += [f"Skipped the {scene} scene: it {why}." for scene, why in wave2.skipped.items()]
    return lines


def _plain_table(headers: list[str], body: list[list[str]], left: int) -> list[str]:
    """Columns two spaces apart; a header of two lines keeps its column narrow."""
    split = [h.split("\n") for h in headers]
    height = max(len(parts) for parts in split)
    head = [[""] * (height - len(parts)) + parts for parts in split]
    widths = [
        max(max(len(p) for p in head[i]), *(len(r[i]) for r in body)) for i in range(len(headers))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    lines = [line([head[i][j] for i in range(len(headers))]) for j in range(height)]
    lines.append("  ".join("-" * w for w in widths))
    lines += [line(r) for r in body]
    return lines


def _render_plain(result: DemoResult | None, out: TextIO, wave2: Wave2Result | None) -> None:
    def say(text: str = "") -> None:
        out.write(text + "\n")

    if result is not None:
        say(_title(result))
        headers = ["phase", "run"] + [h for _, h in _COLUMNS]
        for line in _plain_table(headers, rows(result), 2):
            say(line)
        say(textwrap.fill(LEGEND, WIDTH - 2))
        say()
        say("guarded run: circuit breaker transitions")
        for t in _transitions(result):
            say(f"  t={t[0]:>7}s  {t[1]} -> {t[2]} ({t[3]})")
    for title, headers, body in _wave2_tables(wave2) if wave2 else ():
        say()
        say(title)
        for line in _plain_table(headers, body, 1):
            say(line)
    say()
    say("What each policy bought")
    for sentence in _sentences(result, wave2):
        say(textwrap.fill(sentence, WIDTH - 2, initial_indent="- ", subsequent_indent="  "))


def render_json(result: DemoResult | None, out: TextIO, wave2: Wave2Result | None = None) -> None:
    """Write every figure as one JSON document."""
    document = result.to_json() if result is not None else {}
    if wave2 is not None:
        document["wave2"] = wave2.to_json()
    json.dump(document, out, indent=2)
    out.write("\n")
