"""The ``mh-notebook`` command: ``sim`` serves the simulator, ``demo`` opens the demo."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _sim(args: argparse.Namespace) -> int:
    from .sim import Simulator

    sim = Simulator(port=args.port, speed=args.speed, seed=args.seed)
    sim.start()
    print(f"ModelHunter simulator serving at {sim.url}")
    print(f"  export MODELHUNTER_BASE_URL={sim.url}")
    print(f"  export MODELHUNTER_API_KEY={sim.api_key}")
    print('Create a task: POST /sim/v1/tasks {"model": "viduq3-turbo"}. Ctrl-C stops.', flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mh-notebook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="serve the embedded ModelHunter simulator on 127.0.0.1")
    sim.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    sim.add_argument("--speed", type=float, default=1.0, help="time factor: 10 runs 10x faster")
    sim.add_argument("--seed", type=int, default=None, help="seed for latencies and ids")
    sim.set_defaults(func=_sim)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mh-notebook`` command."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
