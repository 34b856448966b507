"""Runs as protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, json_format, struct_pb2, timestamp_pb2

from services.orchestrator.record import STATUS, tier
from services.orchestrator.store import RunRow
from services.orchestrator.workflow import RunView
from supportmesh.common.v1 import errors_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.spec.v1 import message_pb2

_STEP_STATUS = {
    "SUCCEEDED": pb.STEP_STATUS_SUCCEEDED, "FAILED": pb.STEP_STATUS_FAILED,
    "SKIPPED": pb.STEP_STATUS_SKIPPED, "WAITING_FOR_HUMAN": pb.STEP_STATUS_WAITING_FOR_HUMAN,
    "COMPENSATED": pb.STEP_STATUS_COMPENSATED,
}  # fmt: skip


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    """A JSON object as a Struct (values that are not JSON become strings)."""
    found = struct_pb2.Struct()
    if value:
        json_format.ParseDict(_jsonable(dict(value)), found)
    return found


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _ms(value: int) -> duration_pb2.Duration:
    found = duration_pb2.Duration()
    found.FromMilliseconds(int(value))
    return found


def _stamp(value: Any) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    found = timestamp_pb2.Timestamp()
    found.FromDatetime(value)
    return found


def citations(view: RunView | None) -> list[message_pb2.Citation]:
    """The answer's citations."""
    if view is None:
        return []
    return [
        message_pb2.Citation(
            document_id=str(c.get("document_id", "")), title=str(c.get("title", "")),
            chunk_id=str(c.get("chunk_id", "")), uri=str(c.get("uri", "")),
        )
        for c in view.citations
    ]  # fmt: skip


def run(row: RunRow, view: RunView | None, tenant_id: str, *, steps: bool = True) -> pb.Run:
    """The Run message of a row and (when checkpointed) its view."""
    metrics = row.metrics
    message = pb.Run(
        name=f"tenants/{tenant_id}/runs/{row.run_id}", workflow=row.workflow,
        workflow_version=row.version, status=STATUS.get(row.status, pb.RUN_STATUS_UNSPECIFIED),
        input=struct(row.input), output=struct(row.output.get("output") or {}),
        tier=tier(str(metrics.get("tier", ""))), tokens=int(metrics.get("tokens", 0)),
        cost_usd=float(metrics.get("cost_usd", 0.0)),
        latency=_ms(int(metrics.get("latency_ms", 0))), session_id=row.session_id,
        user_id=row.user_id, request_id=row.request_id,
    )  # fmt: skip
    for field, value in (
        ("create_time", row.created_at), ("start_time", row.started_at),
        ("update_time", row.updated_at), ("end_time", row.completed_at),
    ):  # fmt: skip
        stamp = _stamp(value)
        if stamp is not None:
            getattr(message, field).CopyFrom(stamp)
    reason = str(metrics.get("reason", ""))
    if reason and row.status != "SUCCEEDED":
        name = f"ERROR_REASON_{reason}"
        known = name in errors_pb2.ErrorReason.keys()  # noqa: SIM118
        message.error.CopyFrom(
            errors_pb2.ErrorSpec(
                reason=errors_pb2.ErrorReason.Value(name)
                if known
                else errors_pb2.ERROR_REASON_UNSPECIFIED,
                message=str(row.output.get("message", "")),
            )
        )
    if view is not None and steps:
        for step in view.steps:
            message.steps.append(
                pb.Step(
                    step_id=step["step_id"], type=step["type"], tool=step["tool"],
                    status=_STEP_STATUS.get(step["status"], pb.STEP_STATUS_UNSPECIFIED),
                    tier=tier(step["tier"]), tokens=step["tokens"], cost_usd=step["cost_usd"],
                    latency=_ms(step["latency_ms"]), attempts=step["attempts"],
                )
            )  # fmt: skip
    if row.status == "WAITING_FOR_HUMAN" and view is not None and view.human_request:
        waiting = view.human_request
        message.human_input_request.CopyFrom(
            pb.HumanInputRequest(
                step_id=waiting["step_id"],
                prompt=waiting["prompt"],
                input_schema=struct(waiting["input_schema"]),
            )
        )
    return message


HOLDING_MESSAGE = "A member of our support team will follow up with you shortly."


def answer_text(view: RunView | None) -> str:
    """The text a chat caller gets: the answer, else the run's message, else a holding one."""
    if view is None:
        return ""
    text = view.answer or view.message
    if view.status == "WAITING_FOR_HUMAN" and not text:
        text = HOLDING_MESSAGE
    return text


def chat_response(
    run_id: str, session_id: str, view: RunView | None, latency_ms: int
) -> pb.SendChatMessageResponse:
    """The chat answer of a run."""
    response = pb.SendChatMessageResponse(run_id=run_id, session_id=session_id,
                                          latency_ms=latency_ms)  # fmt: skip
    if view is None:
        response.status = pb.RUN_STATUS_RUNNING
        return response
    text = answer_text(view)
    response.answer.CopyFrom(
        message_pb2.ChatMessage(id=run_id, role=message_pb2.ROLE_ASSISTANT, content=text)
    )
    response.citations.extend(citations(view))
    response.tier = tier(view.tier)
    response.status = STATUS.get(view.status, pb.RUN_STATUS_UNSPECIFIED)
    response.tokens = view.tokens
    response.cost_usd = view.cost_usd
    return response
