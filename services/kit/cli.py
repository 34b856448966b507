"""The ``supportmesh`` command: ``supportmesh dev`` runs the whole platform locally."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

from services.kit import gateway, logs
from services.kit.devstack import Platform

DEFAULT_STATE = gateway.REPO_ROOT / ".supportmesh"


def _dev(state_dir: Path, free_ports: bool) -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    platform = Platform(state_dir=state_dir, fixed_ports=not free_ports)
    started = time.monotonic()
    print(f"starting supportmesh (state in {state_dir}) …", flush=True)
    platform.start()
    print(f"supportmesh is up in {time.monotonic() - started:.1f}s:", flush=True)
    for name, url in platform.urls().items():
        print(f"  {name:<28} {url}", flush=True)
    print("Ctrl-C stops everything.", flush=True)
    try:
        while not stop.wait(0.5):
            dead = [name for name, proc in platform.processes.items() if not proc.running]
            if dead:
                print(f"stopped unexpectedly: {', '.join(dead)} (see the logs)", flush=True)
                return 1
        return 0
    finally:
        print("stopping …", flush=True)
        platform.stop()
        print("stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="supportmesh")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run the platform on the embedded real stack")
    dev.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="data and logs")
    dev.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of the fixed dev ones"
    )
    args = parser.parse_args(argv)
    logs.configure("supportmesh", json_lines=False)
    logging.getLogger().setLevel(logging.WARNING)
    return _dev(args.state_dir.absolute(), args.free_ports)


if __name__ == "__main__":
    raise SystemExit(main())
