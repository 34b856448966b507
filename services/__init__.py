"""SupportMesh services and their shared kit."""
