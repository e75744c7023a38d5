"""The ``trio-resilience`` command: ``trio-resilience demo`` tells an outage and overload story.

The demo lives in its own sub-package, ``trio_resilience.demo``, imported only from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO


class _Parser(argparse.ArgumentParser):
    """Errors as one line and exit status 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"trio-resilience: error: {message}\n")


SCENES = ("all", "outage", "wave2")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import PLOT_SUFFIXES, DemoConfig

    defaults = DemoConfig()
    parser = _Parser(
        prog="trio-resilience", description="Resilience policies for Trio, demonstrated."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = commands.add_parser(
        "demo",
        help="an outage, an overload and a long tail, unguarded and guarded, in virtual time",
        description=(
            "One client fleet meets an upstream outage and an overload burst twice: "
            "unguarded, then guarded by retry, breaker, timeout, shedding and loop budgets. "
            "The wave-2 scenes follow: an overload met by a fixed limit and by adaptive "
            "concurrency, and a long tail met by hedging."
        ),
    )
    demo.add_argument("--seed", type=int, default=defaults.seed, help="seed of every draw")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON")
    demo.add_argument(
        "--plot",
        metavar="FILE.png",
        help=f"draw the timeline of both runs ({', '.join(PLOT_SUFFIXES)}; needs matplotlib)",
    )
    demo.add_argument(
        "--scene",
        choices=SCENES,
        default="all",
        help="the outage story, the wave-2 scenes (adaptive concurrency, hedging), or all",
    )
    demo.add_argument(
        "--realtime",
        action="store_true",
        help="run on the real clock (scaled by --speed); progress shows on a terminal",
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
    if args.command == "demo":
        try:
            return _demo(parser, args)
        except BrokenPipeError:  # `trio-resilience demo | head`: the reader left
            sys.stderr.close()
            return 0
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse checks


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .demo import (
        DemoConfig,
        PlotUnavailable,
        Wave2Config,
        check_matplotlib,
        check_plot_path,
        plot,
        render_json,
        render_text,
        run_scenario,
        run_wave2,
        validate,
    )

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
    # Every option is checked before anything runs: a mistake costs no waiting.
    try:
        validate(config)
        if not args.speed > 0:
            raise ValueError(f"--speed must be a number > 0, got {args.speed!r}")
        if args.plot:
            if args.scene == "wave2":
                raise ValueError("--plot draws the outage story: use it with --scene all or outage")
            check_plot_path(args.plot)
            check_matplotlib()
    except (ValueError, PlotUnavailable) as exc:
        parser.exit(2, f"trio-resilience: error: {exc}\n")
    result = wave2 = None
    if args.scene in ("all", "outage"):
        # Progress lines rewrite themselves with \r: only on a terminal, never into a pipe.
        show = args.realtime and sys.stderr.isatty()
        on_tick = _progress(sys.stderr) if show else None
        result = run_scenario(config, realtime=args.realtime, speed=args.speed, on_tick=on_tick)
        if show:
            sys.stderr.write("\n")
    if args.scene in ("all", "wave2"):
        wave2 = run_wave2(Wave2Config(seed=args.seed))
    if args.json:
        render_json(result, sys.stdout, wave2)
    else:
        render_text(result, sys.stdout, wave2)
    sys.stdout.flush()
    if args.plot and result is not None:
        try:
            plot(result, args.plot)
        except OSError as exc:
            parser.exit(1, f"trio-resilience: error: cannot write {args.plot}: {exc.strerror}\n")
        print(f"timeline written to {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
