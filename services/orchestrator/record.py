"""A run's bookkeeping: its row, execution record and events, written in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from services.kit import events
from services.orchestrator import outbox, store
from services.orchestrator.workflow import RunView
from supportmesh.common.v1 import errors_pb2
from supportmesh.events.v1 import events_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.spec.v1 import tier_pb2

STATUS = {
    "QUEUED": pb.RUN_STATUS_QUEUED,
    "RUNNING": pb.RUN_STATUS_RUNNING,
    "WAITING_FOR_HUMAN": pb.RUN_STATUS_WAITING_FOR_HUMAN,
    "SUCCEEDED": pb.RUN_STATUS_SUCCEEDED,
    "FAILED": pb.RUN_STATUS_FAILED,
    "COMPENSATING": pb.RUN_STATUS_COMPENSATING,
    "COMPENSATED": pb.RUN_STATUS_COMPENSATED,
    "CANCELLED": pb.RUN_STATUS_CANCELLED,
}


def tier(name: str) -> tier_pb2.Tier.ValueType:
    """A tier name as the proto enum (unspecified when no model ran)."""
    return tier_pb2.Tier.Value(name) if name in tier_pb2.Tier.keys() else tier_pb2.TIER_UNSPECIFIED  # noqa: SIM118


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def run_event(
    tenant_id: str, run_id: str, workflow: str, version: str, status: str, **more: Any
) -> events_pb2.RunEvent:
    """A RunEvent for the run's current status."""
    event = events_pb2.RunEvent(
        tenant_id=tenant_id, run_id=run_id, workflow=workflow, workflow_version=version,
        status=STATUS.get(status, pb.RUN_STATUS_UNSPECIFIED), occur_time=_now(), **more,
    )  # fmt: skip
    return event


async def started(
    connection: AsyncConnection, tenant_id: str, run_id: str, workflow: str, version: str
) -> None:
    """Queue agent.run.requested and agent.run.started for a new run."""
    await outbox.add_many(connection, [
        (subject, run_event(tenant_id, run_id, workflow, version, status), f"{run_id}:{subject}")
        for subject, status in (
            (events.AGENT_RUN_REQUESTED, "QUEUED"), (events.AGENT_RUN_STARTED, "RUNNING"),
        )
    ])  # fmt: skip


def metrics(view: RunView, latency_ms: int) -> dict[str, Any]:
    """What the run cost and took, as stored in ``agent_runs.metrics``."""
    return {
        "tier": view.tier, "tokens": view.tokens, "cost_usd": view.cost_usd,
        "latency_ms": latency_ms, "reason": view.reason, "degraded": view.degraded,
    }  # fmt: skip


def output(view: RunView) -> dict[str, Any]:
    """What the run produced, as stored in ``agent_runs.output_data``."""
    found: dict[str, Any] = {
        "answer": view.answer, "message": view.message, "output": dict(view.output),
        "citations": [dict(c) for c in view.citations],
    }  # fmt: skip
    if view.human_request is not None:
        found["human_request"] = dict(view.human_request)
    return found


async def finished(
    connection: AsyncConnection,
    view: RunView,
    latency_ms: int,
    *,
    status: str = "",
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Record the run's status, its execution and its events in ``connection``'s transaction."""
    status = status or view.status
    decision = str(view.state.get("route", {}).get("decision_id", ""))
    await store.finish(
        connection, run_id=view.run_id, tenant_id=view.tenant_id, status=status,
        output={**output(view), **(extra or {})}, metrics=metrics(view, latency_ms),
        decision_id=decision, steps=view.steps, compensations=view.compensations,
    )  # fmt: skip
    event = run_event(
        view.tenant_id, view.run_id, view.workflow, view.version, status,
        tier=tier(view.tier), decision_id=decision, tokens=view.tokens, cost_usd=view.cost_usd,
        latency_ms=latency_ms, validators_passed=status == "SUCCEEDED" and not view.degraded,
    )  # fmt: skip
    if view.reason and status != "SUCCEEDED":
        event.error.CopyFrom(
            errors_pb2.ErrorSpec(
                reason=errors_pb2.ErrorReason.Value(f"ERROR_REASON_{view.reason}")
                if f"ERROR_REASON_{view.reason}" in errors_pb2.ErrorReason.keys()  # noqa: SIM118
                else errors_pb2.ERROR_REASON_UNSPECIFIED,
                message=view.message[:500],
            )
        )
    if status == "WAITING_FOR_HUMAN":
        steps = len(view.steps)
        await outbox.add(connection, events.AGENT_RUN_WAITING, event, f"{view.run_id}:wait:{steps}")
        return
    queued: list[tuple[str, Message, str]] = [
        (events.AGENT_RUN_COMPLETED, event, f"{view.run_id}:completed")
    ]
    for meter, quantity in (("tokens", float(view.tokens)), ("cost_usd", view.cost_usd)):
        usage = events_pb2.UsageMeteredEvent(
            tenant_id=view.tenant_id, meter=meter, quantity=quantity, source_id=view.run_id,
            tier=tier(view.tier), occur_time=_now(),
        )  # fmt: skip
        queued.append((events.USAGE_METERED, usage, f"{view.run_id}:usage:{meter}"))
    await outbox.add_many(connection, queued)


def new_run_id() -> str:
    """A fresh run id."""
    return str(uuid.uuid4())
