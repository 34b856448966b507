"""Run the orchestrator service: ``python -m services.orchestrator``.

Like the router, it composes the kit pieces itself: the tools' resilience metrics need the
server's Telemetry, and background work (outbox relay, lease recovery, the
``orchestrator-requested`` consumer) starts before serving and stops after draining.
"""

import asyncio

from services.kit import logs
from services.kit.server import run_until_signalled, start_server
from services.kit.telemetry import Telemetry
from services.orchestrator.app import OrchestratorSettings, build


async def serve(settings: OrchestratorSettings) -> None:
    """Start the orchestrator, serve until signalled, then drain and stop."""
    telemetry = Telemetry(settings.service_name)
    app = build(settings, telemetry)
    await app.start()
    try:
        service = await start_server(settings, app.register, app.service_names, telemetry)
        # The dev supervisor and tests read the bound port from this line.
        print(f"READY {settings.service_name} port={service.port}", flush=True)
        await run_until_signalled(service)
    finally:
        await app.stop()


def main() -> None:
    """Load settings and serve."""
    settings = OrchestratorSettings()
    logs.configure(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
