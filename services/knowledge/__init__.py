"""The knowledge service: document ingestion (chunk, embed, index) and tenant-isolated search."""
