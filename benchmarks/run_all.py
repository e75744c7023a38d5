"""Run every benchmarks/bench_*.py and write docs/benchmarks.md (``make bench``).

Each benchmark prints JSON lines (BENCH_JSON=1): rows of ratios to a baseline measured in
the same process, each the median of several rounds, plus extra figures.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
DOC = HERE.parent / "docs" / "benchmarks.md"


def run(script: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "BENCH_JSON": "1"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"{script.name} failed")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> int:
    records: list[dict[str, Any]] = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"running {script.name} ...", flush=True)
        records.extend(run(script))
    rows = [r for r in records if "what" in r]
    extras = [r for r in records if "extra" in r]
    storms = [r["storm"] for r in records if "storm" in r]
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`benchmarks/run_all.py`); do not edit by hand.",
        "",
        "These machines are shared and noisy, so every figure is a **ratio** to a baseline",
        "measured in the same process, rounds interleaved, each timing the median of",
        f"{os.environ.get('BENCH_ROUNDS', '7')} rounds. Absolute microseconds are shown for",
        "orientation only.",
        "",
        f"Run on {datetime.date.today().isoformat()}, Python {platform.python_version()}, "
        f"{platform.machine()}.",
        "",
        "| what | us | baseline | baseline us | ratio | target | met? |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        met = "yes" if r["met"] else "**no**"
        if r["target"] == "-":
            met = ""
        lines.append(
            f"| {r['what']} | {r['us']:.3f} | {r['baseline']} | {r['baseline_us']:.3f} | "
            f"{r['ratio']:.2f}x | {r['target']} | {met} |"
        )
    for extra in extras:
        for key, value in extra["extra"].items():
            if "memory growth" in key:
                flat = isinstance(value, int) and value < 64 * 1024
                lines.append(
                    f"| {key} | | | | {value:,} B | flat | {'yes' if flat else '**no**'} |"
                )
    if storms:
        lines += [
            "",
            "## Half-open probe storm",
            "",
            "1,000 callers arrive together just after the recovery timeout; how many reach",
            "the recovering upstream? (The peers time their reset on the wall clock, so this",
            "runs in real time with a 50 ms reset.)",
            "",
            "| breaker | calls that reached the upstream |",
            "| --- | ---: |",
        ]
        for name, value in storms[0].items():
            lines.append(f"| {name} | {value} |")
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
    DOC.write_text("\n".join(lines))
    missed = [r["what"] for r in rows if not r["met"]]
    print(f"wrote {DOC.relative_to(HERE.parent)}; targets missed: {missed or 'none'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
