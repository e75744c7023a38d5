"""The ``trio-resilience`` command: ``trio-resilience demo`` tells an outage story."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trio-resilience", description="Resilience policies for Trio, demonstrated."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the outage story in virtual time")
    demo.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._demo import run_demo

    return run_demo(seed=args.seed, out=sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
