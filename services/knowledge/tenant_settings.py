"""Per-tenant search settings (the FAQ answer threshold), stored like a feature flag.

A tenant sets its threshold with UpdateKnowledgeSettings; a SearchRequest's own
``faq_threshold`` wins over it, and with neither the default 0.8 applies. Searches read the
setting through a short-lived cache, so a change takes effect within ``ttl_s`` seconds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors
from services.kit.ttlcache import TtlCache
from services.knowledge import names, resources
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

DEFAULT_FAQ_THRESHOLD = 0.8
_GET = text("SELECT faq_threshold, updated_at FROM app.knowledge_settings")
_PUT = text(
    """
    INSERT INTO app.knowledge_settings (tenant_id, faq_threshold) VALUES (:tenant, :threshold)
    ON CONFLICT (tenant_id) DO UPDATE SET faq_threshold = excluded.faq_threshold,
      updated_at = now()
    RETURNING faq_threshold, updated_at
    """
)


def resolve(requested: float, stored: float) -> float:
    """The threshold in force: the request's, else the tenant's, else the default."""
    return requested or stored or DEFAULT_FAQ_THRESHOLD


class TenantSettings:
    """Read and write tenants' knowledge settings."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0) -> None:
        """Keep settings in ``engine``'s database; cache reads for ``ttl_s``."""
        self._engine = engine
        self._cache: TtlCache[str, float] = TtlCache(self._threshold, ttl_s)

    async def _read(self, tenant_id: str) -> tuple[float, datetime | None]:
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            row = (await connection.execute(_GET)).one_or_none()
        return (0.0, None) if row is None else (float(row.faq_threshold), row.updated_at)

    async def _threshold(self, tenant_id: str) -> float:
        return (await self._read(tenant_id))[0]

    async def faq_threshold(self, tenant_id: str) -> float:
        """The tenant's stored threshold (0 when unset), cached."""
        return await self._cache.get(tenant_id)

    async def get(self, tenant_id: str) -> pb.KnowledgeSettings:
        """The tenant's settings as stored (defaults when never set)."""
        threshold, updated = await self._read(tenant_id)
        return pb.KnowledgeSettings(
            name=names.settings(tenant_id),
            faq_threshold=threshold,
            update_time=resources.timestamp(updated),
        )

    async def put(self, tenant_id: str, settings: pb.KnowledgeSettings) -> pb.KnowledgeSettings:
        """Store new settings."""
        threshold = settings.faq_threshold
        if not 0.0 <= threshold <= 1.0:
            raise errors.InvalidArgument(
                "faq_threshold must be between 0 and 1", field="knowledge_settings.faq_threshold"
            )
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            params = {"tenant": tenant_id, "threshold": threshold}
            row = (await connection.execute(_PUT, params)).one()
        self._cache.invalidate(tenant_id)
        return pb.KnowledgeSettings(
            name=names.settings(tenant_id),
            faq_threshold=float(row.faq_threshold),
            update_time=resources.timestamp(row.updated_at),
        )
