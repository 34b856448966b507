"""Data-plane commands: ``python -m services.dataplane migrate|dlq``."""

from __future__ import annotations

import argparse
import asyncio
import signal

from services.dataplane import migrate
from services.kit import events, heap, logs
from services.kit.settings import InfraSettings


async def _run_dlq(nats_url: str) -> None:
    client, js = await events.connect(nats_url)
    forwarder = events.dead_letter_forwarder(js)
    await forwarder.start()
    heap.freeze()
    print("READY dlq-forwarder", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await forwarder.stop()
    await client.close()


def main() -> None:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m services.dataplane")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply migrations and declare JetStream streams")
    sub.add_parser("dlq", help="forward max-delivery advisories into the DLQ stream")
    args = parser.parse_args()
    infra = InfraSettings()
    logs.configure("dataplane")
    if args.command == "migrate":
        migrate.upgrade(infra.migration_database_url or infra.database_url)
        asyncio.run(migrate.declare_streams(infra.nats_url))
    else:
        asyncio.run(_run_dlq(infra.nats_url))


if __name__ == "__main__":
    main()
