"""Run the control plane service: ``python -m services.control``."""

from services.control.app import ControlSettings, build
from services.kit.server import run_service


def main() -> None:
    """Load settings and serve."""
    settings = ControlSettings()
    run_service(settings, lambda: build(settings))


if __name__ == "__main__":
    main()
