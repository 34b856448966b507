"""Run the realtime service: ``python -m services.realtime``."""

from services.kit.server import run_app
from services.realtime.app import RealtimeSettings, build


def main() -> None:
    """Load settings and serve."""
    settings = RealtimeSettings()
    run_app(settings, lambda telemetry: build(settings, telemetry))


if __name__ == "__main__":
    main()
