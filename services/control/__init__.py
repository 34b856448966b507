"""The control plane: tenants, plans, users, API keys, flags, switches, registries and audit."""
