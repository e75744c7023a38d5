"""The ``trio-resilience`` command: ``trio-resilience demo`` tells an outage and overload story."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO


class _Parser(argparse.ArgumentParser):
    """Errors as one line and exit status 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"trio-resilience: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from ._demo import DemoConfig

    defaults = DemoConfig()
    parser = _Parser(
        prog="trio-resilience", description="Resilience policies for Trio, demonstrated."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="an outage and an overload, unguarded and guarded, in virtual time",
        description=(
            "One client fleet meets an upstream outage and an overload burst twice: "
            "unguarded, then guarded by retry, breaker, timeout, shedding and loop budgets."
        ),
    )
    demo.add_argument("--seed", type=int, default=defaults.seed, help="seed of every draw")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON")
    demo.add_argument("--plot", metavar="FILE.png", help="draw the timeline of both runs")
    demo.add_argument(
        "--realtime", action="store_true", help="run on the real clock (scaled by --speed)"
    )
    demo.add_argument("--speed", type=float, default=10.0, help="virtual seconds per second")
    sizes = demo.add_argument_group("sizes")
    for name in ("clients", "capacity", "workers", "buffer"):
        sizes.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    sizes.add_argument("--rate", type=float, default=defaults.rate, help="requests/s per client")
    sizes.add_argument("--service-time", type=float, default=defaults.service_time)
    for name in ("healthy", "outage", "recovery", "overload", "calm"):
        sizes.add_argument(
            f"--{name}", type=float, default=getattr(defaults, name), help=f"{name} phase, s"
        )
    _add_watch(commands)
    return parser


def _add_watch(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="a live view of a process's Prometheus endpoint (trio_resilience.metrics)",
        description=(
            "Scrape URL every --interval seconds and show breakers (state, time in state, "
            "rejection rate), retries, shed rates and limits; plain lines when piped."
        ),
    )
    watch.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:8000/metrics")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    watch.add_argument("--once", action="store_true", help="scrape once, print, and exit")


def _run_watch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import math

    from ._watch import check_url
    from ._watch import main as watch_main

    try:
        check_url(args.url)
        if not (math.isfinite(args.interval) and args.interval > 0):
            raise ValueError(f"--interval must be a finite number > 0, got {args.interval!r}")
    except ValueError as exc:
        parser.exit(2, f"trio-resilience: error: {exc}\n")
    return watch_main(args.url, args.interval, args.once, sys.stdout)


def _progress(out: TextIO) -> Any:
    def on_tick(guarded: bool, now: float, recorder: Any, breaker: Any) -> None:
        served = sum(f.served for f in recorder.phases.values())
        shed = sum(f.shed for f in recorder.phases.values())
        state = breaker.state if guarded else "-"
        out.write(
            f"\r[{'guarded' if guarded else 'unguarded':>9}] t={now:6.1f}s "
            f"phase={recorder.config.phase_at(now):<8} served={served:<6} shed={shed:<6} "
            f"breaker={state:<9}"
        )
        out.flush()

    return on_tick


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "watch":
        return _run_watch(parser, args)
    from ._demo import DemoConfig, run_scenario, validate
    from ._demo_report import PlotUnavailable, plot, render_json, render_text

    config = DemoConfig(
        seed=args.seed,
        clients=args.clients,
        rate=args.rate,
        capacity=args.capacity,
        service_time=args.service_time,
        workers=args.workers,
        buffer=args.buffer,
        healthy=args.healthy,
        outage=args.outage,
        recovery=args.recovery,
        overload=args.overload,
        calm=args.calm,
    )
    try:
        validate(config)
        if not args.speed > 0:
            raise ValueError(f"--speed must be a number > 0, got {args.speed!r}")
    except ValueError as exc:
        parser.exit(2, f"trio-resilience: error: {exc}\n")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            parser.exit(
                2,
                "trio-resilience: error: --plot needs matplotlib: "
                "pip install 'trio-resilience[plot]'\n",
            )
    on_tick = _progress(sys.stderr) if args.realtime else None
    result = run_scenario(config, realtime=args.realtime, speed=args.speed, on_tick=on_tick)
    if args.realtime:
        sys.stderr.write("\n")
    if args.json:
        render_json(result, sys.stdout)
    else:
        render_text(result, sys.stdout)
    sys.stdout.flush()
    if args.plot:
        try:
            plot(result, args.plot)
        except PlotUnavailable as exc:  # pragma: no cover - checked above
            parser.exit(2, f"trio-resilience: error: {exc}\n")
        except OSError as exc:
            parser.exit(1, f"trio-resilience: error: cannot write {args.plot}: {exc.strerror}\n")
        print(f"timeline written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
