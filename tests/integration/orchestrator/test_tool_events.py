"""``tool.call.*`` events in the outbox: written ahead of a side effect, with a read's outcome.

A call with an effect outside (a charge, an email) has its ``requested`` event committed
before the call goes out. A read-only call has nothing to write ahead of: its ``requested``
event reaches the live stream at once and is stored with the outcome, in one transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace
from typing import Any, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orchestrator.adapters import RegistryTools
from services.orchestrator.stream import RunHub, Subscription
from services.orchestrator.workflow import CallContext, ToolEvent
from supportmesh.spec.v1 import message_pb2


def event_id(event: ToolEvent) -> str:
    """The outbox id RegistryTools gives ``event``."""
    raw = f"{event.idempotency_key}|{event.phase}|{event.attempt}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


async def stored(admin: asyncpg.Connection, *events: ToolEvent) -> list[tuple[int, str]]:
    """(seq, writing transaction) of each of ``events`` found in the outbox, in seq order."""
    rows = await admin.fetch(
        "SELECT seq, xmin::text AS tx FROM app.event_outbox WHERE event_id = ANY($1) ORDER BY seq",
        [event_id(event) for event in events],
    )
    return [(int(row["seq"]), str(row["tx"])) for row in rows]


def setup(engine: AsyncEngine, run: str) -> tuple[RegistryTools, RunHub, CallContext, list[int]]:
    hub = RunHub()
    hub.open(run)
    wakes: list[int] = []
    tools = RegistryTools(cast(Any, None), engine, lambda: wakes.append(1), hub)
    call = CallContext("t-events", run, "u1", "tracking", "lookup", time.monotonic() + 5)
    return tools, hub, call, wakes


async def phase_of_next(reader: Subscription) -> int:
    """The phase of the next tool event the run's live stream carries."""
    item = await asyncio.wait_for(anext(reader), timeout=2.0)
    assert isinstance(item, message_pb2.ToolEvent)
    return item.phase


async def test_a_read_is_announced_at_once_and_stored_with_its_outcome(
    engine: AsyncEngine, admin_db: asyncpg.Connection
) -> None:
    run = "11111111-1111-4111-8111-111111111111"
    tools, hub, call, wakes = setup(engine, run)
    reader = hub.subscribe(run)
    assert reader is not None
    asked = ToolEvent(
        "requested", "orders.get", "lookup", f"{run}:orders.get:lookup", 1,
        {"order_id": "o-1"}, write_ahead=False,
    )  # fmt: skip
    done = replace(asked, phase="succeeded", output={"status": "SHIPPED"})

    await tools.record(call, asked)
    assert await phase_of_next(reader) == message_pb2.TOOL_EVENT_PHASE_REQUESTED
    assert await stored(admin_db, asked, done) == []
    assert wakes == []

    await tools.record(call, done)
    rows = await stored(admin_db, asked, done)
    assert len(rows) == 2
    assert rows[0][1] == rows[1][1], "requested and succeeded share one transaction"
    by_seq = await admin_db.fetch(
        "SELECT event_id FROM app.event_outbox WHERE seq = ANY($1) ORDER BY seq",
        [seq for seq, _ in rows],
    )
    assert [row["event_id"] for row in by_seq] == [event_id(asked), event_id(done)]
    assert await phase_of_next(reader) == message_pb2.TOOL_EVENT_PHASE_SUCCEEDED
    assert wakes == [1]


async def test_a_failed_read_stores_both_events(
    engine: AsyncEngine, admin_db: asyncpg.Connection
) -> None:
    run = "22222222-2222-4222-8222-222222222222"
    tools, _, call, _ = setup(engine, run)
    asked = ToolEvent(
        "requested", "orders.get", "lookup", f"{run}:orders.get:lookup", 2, {}, write_ahead=False
    )
    failed = replace(asked, phase="failed", error="timed out")

    await tools.record(call, asked)
    await tools.record(call, failed)
    rows = await stored(admin_db, asked, failed)
    assert len(rows) == 2
    assert rows[0][1] == rows[1][1]


async def test_a_side_effect_is_written_ahead(
    engine: AsyncEngine, admin_db: asyncpg.Connection
) -> None:
    run = "33333333-3333-4333-8333-333333333333"
    tools, _, call, wakes = setup(engine, run)
    asked = ToolEvent("requested", "payment.charge", "pay", f"{run}:payment.charge:pay", 1, {})
    done = replace(asked, phase="succeeded", output={"charge_id": "ch_1"})

    await tools.record(call, asked)
    assert len(await stored(admin_db, asked)) == 1, "committed before the call goes out"
    assert wakes == [1]
    await tools.record(call, done)
    rows = await stored(admin_db, asked, done)
    assert len(rows) == 2
    assert rows[0][1] != rows[1][1]
