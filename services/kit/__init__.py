"""Infrastructure shared by every service: bootstrap, errors, settings, clients, fixtures."""
