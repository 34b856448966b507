"""The ``supportmesh`` command: run the platform locally and manage tenants and keys.

``dev`` runs the whole platform; ``tenant`` and ``key`` create tenants and API keys on a
running platform.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

import grpc
import yaml

from services.kit import errors, gateway, logs, operator
from services.kit.devstack import Platform

DEFAULT_STATE = gateway.REPO_ROOT / ".supportmesh"


def _dev(state_dir: Path, free_ports: bool) -> int:
    # A plain flag, not threading.Event: Event.set() in a signal handler can deadlock on the
    # lock the interrupted Event.wait() holds in the same (main) thread.
    stopping: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    platform = Platform(state_dir=state_dir, fixed_ports=not free_ports)
    started = time.monotonic()
    print(f"starting supportmesh (state in {state_dir}) …", flush=True)
    platform.start()
    print(f"supportmesh is up in {time.monotonic() - started:.1f}s:", flush=True)
    for name, url in platform.urls().items():
        print(f"  {name:<28} {url}", flush=True)
    print("Ctrl-C stops everything.", flush=True)
    try:
        while not stopping:
            time.sleep(0.2)
            dead = [name for name, proc in platform.processes.items() if not proc.running]
            if dead:
                print(f"stopped unexpectedly: {', '.join(dead)} (see the logs)", flush=True)
                return 1
        return 0
    finally:
        print("stopping …", flush=True)
        platform.stop()
        print("stopped.", flush=True)


def _edge(args: argparse.Namespace) -> operator.Edge:
    key = args.key or Path(args.key_file).read_text().strip()
    return operator.Edge(args.edge.removeprefix("http://"), key)


def _operator(args: argparse.Namespace) -> int:
    edge = _edge(args)
    try:
        if args.command == "tenant":
            tenant = asyncio.run(operator.create_tenant(edge, args.id, args.plan, args.name))
            print(f"{tenant.name} ({tenant.plan})")
        else:
            name, secret = asyncio.run(
                operator.create_key(edge, args.tenant, args.scope, args.rpm, args.name)
            )
            print(f"{name}\n{secret}")
    except grpc.RpcError as exc:
        remote = errors.parse_rpc_error(exc)
        print(f"error: {remote.code.name} {remote.reason}: {remote.message}", file=sys.stderr)
        return 1
    return 0


def _add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--edge", default="127.0.0.1:8080", help="the Envoy edge (host:port)")
    common.add_argument("--key", default="", help="operator API key (default: --key-file)")
    common.add_argument(
        "--key-file", default=str(DEFAULT_STATE / "platform-admin.key"), help="operator key file"
    )
    tenant = sub.add_parser("tenant", parents=[common], help="create a tenant")
    tenant.add_argument("action", choices=["create"])
    tenant.add_argument("id", help="tenant id, e.g. acme")
    tenant.add_argument("--plan", default="pro", help="plan id (free, pro, enterprise)")
    tenant.add_argument("--name", default="", help="display name")
    key = sub.add_parser("key", parents=[common], help="create an API key (printed once)")
    key.add_argument("action", choices=["create"])
    key.add_argument("tenant", help="tenant id")
    key.add_argument("--scope", action="append", required=True, help="repeat for each scope")
    key.add_argument("--rpm", type=int, default=0, help="requests per minute for this key")
    key.add_argument("--name", default="", help="display name")


def _gateway(args: argparse.Namespace) -> int:
    config = gateway.render_production(
        gateway.load_catalog(),
        namespace=args.namespace,
        descriptor=Path(args.descriptor),
        cors_origins=args.cors_origin or (),
    )
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="supportmesh")
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run the platform on the embedded real stack")
    dev.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="data and logs")
    dev.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of the fixed dev ones"
    )
    _add_operator_commands(sub)
    render = sub.add_parser("gateway", help="print the production Envoy config (Kubernetes)")
    render.add_argument("action", choices=["render"])
    render.add_argument("--namespace", default="supportmesh", help="namespace of the Services")
    render.add_argument(
        "--descriptor",
        default="/etc/envoy/descriptors/supportmesh.binpb",
        help="path of the descriptor set inside the Envoy pod",
    )
    render.add_argument("--cors-origin", action="append", help="allowed browser origin")
    args = parser.parse_args(argv)
    logs.configure("supportmesh", json_lines=False)
    logging.getLogger().setLevel(logging.WARNING)
    if args.command in ("tenant", "key"):
        return _operator(args)
    if args.command == "gateway":
        return _gateway(args)
    return _dev(args.state_dir.absolute(), args.free_ports)


if __name__ == "__main__":
    raise SystemExit(main())
