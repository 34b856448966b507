"""The JetStream consumer of run outcomes: ``agent.run.completed`` → the router's learning.

Durable consumer ``router-outcomes`` (declared with the others in services.kit.events).
Each RunEvent that quotes a router decision is applied once, keyed by its run id, so a
redelivered or re-published event changes nothing the second time. Events without a
decision, with an unknown or expired one, with a non-final status or with a judge score
outside [0, 1] are acknowledged and skipped: retrying them cannot make them useful. A judge
score, when the event has one, counts as :func:`services.router.engine.outcome_of` says.
"""

from __future__ import annotations

import logging

from nats.aio.msg import Msg

from services.kit import errors, events
from services.router.engine import Report, Router
from supportmesh.events.v1 import events_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as orchestrator_pb

_log = logging.getLogger("supportmesh.router.outcomes")

SPEC = next(spec for spec in events.CONSUMERS if spec.durable == "router-outcomes")
_SUCCESS = {orchestrator_pb.RUN_STATUS_SUCCEEDED}
_FAILURE = {orchestrator_pb.RUN_STATUS_FAILED, orchestrator_pb.RUN_STATUS_COMPENSATED}


def report_of(event: events_pb2.RunEvent) -> Report | None:
    """The learning report of a run event, or None when it teaches nothing."""
    if not event.decision_id or not event.run_id or event.status not in _SUCCESS | _FAILURE:
        return None
    return Report(
        idempotency_key=f"run:{event.tenant_id}:{event.run_id}",
        decision_id=event.decision_id,
        tenant=event.tenant_id,
        final_tier=event.tier,
        success=event.status in _SUCCESS,
        validators_passed=event.validators_passed,
        actual_cost=event.cost_usd,
        actual_latency_ms=int(event.latency_ms),
        judge_score=event.judge_score if event.HasField("judge_score") else None,
    )


def handler(router: Router) -> events.Handler:
    """The message handler applying run outcomes to ``router``."""

    async def handle(msg: Msg) -> None:
        event = events_pb2.RunEvent.FromString(msg.data)
        report = report_of(event)
        if report is None:
            return
        try:
            applied = await router.learn(report)
        except errors.NotFound:
            _log.info(
                "run outcome for an unknown or expired decision", extra={"run_id": event.run_id}
            )
            return
        except errors.InvalidArgument as error:
            _log.warning(
                "run outcome refused", extra={"run_id": event.run_id, "error": error.message}
            )
            return
        _log.debug("run outcome", extra={"run_id": event.run_id, "applied": applied})

    return handle
