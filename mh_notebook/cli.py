"""The ``mh-notebook`` command: ``sim`` serves the simulator, ``demo`` opens the demo."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import secrets
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _sim(args: argparse.Namespace) -> int:
    from .sim import Simulator

    sim = Simulator(
        port=args.port,
        speed=args.speed,
        seed=args.seed,
        clock_skew=args.clock_skew,
        whole_seconds=args.whole_seconds,
        rate_limit=args.rate_limit,
        rate_burst=args.rate_burst,
    )
    sim.start()
    print(f"ModelHunter simulator serving at {sim.url}")
    print(f"  export MODELHUNTER_BASE_URL={sim.url}")
    print(f"  export MODELHUNTER_KEY={sim.api_key}")
    body = '{"model": "viduq3-turbo", "input": {"prompt": "..."}}'
    print(f"Create a task: POST /api/v1/vidu/text-to-video {body}. Ctrl-C stops.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()
    return 0


def _find_notebook(name: str) -> Path | None:
    """``notebooks/<name>`` in the current directory or in the clone the package came from."""
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = root / "notebooks" / name
        if candidate.is_file():
            return candidate
    return None


def _demo(args: argparse.Namespace) -> int:
    notebook = _find_notebook("quickstart.ipynb")
    if notebook is None:
        print(
            "notebooks/quickstart.ipynb not found: run this from a clone of the mh_notebook repository",
            file=sys.stderr,
        )
        return 2
    if importlib.util.find_spec("jupyterlab") is None:
        print("JupyterLab is not installed: pip install 'mh-notebook[demo]'", file=sys.stderr)
        return 2
    token = secrets.token_hex(16)
    url = f"http://127.0.0.1:{args.port}/lab/tree/{notebook.name}?token={token}"
    command = [
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebook.parent}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={args.port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.default_url=/lab/tree/{notebook.name}",
    ]  # fmt: skip
    if args.no_browser:
        command.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI run as root
    print(f"mh_notebook demo: JupyterLab on {notebook}\n  open {url}\n  Ctrl-C stops it.", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.call(command)  # noqa: S603 - our own interpreter and arguments
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mh-notebook", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("sim", help="serve the embedded ModelHunter simulator on 127.0.0.1")
    sim.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    sim.add_argument("--speed", type=float, default=1.0, help="time factor: 10 runs 10x faster")
    sim.add_argument("--seed", type=int, default=None, help="seed for latencies and ids")
    sim.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="server clock ahead of the real one (negative: behind); shifts timestamps and Date",
    )
    sim.add_argument(
        "--whole-seconds",
        action="store_true",
        help="report timestamps in whole seconds, as the docs' examples",
    )
    sim.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        metavar="PER_SECOND",
        help="limit status requests per API key (429 with Retry-After above it); default unlimited",
    )
    sim.add_argument(
        "--rate-burst",
        type=float,
        default=None,
        metavar="N",
        help="token bucket size for --rate-limit (default max(1, rate))",
    )
    sim.set_defaults(func=_sim)
    demo = sub.add_parser("demo", help="open the quickstart notebook in JupyterLab (simulator inside)")
    demo.add_argument("--port", type=int, default=8888, help="JupyterLab's port on 127.0.0.1")
    demo.add_argument("--no-browser", action="store_true", help="do not open a browser")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mh-notebook`` command."""
    args = _parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
