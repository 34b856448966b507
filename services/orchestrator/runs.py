"""Runs of workflows for tenants: start, wait, resume, cancel, recover; leases keep them owned.

A run's row is inserted (RUNNING, leased to this process) with its ``requested``/``started``
events in one transaction; the engine checkpoints every step in PostgreSQL while a heartbeat
renews the lease; the final status, execution record and ``completed``/``usage.metered``
events commit together. A lapsed lease (the orchestrator died) lets the recovery loop of
any orchestrator take the run over and continue it from its last checkpoint: its tool
calls replay under the same idempotency keys, so nothing is charged or mailed twice, and a
failed saga's compensations are still owed and still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db, errors, quota
from services.orchestrator import record, store
from services.orchestrator.workflow import CallContext, RunView, Workflow, WorkflowEngine
from services.orchestrator.workflow.state import pending_compensations
from supportmesh.common.v1 import errors_pb2

_log = logging.getLogger("supportmesh.orchestrator.runs")


def workflow_unknown(name: str, version: str = "") -> errors.FailedPrecondition:
    """The error for a workflow (or version) that is not deployed."""
    what = f"{name} {version}".strip()
    return errors.FailedPrecondition(
        f"workflow {what} is not deployed",
        reason=errors_pb2.ERROR_REASON_WORKFLOW_INVALID,
        metadata={"workflow": name, "version": version},
    )


@dataclass
class Runs:
    """Everything a run goes through, for the servicer, the consumer and the recovery loop."""

    engine: AsyncEngine
    workflows: Mapping[str, Mapping[str, Workflow]]  # name → version → workflow
    graph: WorkflowEngine
    wake: Callable[[], None]
    redis: Redis | None = None
    owner: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    lease_s: float = 10.0
    active: dict[str, asyncio.Task[RunView]] = field(default_factory=dict)
    tenant_of: dict[str, str] = field(default_factory=dict)
    recovering: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def latest(self, name: str) -> Workflow:
        """The newest deployed version of ``name``."""
        versions = self.workflows.get(name)
        if not versions:
            raise workflow_unknown(name)
        return versions[max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))]

    def resolve(self, name: str, version: str) -> Workflow:
        """``name`` at ``version`` ('' = latest); FAILED_PRECONDITION WORKFLOW_INVALID if absent."""
        if not version:
            return self.latest(name)
        found = self.workflows.get(name, {}).get(version)
        if found is None:
            raise workflow_unknown(name, version)
        return found

    async def begin(
        self,
        tenant_id: str,
        workflow_name: str,
        version: str,
        input: Mapping[str, Any],
        *,
        request_id: str,
        session_id: str,
        user_id: str,
    ) -> tuple[store.RunRow | None, str, Workflow, datetime]:
        """Insert the run (or find the one ``request_id`` started): (existing, id, workflow, t0)."""
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            if request_id:
                existing = await store.by_request(connection, request_id)
                if existing is not None:
                    workflow = self.resolve(existing.workflow, existing.version)
                    began = existing.started_at or existing.created_at
                    return existing, existing.run_id, workflow, began
            pinned = version or await store.override(connection, workflow_name)
            workflow = self.resolve(workflow_name, pinned)
            run_id, began = record.new_run_id(), datetime.now(UTC)
            await store.insert(
                connection, run_id=run_id, tenant_id=tenant_id, workflow=workflow.name,
                version=workflow.version, input=input, request_id=request_id,
                session_id=session_id, user_id=user_id, owner=self.owner, lease_s=self.lease_s,
                started_at=began,
            )  # fmt: skip
            await record.started(connection, tenant_id, run_id, workflow.name, workflow.version)
        self.wake()
        return None, run_id, workflow, began

    def spawn(
        self, tenant_id: str, run_id: str, work: Callable[[], Awaitable[RunView]]
    ) -> asyncio.Task[RunView]:
        """Run ``work`` once per run id in this process, renewing the run's lease meanwhile."""
        task = self.active.get(run_id)
        if task is None:
            self.tenant_of[run_id] = tenant_id
            task = asyncio.create_task(self._leased(run_id, work))
            self.active[run_id] = task
            task.add_done_callback(lambda _: self._done(run_id))
        return task

    def _done(self, run_id: str) -> None:
        self.active.pop(run_id, None)
        self.tenant_of.pop(run_id, None)

    async def _leased(self, run_id: str, work: Callable[[], Awaitable[RunView]]) -> RunView:
        heartbeat = asyncio.create_task(self._heartbeat(run_id))
        try:
            return await work()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, run_id: str) -> None:
        tenant = self.tenant_of.get(run_id, "")
        while tenant:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await store.lease(self.engine, tenant, run_id, self.owner, self.lease_s)
            except Exception:  # noqa: BLE001 - a missed beat only risks a takeover, not a loss
                _log.warning("lease renewal failed", exc_info=True)

    async def execute(
        self,
        workflow: Workflow,
        tenant_id: str,
        run_id: str,
        input: Mapping[str, Any],
        *,
        user_id: str,
        began: datetime,
        resume: tuple[str, Mapping[str, Any]] | None = None,
    ) -> RunView:
        """Drive the run to its end or a human pause, then record it."""
        clock = time.perf_counter()
        existing = await self.graph.get(tenant_id, run_id)
        if resume is not None:
            view = await self.graph.resume(
                workflow, tenant_id=tenant_id, run_id=run_id, step_id=resume[0], value=resume[1]
            )
        elif existing is None or not await self.graph.started(tenant_id, run_id):
            view = await self.graph.start(
                workflow, tenant_id=tenant_id, run_id=run_id, input=input, user_id=user_id,
                started_at=began,
            )  # fmt: skip
        else:
            view = await self.graph.recover(workflow, tenant_id=tenant_id, run_id=run_id)
        latency_ms = int((time.perf_counter() - clock) * 1000)
        await self.commit(view, latency_ms)
        return view

    async def commit(self, view: RunView, latency_ms: int, status: str = "") -> None:
        """Write the run's outcome and events, then meter its usage against the plan."""
        async with db.tenant_transaction(self.engine, view.tenant_id) as connection:
            await record.finished(connection, view, latency_ms, status=status)
        self.wake()
        final = (status or view.status) in store.FINAL
        if final and self.redis is not None and (view.tokens or view.cost_usd):
            try:
                await quota.record_usage(self.redis, view.tenant_id, view.tokens, view.cost_usd)
            except Exception:  # noqa: BLE001 - the usage.metered event still carries it
                _log.warning("usage not recorded in Valkey", exc_info=True)

    async def run(
        self,
        tenant_id: str,
        workflow_name: str,
        version: str,
        input: Mapping[str, Any],
        *,
        request_id: str = "",
        session_id: str = "",
        user_id: str = "",
        wait: bool = True,
    ) -> tuple[str, RunView | None]:
        """Start (or find) a run; with ``wait``, its view once it ends or pauses."""
        existing, run_id, workflow, began = await self.begin(
            tenant_id, workflow_name, version, input,
            request_id=request_id, session_id=session_id, user_id=user_id,
        )  # fmt: skip
        if existing is not None and (existing.final or existing.status == "WAITING_FOR_HUMAN"):
            return run_id, await self.graph.get(tenant_id, run_id)
        if existing is not None:
            task = self.active.get(run_id)
            if task is None:
                return run_id, await self.graph.get(tenant_id, run_id)
        else:
            given = dict(input)
            task = self.spawn(
                tenant_id,
                run_id,
                lambda: self.execute(
                    workflow, tenant_id, run_id, given, user_id=user_id, began=began
                ),
            )
        if not wait:
            return run_id, None
        return run_id, await asyncio.shield(task)

    async def resume(
        self, tenant_id: str, run_id: str, step_id: str, value: Mapping[str, Any]
    ) -> RunView:
        """Give a waiting run the human's input and drive it on."""
        row = await self._row(tenant_id, run_id)
        if row.status != "WAITING_FOR_HUMAN":
            raise errors.FailedPrecondition(f"run {run_id} is {row.status}, not waiting")
        workflow = self.resolve(row.workflow, row.version)
        if not await store.lease(self.engine, tenant_id, run_id, self.owner, self.lease_s, True):
            raise errors.Aborted(f"run {run_id} is being resumed elsewhere")
        began = row.started_at or row.created_at
        task = self.spawn(
            tenant_id,
            run_id,
            lambda: self.execute(
                workflow, tenant_id, run_id, row.input, user_id=row.user_id, began=began,
                resume=(step_id, value),
            ),
        )  # fmt: skip
        return await asyncio.shield(task)

    async def cancel(self, tenant_id: str, run_id: str, reason: str) -> None:
        """Stop a paused run, undoing its committed steps in reverse (each under its own key)."""
        row = await self._row(tenant_id, run_id)
        if row.final:
            raise errors.FailedPrecondition(f"run {run_id} already ended {row.status}")
        if run_id in self.active or row.status != "WAITING_FOR_HUMAN":
            raise errors.FailedPrecondition(f"run {run_id} is executing; cancel it once it pauses")
        view = await self.graph.get(tenant_id, run_id)
        if view is None:
            raise errors.NotFound(f"run {run_id} not found")
        owed = pending_compensations(view.state)
        for entry in owed:
            plan = entry["compensation"]
            assert plan is not None
            call = CallContext(
                tenant_id, run_id, row.user_id, row.workflow, f"cancel:{entry['step_id']}",
                time.monotonic() + 10.0,
            )  # fmt: skip
            await self.graph.ports.tools.call(
                call, plan["tool"], plan["input"], plan["idempotency_key"]
            )
        _log.info("run cancelled", extra={"run_id": run_id, "reason": reason})
        await self.commit(view, 0, status="COMPENSATED" if owed else "CANCELLED")

    async def _row(self, tenant_id: str, run_id: str) -> store.RunRow:
        try:
            uuid.UUID(run_id)
        except ValueError:
            raise errors.NotFound(f"run {run_id} not found") from None
        row = await store.get(self.engine, tenant_id, run_id)
        if row is None:
            raise errors.NotFound(f"run {run_id} not found")
        return row

    async def get(self, tenant_id: str, run_id: str) -> tuple[store.RunRow, RunView | None]:
        """The run's row and checkpointed view."""
        row = await self._row(tenant_id, run_id)
        return row, await self.graph.get(tenant_id, run_id)

    async def recover(self, tenant_id: str, run_id: str) -> RunView | None:
        """Take over a run whose lease lapsed and drive it to its end."""
        if run_id in self.active:
            return None
        if not await store.lease(self.engine, tenant_id, run_id, self.owner, self.lease_s):
            return None
        row = await self._row(tenant_id, run_id)
        workflow = self.resolve(row.workflow, row.version)
        began = row.started_at or row.created_at
        _log.info("recovering run", extra={"run_id": run_id, "tenant": tenant_id})
        task = self.spawn(
            tenant_id,
            run_id,
            lambda: self.execute(
                workflow, tenant_id, run_id, row.input, user_id=row.user_id, began=began
            ),
        )
        return await asyncio.shield(task)

    async def recover_loop(self, every_s: float) -> None:
        """Look for lapsed leases and recover those runs, until cancelled."""
        while True:
            try:
                for tenant_id, run_id in await store.expired(self.engine):
                    if run_id not in self.active and run_id not in self.recovering:
                        task = asyncio.create_task(self._recover_quietly(tenant_id, run_id))
                        self.recovering[run_id] = task
                        task.add_done_callback(self._recovered)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - database trouble: look again later
                _log.warning("recovery scan failed", exc_info=True)
            await asyncio.sleep(every_s)

    def _recovered(self, task: asyncio.Task[None]) -> None:
        for run_id, known in list(self.recovering.items()):
            if known is task:
                del self.recovering[run_id]

    async def _recover_quietly(self, tenant_id: str, run_id: str) -> None:
        try:
            await self.recover(tenant_id, run_id)
        except Exception:  # noqa: BLE001 - the lease lapses again and another try follows
            _log.warning("run recovery failed", exc_info=True, extra={"run_id": run_id})
