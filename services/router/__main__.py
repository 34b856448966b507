"""Run the router service: ``python -m services.router``."""

from services.kit.server import run_service
from services.router.app import RouterSettings, build


def main() -> None:
    """Load settings and serve."""
    settings = RouterSettings()
    run_service(settings, lambda: build(settings))


if __name__ == "__main__":
    main()
