"""Run the knowledge service, its ingestion worker, or the folder-ingest command.

- ``python -m services.knowledge`` serves KnowledgeService; with the local index (no
  ``QDRANT_URL``) it also consumes the ingestion queue, since only one process may open it.
- ``python -m services.knowledge worker`` consumes the ingestion queue only (what KEDA scales
  on queue depth); it answers gRPC health checks on its port for probes.
- ``python -m services.knowledge ingest DIR --tenant T`` ingests a folder through the edge.
"""

from __future__ import annotations

import asyncio
import sys

from services.kit import heap, logs
from services.kit.server import run_until_signalled, start_server
from services.kit.telemetry import Telemetry
from services.knowledge.app import KnowledgeSettings, build


async def serve(settings: KnowledgeSettings, *, worker_only: bool) -> None:
    """Start the service (or the worker), run until signalled, then drain and stop."""
    telemetry = Telemetry(settings.service_name)
    app = build(settings)
    await app.start(work=worker_only or app.works)
    heap.freeze()  # before the port opens: nothing waits on this collection
    try:
        if worker_only:
            service = await start_server(settings, lambda server: None, (), telemetry)
        else:
            service = await start_server(settings, app.register, app.service_names, telemetry)
        # The dev supervisor and tests read the bound port from this line.
        print(f"READY {settings.service_name} port={service.port}", flush=True)
        await run_until_signalled(service)
    finally:
        await app.stop()


def main(argv: list[str] | None = None) -> int:
    """Dispatch on the first argument."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "ingest":
        from services.knowledge import cli

        return cli.main(args[1:])
    settings = KnowledgeSettings()
    logs.configure(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(serve(settings, worker_only=bool(args) and args[0] == "worker"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
