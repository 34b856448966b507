"""A run's usage against its tenant's monthly quotas, counted exactly once.

A run's final status and its ``usage.metered`` events commit in one PostgreSQL transaction
(:func:`services.orchestrator.record.finished`); the quota counters live in Valkey, which
that transaction cannot include. So counting is idempotent, keyed by run id
(:func:`services.kit.quota.record_once`), and happens twice over: right after the commit
(:func:`count`), and in a :class:`Sweeper` that re-reads the committed ``usage.metered``
rows of the outbox and counts whatever a crash or a Valkey outage between the two left
uncounted. Whichever comes first counts; the other finds the run's marker and adds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, events, quota
from supportmesh.events.v1 import events_pb2

_log = logging.getLogger("supportmesh.orchestrator.metering")

METERS = ("tokens", "cost_usd")  # the usage.metered events record.finished writes per run

_RECENT = text(
    "SELECT seq, event_id, payload FROM app.event_outbox "
    "WHERE seq > :after AND subject = :subject "
    "AND created_at > now() - make_interval(secs => :horizon) ORDER BY seq LIMIT :limit"
)
_BY_ID = text(
    "SELECT event_id, payload, created_at FROM app.event_outbox WHERE event_id = ANY(:ids)"
)


def event_id(run_id: str, meter: str) -> str:
    """The outbox event id of a run's usage.metered event for ``meter``."""
    return f"{run_id}:usage:{meter}"


async def count(
    redis: Redis,
    tenant_id: str,
    run_id: str,
    tokens: int,
    cost_usd: float,
    *,
    now: datetime | None = None,
) -> bool:
    """Add a finished run's usage to its tenant's counters unless it was; whether it added."""
    if not tokens and not cost_usd:
        return False
    added, _ = await quota.record_once(redis, tenant_id, run_id, tokens, cost_usd, now=now)
    return added


@dataclass(frozen=True)
class RunUsage:
    """What one finished run used, as its committed usage.metered events say."""

    tenant_id: str
    run_id: str
    tokens: int
    cost_usd: float
    metered_at: datetime


def usage_of(rows: Sequence[tuple[str, bytes, datetime]]) -> list[RunUsage]:
    """Runs' usage from their usage.metered outbox rows (event id, payload, created at)."""
    found: dict[str, dict[str, Any]] = {}
    for row_id, payload, created_at in rows:
        event = events_pb2.UsageMeteredEvent.FromString(bytes(payload))
        if event.meter not in METERS or row_id != event_id(event.source_id, event.meter):
            continue  # usage reported by something other than a run's commit
        run = found.setdefault(
            event.source_id, {"tenant_id": event.tenant_id, "metered_at": created_at}
        )
        run[event.meter] = event.quantity
    return [
        RunUsage(
            tenant_id=run["tenant_id"],
            run_id=run_id,
            tokens=round(run.get("tokens", 0)),
            cost_usd=run.get("cost_usd", 0.0),
            metered_at=run["metered_at"],
        )
        for run_id, run in found.items()
    ]


async def uncounted(redis: Redis, runs: Sequence[RunUsage]) -> list[RunUsage]:
    """Those of ``runs`` whose usage has no counted marker yet, asked in one round trip.

    Nearly every run a sweep re-reads was counted by its commit; only the rest go on to
    :func:`count`, which decides atomically (a run counted in between adds nothing there).
    """
    if not runs:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for run in runs:
            pipe.exists(quota.marker_key(run.tenant_id, run.run_id))
        marked = await pipe.execute()
    return [run for run, found in zip(runs, marked, strict=True) if not found]


@dataclass
class Sweeper:
    """Counts the usage of committed runs that went uncounted, once each.

    The first sweep of a process reaches back ``horizon_s`` (a restart recovers what the
    crash left); later ones read the rows after those an earlier sweep read. A row's
    sequence number is drawn before its transaction commits, so a lower one may become
    visible after a higher one: each sweep therefore reads again what the sweeps of the last
    ``settle_s`` read. ``horizon_s`` stays below the markers' lifetime
    (:data:`services.kit.quota.MARKER_TTL_S`), so nothing re-read is counted twice.
    """

    engine: AsyncEngine
    redis: Redis
    horizon_s: float = 86_400.0
    settle_s: float = 60.0
    batch: int = 500
    _floor: int = 0  # every row up to here was read by a sweep at least settle_s ago
    _sweeps: deque[tuple[float, int]] = field(default_factory=deque)  # (began, highest seq)

    def __post_init__(self) -> None:
        """Refuse a horizon the markers do not outlive."""
        if self.horizon_s >= quota.MARKER_TTL_S:
            raise ValueError(f"horizon_s must be below the marker TTL ({quota.MARKER_TTL_S} s)")

    async def sweep(self) -> int:
        """Count what committed runs left uncounted; how many runs it counted now."""
        began, after, counted = time.monotonic(), self._floor, 0
        while True:
            params = {"after": after, "subject": events.USAGE_METERED, "horizon": self.horizon_s}
            async with db.global_transaction(self.engine) as connection:
                found = await connection.execute(_RECENT, {**params, "limit": self.batch})
                rows = found.all()
                # A run's meters may straddle two batches: read all of each run's at once.
                runs = {
                    events_pb2.UsageMeteredEvent.FromString(bytes(payload)).source_id
                    for _, _, payload in rows
                }
                ids = [event_id(run, meter) for run in runs for meter in METERS]
                complete = (await connection.execute(_BY_ID, {"ids": ids})).all() if ids else []
            found_runs = usage_of([(str(i), bytes(p), at) for i, p, at in complete])
            for run in await uncounted(self.redis, found_runs):
                usage = (run.tenant_id, run.run_id, run.tokens, run.cost_usd)
                if await count(self.redis, *usage, now=run.metered_at):
                    counted += 1
                    _log.info("uncounted usage counted", extra={"run_id": run.run_id})
            if rows:
                after = max(after, int(rows[-1][0]))
            if len(rows) < self.batch:
                break
        self._sweeps.append((began, after))
        settled = time.monotonic() - self.settle_s
        while self._sweeps and self._sweeps[0][0] <= settled:
            self._floor = max(self._floor, self._sweeps.popleft()[1])
        return counted

    async def run(self, every_s: float) -> None:
        """Sweep every ``every_s`` seconds until cancelled."""
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - database or Valkey trouble: the next sweep retries
                _log.warning("usage sweep failed", exc_info=True)
            await asyncio.sleep(every_s)
