"""Run every benchmarks/bench_*.py and write docs/benchmarks.md (``make bench``).

Every ``bench_*.py`` module in this folder is a benchmark, found by that pattern: a new
module needs no registration. Its entry point is the script itself
(``if __name__ == "__main__": trio.run(main)`` or ``main()``); run with ``BENCH_JSON=1``
it prints JSON lines through ``_common.report``:

- a row: ``{"bench": title, "what", "baseline", "us", "baseline_us", "ratio", "target", "met"}``
  (a ratio to a baseline measured in the same process, each the median of several rounds);
- extra figures: ``{"bench": title, "extra": {name: value}}`` (``memory growth`` names
  are checked flat, under 64 KiB);
- the probe storm: ``{"bench": title, "storm": {breaker: calls}}``;
- any other table: ``{"bench": title, "table": {"title", "columns", "rows", "note"}}``.

Each module gets its own section, in file-name order. A module that needs an optional
package that is missing is listed as not run; one that fails is listed as failed, and the
page is still written from the others (the exit status says so).

    python benchmarks/run_all.py                 # every module, writes docs/benchmarks.md
    python benchmarks/run_all.py -k breaker -k retry --output /tmp/b.md
    python benchmarks/run_all.py --list
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DOC = HERE.parent / "docs" / "benchmarks.md"
PATTERN = "bench_*.py"
FLAT_BYTES = 64 * 1024
_MISSING = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")


@dataclass
class ModuleRun:
    """What one benchmark module produced."""

    script: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    missing: str | None = None  # an optional package it needs and that is absent
    error: str | None = None  # the end of its stderr when it failed

    @property
    def title(self) -> str:
        titles = [r["bench"] for r in self.records if "bench" in r]
        return titles[0] if titles else self.script.stem.removeprefix("bench_")


def discover(folder: Path = HERE, only: Sequence[str] = ()) -> list[Path]:
    """The benchmark modules of ``folder``, sorted; ``only`` keeps names containing one."""
    scripts = sorted(folder.glob(PATTERN))
    if only:
        scripts = [s for s in scripts if any(word in s.stem for word in only)]
    return scripts


def run(script: Path) -> ModuleRun:
    """Run one module as a script with BENCH_JSON=1 and collect its JSON lines."""
    env = {**os.environ, "BENCH_JSON": "1"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    result = ModuleRun(script)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            try:
                result.records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if done.returncode:
        missing = _MISSING.search(done.stderr)
        if missing:
            result.missing = missing[1].split(".")[0]
        else:
            result.error = done.stderr.strip()[-2000:] or f"exit status {done.returncode}"
    return result


def _row(r: dict[str, Any]) -> str:
    met = "" if r["target"] == "-" else ("yes" if r["met"] else "**no**")
    return (
        f"| {r['what']} | {r['us']:.3f} | {r['baseline']} | {r['baseline_us']:.3f} | "
        f"{r['ratio']:.2f}x | {r['target']} | {met} |"
    )


def _extra_row(key: str, value: Any) -> str | None:
    if "memory growth" in key:
        flat = isinstance(value, int) and value < FLAT_BYTES
        shown = f"{value:,} B" if isinstance(value, int) else str(value)
        return f"| {key} | | | | {shown} | flat | {'yes' if flat else '**no**'} |"
    return None


def _storm(storm: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### Half-open probe storm",
        "",
        "1,000 callers arrive together just after the recovery timeout; how many reach",
        "the recovering upstream? (The peers time their reset on the wall clock, so this",
        "runs in real time with a 50 ms reset.)",
        "",
        "| breaker | calls that reached the upstream |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {value} |" for name, value in storm.items()]
    return lines


def _table(table: dict[str, Any]) -> list[str]:
    columns = [str(c) for c in table.get("columns", [])]
    if not columns:
        return []
    lines = ["", f"### {table.get('title', 'figures')}", ""]
    if table.get("note"):
        lines += [str(table["note"]), ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("| " + " | ".join("---" for _ in columns) + " |")
    for row in table.get("rows", []):
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


def missed_targets(runs: Sequence[ModuleRun]) -> list[str]:
    """The rows whose target was not met, and memory figures that were not flat."""
    missed = [r["what"] for run in runs for r in run.records if "what" in r and not r["met"]]
    for run in runs:
        for record in run.records:
            for key, value in record.get("extra", {}).items():
                if "memory growth" in key and not (isinstance(value, int) and value < FLAT_BYTES):
                    missed.append(key)
    return missed


# Why a target can be missed on any machine: printed under the table when it is.
WHY_MISSED = {
    "half-open probe breaker.call": (
        "each probe takes and returns a permit of a `trio.CapacityLimiter` "
        "(`acquire_on_behalf_of_nowait` and `release_on_behalf_of`, which the contract "
        "keeps); that pair alone around a bare await costs about 5.5-6.5x the minimal "
        "wrapper in the same process, before the breaker does anything."
    ),
    "async for attempt in retry (first try)": (
        "any async iterator that yields once (the one-shot async for row) already costs "
        "about 4x the minimal wrapper in CPython 3.11; the attempt loop adds one clock "
        "read for `max_total_duration` and the `with attempt:` block."
    ),
}

SIMULATIONS = [
    "",
    "## Simulations of the adaptive policies",
    "",
    "The adaptive policies are judged in simulations on Trio's autojump clock, seeded, each",
    "beside the anchor's algorithm on the same load: `benchmarks/sim_throttle.py`",
    "([throttling](throttling.md)), `benchmarks/sim_concurrency.py`",
    "([concurrency](concurrency.md), beside a port of Netflix's Gradient2) and",
    "`benchmarks/sim_hedge.py` ([hedging](hedging.md)). Their figures and plots are on",
    "those pages; `python benchmarks/sim_<name>.py` reproduces them.",
]


def render(runs: Sequence[ModuleRun], *, when: str | None = None) -> str:
    """The whole of docs/benchmarks.md, one section per module."""
    rounds = os.environ.get("BENCH_ROUNDS", "7")
    when = when or (
        f"Run on {datetime.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{platform.machine()}."
    )
    missed = missed_targets(runs)
    targets = sum(1 for run in runs for r in run.records if "what" in r and r["target"] != "-")
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`benchmarks/run_all.py`); do not edit by hand.",
        "",
        "These machines are shared and noisy, so every figure is a **ratio** to a baseline",
        "measured in the same process, rounds interleaved, each timing the median of",
        f"{rounds} rounds. Absolute microseconds are shown for orientation only.",
        "",
        when,
        "",
        f"{targets} target{'' if targets == 1 else 's'}, "
        + ("every one met." if not missed else f"missed: {', '.join(missed)}."),
    ]
    for run in runs:
        if run.missing or run.error:
            continue
        rows = [r for r in run.records if "what" in r]
        extras = [
            line
            for r in run.records
            for key, value in r.get("extra", {}).items()
            if (line := _extra_row(key, value)) is not None
        ]
        lines += ["", f"## {run.title}", "", f"From `benchmarks/{run.script.name}`."]
        if rows or extras:
            lines += [
                "",
                "| what | us | baseline | baseline us | ratio | target | met? |",
                "| --- | ---: | --- | ---: | ---: | --- | --- |",
            ]
            lines += [_row(r) for r in rows] + extras
        for record in run.records:
            if "storm" in record:
                lines += _storm(record["storm"])
            if "table" in record:
                lines += _table(record["table"])
        notes = [
            f"{key}: {value}"
            for r in run.records
            for key, value in r.get("extra", {}).items()
            if _extra_row(key, value) is None
        ]
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        why = [
            f"- Missed, {r['what']}: {WHY_MISSED[r['what']]}"
            for r in rows
            if r.get("met") is False and r["what"] in WHY_MISSED
        ]
        if why:
            lines += ["", *why]
    lines += SIMULATIONS
    not_run = [r for r in runs if r.missing or r.error]
    if not_run:
        lines += ["", "## Not run", ""]
        for r in not_run:
            why = f"needs `{r.missing}`, not installed" if r.missing else "failed"
            lines.append(f"- `benchmarks/{r.script.name}`: {why}.")
    lines += [
        "",
        "## Reading the peers' rows",
        "",
        "Each peer is measured against its own runtime's baseline: tenacity and stamina",
        "under Trio against the minimal call wrapper, pybreaker's sync `call` against a",
        "bare sync call, aiobreaker and purgatory under asyncio against a bare asyncio",
        "await. Missing peers (not installed) are listed by the script and left out.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-k", dest="only", action="append", default=[], help="run modules whose name has this"
    )
    parser.add_argument("--output", type=Path, default=DOC, help="where to write the page")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    scripts = discover(HERE, args.only)
    if args.list:
        for script in scripts:
            print(script.name)
        return 0
    if not scripts:
        print(f"no {PATTERN} matches {args.only}", file=sys.stderr)
        return 2
    runs = []
    for script in scripts:
        print(f"running {script.name} ...", flush=True)
        result = run(script)
        if result.missing:
            print(f"  not run: needs {result.missing}", flush=True)
        elif result.error:
            print(f"  FAILED:\n{result.error}", file=sys.stderr, flush=True)
        runs.append(result)
    args.output.write_text(render(runs))
    missed = missed_targets(runs)
    failed = [r.script.name for r in runs if r.error]
    print(f"wrote {args.output}; targets missed: {missed or 'none'}; failed: {failed or 'none'}")
    return 1 if missed or failed else 0


if __name__ == "__main__":
    sys.exit(main())
