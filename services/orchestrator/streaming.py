"""StreamRun: one customer message answered as a stream of events while its run executes.

The stream carries, in order: ``token_delta`` events as a model writes a free-text answer,
``tool_event`` events as tools are called (REQUESTED before, SUCCEEDED or FAILED after,
COMPENSATED when a compensation ran), then exactly one terminal event: ``final_message``
with the run's answer, the text SendChatMessage returns (a holding message when the run
waits for a human), or ``error`` when the run produced no answer at all. The terminal event
follows the commit of the run's outcome; the count of its usage against the tenant's quotas
(:mod:`services.orchestrator.metering`) goes on after it.

Token deltas are provisional: when a gate rejects an answer and the run repairs it
(another tier, a retry) or falls back, the deltas of the rejected attempt have already been
sent. The ``final_message`` text is authoritative; clients replace what they assembled
from deltas with it.

``sequence`` numbers this stream's events from 1 without gaps; ``session_id`` is the
request's. A retry with the same ``request_id`` never starts a second run: it attaches to
the run when this process drives it (replaying the buffered events first), waits for it
when another instance does, and otherwise replays the terminal event of the run it
started. Cancelling the stream does not cancel the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from services.kit import errors
from services.orchestrator import convert
from services.orchestrator.runs import Runs
from services.orchestrator.workflow import RunView
from supportmesh.spec.v1 import message_pb2


async def stream_run(
    runs: Runs,
    tenant_id: str,
    workflow: str,
    input: Mapping[str, Any],
    *,
    request_id: str,
    session_id: str,
    user_id: str,
) -> AsyncIterator[message_pb2.StreamEvent]:
    """The events of the run ``request_id`` starts (or started), ending with its outcome."""
    run_id, task = await runs.start(
        tenant_id, workflow, "", input,
        request_id=request_id, session_id=session_id, user_id=user_id,
    )  # fmt: skip
    sequence = 0

    def event(**body: Any) -> message_pb2.StreamEvent:
        nonlocal sequence
        sequence += 1
        return message_pb2.StreamEvent(sequence=sequence, session_id=session_id, **body)

    reader = runs.hub.subscribe(run_id)
    if reader is not None:
        try:
            async for item in reader:
                if isinstance(item, message_pb2.TokenDelta):
                    yield event(token_delta=item)
                else:
                    yield event(tool_event=item)
        finally:
            reader.close()
    view: RunView | None = None
    if task is not None:
        # Driven here: its view, without reading back what it has just written. A run that
        # stopped unrecorded is recovered, and then read like one driven elsewhere.
        with contextlib.suppress(Exception):
            view = await runs.answered(tenant_id, run_id, task)
    if view is not None:
        status = view.status
    else:
        row, view = await runs.outcome(tenant_id, run_id)
        status = row.status
    yield event(**terminal(run_id, status, view))


def terminal(run_id: str, status: str, view: RunView | None) -> dict[str, Any]:
    """The stream's last event body: the final message, or the error of a run without one."""
    text = convert.answer_text(view)
    if view is None or not text:
        reason = errors.reason_value(view.reason) if view is not None and view.reason else None
        problem = f"run {run_id} ended {status} without an answer"
        failure = errors.Internal(problem, reason=reason)
        return {"error": failure.to_spec()}
    message = message_pb2.ChatMessage(id=run_id, role=message_pb2.ROLE_ASSISTANT, content=text)
    final = message_pb2.FinalMessage(
        message=message, run_id=run_id, citations=convert.citations(view)
    )
    return {"final_message": final}
