"""Cancelling a run: its committed steps are undone by the workflow's own saga path.

A cancelled run is not rolled back by hand. Once the task driving it has stopped at a safe
point, its checkpoint is moved to the saga's Compensate node, as if Repair had decided to
compensate, with the cancellation as its reason, and the graph runs on from there:
Compensate undoes the completed steps most recent first, one checkpointed super-step each,
under the idempotency keys resolved when they ran (so each is undone once, even across a
crash and recovery), and Commit gives the run the workflow's graceful failure answer.
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.orchestrator.workflow import RunView, Workflow, WorkflowEngine, run_config

# The reason recorded on a cancelled run (the proto reports it as an unspecified reason
# next to the CANCELLED or COMPENSATED status, with the caller's text as the message).
CANCELLED = "CANCELLED"
# The saga's node that undoes one completed step per super-step, then moves on to Commit.
_COMPENSATE = "compensate"


async def undo(
    graph: WorkflowEngine, workflow: Workflow, tenant_id: str, run_id: str, reason: str
) -> RunView:
    """Undo the run's completed steps and end it; its view, which Commit settled."""
    if not await graph.started(tenant_id, run_id):
        # No step ran, so nothing is owed: the run simply ends.
        return RunView.of(
            {
                "tenant_id": tenant_id,
                "run_id": run_id,
                "workflow": workflow.name,
                "version": workflow.version,
                "started_at": datetime.now(UTC).isoformat(),
                "status": "RUNNING",
                "reason": CANCELLED,
                "message": reason,
            }
        )
    config = run_config(tenant_id, run_id, workflow)
    await graph.graph.aupdate_state(
        config,
        {
            "status": "COMPENSATING",
            "reason": CANCELLED,
            "message": reason,
            "failure": None,
            "resolution": "compensate",
            "human_request": None,
            "repairs": [
                {"step_id": "", "reason": CANCELLED, "message": reason, "action": "compensate"}
            ],
        },
        as_node=_COMPENSATE,
    )
    await graph.graph.ainvoke(None, config, context=graph.context(workflow), durability="sync")
    view = await graph.get(tenant_id, run_id)
    assert view is not None
    return view
