"""RouterService servicer: proto in, :class:`services.router.engine.Router`, proto out."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from services.kit import errors, tenancy
from services.router import policy
from services.router.engine import Report, Router, tier_name
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc


def judge_score(request: pb.FeedbackRequest) -> float | None:
    """The judge's score of a Feedback, or None when no judge ran.

    ``judge_score`` has no presence of its own (it predates ``judged``): a score above 0
    means a judge ran, and ``judged`` lets a client report a score of exactly 0.
    """
    if request.judged or request.judge_score != 0.0:
        return request.judge_score
    return None


class RouterServicer(pb_grpc.RouterServiceServicer):
    """Thin adapter between the RouterService contract and the router engine."""

    def __init__(self, router: Router) -> None:
        """Serve decisions and feedback through ``router``."""
        self._router = router

    async def Decide(  # noqa: N802 - gRPC method name
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DecideResponse:
        """Pick the tier for one request."""
        tenant = tenancy.check_claimed_tenant(request.tenant_id)
        query = request.query.strip()
        if not query:
            raise errors.InvalidArgument("query must not be empty", field="query")
        if len(request.query) > policy.MAX_QUERY_CHARS:
            raise errors.InvalidArgument(
                f"query is longer than {policy.MAX_QUERY_CHARS} characters", field="query"
            )
        ctx = json_format.MessageToDict(request.context) if request.HasField("context") else {}
        decision = await self._router.decide(tenant, query, ctx, request.tier_preference)
        span = trace.get_current_span()
        span.set_attribute("tenant_id", tenant)
        span.set_attribute("tier", tier_name(decision.tier))
        return pb.DecideResponse(
            tier=decision.tier,  # type: ignore[arg-type]
            confidence=decision.confidence,
            reasoning=decision.reasoning,
            cost_estimate=decision.cost_estimate,
            latency_estimate=decision.latency_estimate,
            escalation_path=decision.escalation_path,  # type: ignore[arg-type]
            decision_id=decision.decision_id,
            policy_version=decision.policy_version,
        )

    async def Feedback(  # noqa: N802 - gRPC method name
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeedbackResponse:
        """Learn from how a decision turned out; a repeated request_id changes nothing."""
        tenant = tenancy.check_claimed_tenant(request.tenant_id)
        if not request.request_id:
            raise errors.InvalidArgument("request_id is required", field="request_id")
        if not request.decision_id:
            raise errors.InvalidArgument("decision_id is required", field="decision_id")
        report = Report(
            idempotency_key=f"feedback:{tenant}:{request.request_id}",
            decision_id=request.decision_id,
            tenant=tenant,
            final_tier=request.tier,
            success=request.success,
            validators_passed=request.validators_passed,
            actual_cost=request.actual_cost,
            actual_latency_ms=request.actual_latency_ms,
            judge_score=judge_score(request),
        )
        span = trace.get_current_span()
        span.set_attribute("tenant_id", tenant)
        if request.tier:
            span.set_attribute("tier", tier_name(request.tier))
        return pb.FeedbackResponse(applied=await self._router.learn(report))
