"""Run the router service: ``python -m services.router``."""

from services.kit.server import run_app
from services.router.app import RouterSettings, build


def main() -> None:
    """Load settings and serve, with the app's background work around the server."""
    settings = RouterSettings()
    run_app(settings, lambda telemetry: build(settings, telemetry))


if __name__ == "__main__":
    main()
