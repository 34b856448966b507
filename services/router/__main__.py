"""Run the router service: ``python -m services.router``.

Not ``services.kit.server.run_service``: the router needs the server's Telemetry to register
its metrics, and background work (registry refresh, run-outcome consumer) started before
serving and stopped after draining; it composes the same kit pieces itself.
"""

import asyncio

from services.kit import logs
from services.kit.server import run_until_signalled, start_server
from services.kit.telemetry import Telemetry
from services.router.app import RouterSettings, build


async def serve(settings: RouterSettings) -> None:
    """Start the router, serve until signalled, then drain and stop."""
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
    settings = RouterSettings()
    logs.configure(settings.service_name, settings.log_level, settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
