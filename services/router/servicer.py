"""RouterService servicer: proto in, policy, proto out."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import json_format

from services.kit import errors, tenancy
from services.router import policy
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc


class RouterServicer(pb_grpc.RouterServiceServicer):
    """Thin adapter between the RouterService contract and :mod:`services.router.policy`."""

    async def Decide(  # noqa: N802 - gRPC method name
        self, request: pb.DecideRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DecideResponse:
        """Pick the tier for one request."""
        tenancy.check_claimed_tenant(request.tenant_id)
        query = request.query.strip()
        if not query:
            raise errors.InvalidArgument("query must not be empty", field="query")
        if len(request.query) > policy.MAX_QUERY_CHARS:
            raise errors.InvalidArgument(
                f"query is longer than {policy.MAX_QUERY_CHARS} characters", field="query"
            )
        ctx = json_format.MessageToDict(request.context) if request.HasField("context") else {}
        decision = policy.decide(policy.extract(query, ctx), request.tier_preference)
        return pb.DecideResponse(
            tier=decision.tier,  # type: ignore[arg-type]
            confidence=decision.confidence,
            reasoning=decision.reasoning,
            cost_estimate=decision.cost_estimate,
            latency_estimate=decision.latency_estimate,
            escalation_path=decision.escalation_path,  # type: ignore[arg-type]
            decision_id=uuid.uuid4().hex,
            policy_version=policy.POLICY_VERSION,
        )

    async def Feedback(  # noqa: N802 - gRPC method name
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.FeedbackResponse:
        """Learning from outcomes arrives with the bandit policy; until then say so plainly."""
        raise errors.Unimplemented("router feedback is not served by the rule policy")
