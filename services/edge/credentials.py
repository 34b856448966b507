"""API key records as the edge sees them, looked up through a cache of at most ``ttl_s``.

The service role cannot read ``app.api_keys`` without a tenant, so records come from the
SECURITY DEFINER function ``app.auth_lookup_api_key``. Each record, and each miss, is kept
for ``ttl_s`` seconds (default 1 s): a revocation, expiry or suspension committed in
PostgreSQL is seen by every edge replica within that bound, while a busy key costs one
query per second per replica instead of one per request. Concurrent misses for one key
share a single query.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.edge.scopes import bounded_by_role
from services.kit import db, quota

_LOOKUP = text("SELECT * FROM app.auth_lookup_api_key(:key_id)")
# Bounds memory under a flood of made-up key ids; past it the cache starts over.
_MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class PlanLimits:
    """The parts of a tenant's plan limits the edge enforces."""

    requests_per_minute: int = 0
    quota: quota.Limits = field(default_factory=quota.Limits)
    max_connections: int = 0  # open chat connections; 0: no plan limit

    @classmethod
    def from_json(cls, raw: Any) -> PlanLimits:
        """Read ``app.plans.limits`` (the PlanLimits message in JSON form, int64 as strings)."""
        limits = json.loads(raw) if isinstance(raw, str | bytes) else dict(raw or {})
        return cls(
            requests_per_minute=int(limits.get("requestsPerMinute", 0) or 0),
            quota=quota.Limits(
                tokens_per_month=int(limits.get("tokensPerMonth", 0) or 0),
                cost_per_month_usd=float(limits.get("costPerMonthUsd", 0) or 0),
            ),
            max_connections=int(limits.get("maxConnections", 0) or 0),
        )


@dataclass(frozen=True)
class KeyRecord:
    """One API key with its tenant's state and plan limits."""

    key_id: str
    tenant_id: str
    secret_hash: bytes
    scopes: tuple[str, ...]
    role: str
    requests_per_minute: int
    expires_at: datetime | None
    revoked_at: datetime | None
    tenant_active: bool
    limits: PlanLimits

    @classmethod
    def from_row(cls, row: Any) -> KeyRecord:
        """Build from a row of ``app.auth_lookup_api_key``."""
        return cls(
            key_id=row.key_id,
            tenant_id=row.tenant_id,
            secret_hash=bytes(row.secret_hash),
            scopes=bounded_by_role(row.scopes, row.user_role or ""),
            role=row.user_role or "",
            requests_per_minute=int(row.requests_per_minute or 0),
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            tenant_active=row.tenant_state == "ACTIVE",
            limits=PlanLimits.from_json(row.plan_limits),
        )

    @property
    def subject(self) -> str:
        """The key's resource name, which acts as the subject of its calls."""
        return f"tenants/{self.tenant_id}/apiKeys/{self.key_id}"


class KeyDirectory:
    """Cached API key lookups; see the module docstring for the staleness bound."""

    def __init__(self, engine: AsyncEngine, *, ttl_s: float) -> None:
        """Look keys up in ``engine``'s database and keep each answer ``ttl_s`` seconds."""
        self._engine = engine
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._pending: dict[str, asyncio.Future[KeyRecord | None]] = {}

    async def get(self, key_id: str) -> KeyRecord | None:
        """The key's record, or None when no such key exists."""
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        pending = self._pending.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyRecord | None] = asyncio.get_running_loop().create_future()
        self._pending[key_id] = future
        try:
            record = await self._fetch(key_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            # Waiters re-raise it; retrieve it here so an unawaited future logs nothing.
            future.exception()
            raise
        finally:
            del self._pending[key_id]
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()
        # Stamped with the time the query started: the bound holds from the read, not after.
        self._cache[key_id] = (now, record)
        future.set_result(record)
        return record

    async def _fetch(self, key_id: str) -> KeyRecord | None:
        async with db.global_transaction(self._engine) as connection:
            row = (await connection.execute(_LOOKUP, {"key_id": key_id})).first()
        return None if row is None else KeyRecord.from_row(row)
