"""Run the orchestrator service: ``python -m services.orchestrator``."""

from services.kit.server import run_app
from services.orchestrator.app import OrchestratorSettings, build


def main() -> None:
    """Load settings and serve, with the app's background work around the server."""
    settings = OrchestratorSettings()
    run_app(settings, lambda telemetry: build(settings, telemetry))


if __name__ == "__main__":
    main()
