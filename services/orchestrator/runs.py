"""Runs of workflows for tenants: start, wait, resume, cancel, recover; leases keep them owned.

A run's row is inserted (RUNNING, leased to this process) with its ``requested``/``started``
events in one transaction. While a heartbeat renews the lease, the engine stores the run's
checkpoint in PostgreSQL before and after each side effect and when it ends (see
``services.orchestrator.workflow.engine``). The final status, execution record and
``completed``/``usage.metered`` events commit together, and the usage is then counted
against the tenant's quotas exactly once (:mod:`services.orchestrator.metering`). A lapsed
lease (the orchestrator died) lets the recovery loop of any orchestrator take the run over
and continue it from its last checkpoint: its tool calls replay under the same idempotency
keys, so nothing is charged or mailed twice, and a failed saga's compensations are still
owed and still run.

Every run driven here publishes its live events to :attr:`Runs.hub` (read by StreamRun). A
run cancelled while it executes here is halted at its next safe point (before its next port
call, so a call under way finishes and is checkpointed) and then undone through the saga
path (:mod:`services.orchestrator.cancel`), holding its lease all along.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import context, db, errors
from services.orchestrator import cancel, metering, record, store
from services.orchestrator.stream import Drive, RunHub, drive, halt_point
from services.orchestrator.workflow import RunView, Workflow, WorkflowEngine
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


def _detached() -> contextvars.Context:
    """The current context without the inbound call's deadline: a run outlives its caller.

    Its steps' calls are bounded by their own wall budgets instead; the request id and
    tenant stay, for logs and traces.
    """
    found = contextvars.copy_context()
    call = context.current()
    if call is not None:
        found.run(context.bind, replace(call, deadline=None))
    return found


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
    hub: RunHub = field(default_factory=RunHub)
    poll_s: float = 0.3  # how often a run driven by another instance is looked at
    stop_grace_s: float = 60.0  # how long a cancelled run may take to reach a safe point
    active: dict[str, asyncio.Task[RunView]] = field(default_factory=dict)
    drives: dict[str, Drive] = field(default_factory=dict)
    tenant_of: dict[str, str] = field(default_factory=dict)
    recovering: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    cancelling: dict[str, asyncio.Task[RunView]] = field(default_factory=dict)
    # Per run driven here: its view once its outcome committed, before its usage is counted.
    recorded: dict[str, asyncio.Future[RunView]] = field(default_factory=dict)

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

    def _expected(self, name: str, version: str) -> Workflow | None:
        """The workflow a new run of ``name`` most likely runs (a tenant may pin another)."""
        try:
            return self.resolve(name, version)
        except errors.DomainError:
            return None

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
        run_id: str = "",
    ) -> tuple[store.RunRow | None, str, Workflow, datetime]:
        """Insert the run (or find the one ``request_id`` started): (existing, id, workflow, t0).

        ``run_id``: the new run's id, when the caller picked it; else a fresh one.
        """
        async with db.tenant_transaction(self.engine, tenant_id) as connection:
            override, existing = await store.lookup(connection, workflow_name, request_id)
            if existing is not None:
                workflow = self.resolve(existing.workflow, existing.version)
                began = existing.started_at or existing.created_at
                return existing, existing.run_id, workflow, began
            workflow = self.resolve(workflow_name, version or override)
            run_id, began = run_id or record.new_run_id(), datetime.now(UTC)
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
            self.recorded[run_id] = asyncio.get_running_loop().create_future()
            self.hub.open(run_id)
            current = self.drives[run_id] = Drive(run_id)
            task = asyncio.create_task(self._leased(current, work), context=_detached())
            self.active[run_id] = task
            task.add_done_callback(lambda done: self._done(run_id, done))
        return task

    def _done(self, run_id: str, task: asyncio.Task[RunView]) -> None:
        self.active.pop(run_id, None)
        tenant_id = self.tenant_of.pop(run_id, None)
        if tenant_id is not None:
            self.graph.drop_ahead(tenant_id, run_id)  # a run that ended before its graph ran
        self.drives.pop(run_id, None)
        self.recorded.pop(run_id, None)
        failure = None if task.cancelled() else task.exception()
        if run_id in self.cancelling:
            return  # halted on purpose; the cancellation carries on with it
        # A run that ended without recording it (it failed) is recovered later, maybe
        # elsewhere; its readers stop waiting here.
        self.hub.finish(run_id)
        if failure is not None:
            _log.warning("run stopped", exc_info=failure, extra={"run_id": run_id})

    async def _leased(self, current: Drive, work: Callable[[], Awaitable[RunView]]) -> RunView:
        drive(current)
        run_id = current.run_id
        stop = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(run_id, stop))
        try:
            return await work()
        finally:
            # A flag, not cancel(): a driver may turn a cancellation into an error, which
            # the loop would survive and this await never end.
            stop.set()
            await heartbeat

    async def _heartbeat(self, run_id: str, stop: asyncio.Event) -> None:
        tenant = self.tenant_of.get(run_id, "")
        while tenant and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_s / 3):
                    await stop.wait()
                return
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
        new: bool = False,
    ) -> RunView:
        """Drive the run to its end or a human pause, then record it; ``new``: just begun."""
        clock = time.perf_counter()
        if resume is not None:
            view = await self.graph.resume(
                workflow, tenant_id=tenant_id, run_id=run_id, step_id=resume[0], value=resume[1]
            )
        else:
            view = await self.graph.advance(
                workflow, tenant_id=tenant_id, run_id=run_id, input=input, user_id=user_id,
                started_at=began, new=new,
            )  # fmt: skip
        halt_point()  # cancelled meanwhile: the cancellation records the end, not this
        latency_ms = int((time.perf_counter() - clock) * 1000)
        await self.commit(view, latency_ms)
        return view

    async def commit(self, view: RunView, latency_ms: int, status: str = "") -> None:
        """Write the run's outcome and events, then count its usage against the plan (once)."""
        async with db.tenant_transaction(self.engine, view.tenant_id) as connection:
            await record.finished(connection, view, latency_ms, status=status)
        self.wake()
        self.hub.finish(view.run_id)
        recorded = self.recorded.get(view.run_id)
        if not status and recorded is not None and not recorded.done():
            recorded.set_result(view)
        final = (status or view.status) in store.FINAL
        if final and self.redis is not None:
            try:
                await metering.count(
                    self.redis, view.tenant_id, view.run_id, view.tokens, view.cost_usd
                )
            except Exception:  # noqa: BLE001 - the metering sweep counts it from the outbox
                _log.warning("usage not recorded in Valkey", exc_info=True)

    async def start(
        self,
        tenant_id: str,
        workflow_name: str,
        version: str,
        input: Mapping[str, Any],
        *,
        request_id: str = "",
        session_id: str = "",
        user_id: str = "",
    ) -> tuple[str, asyncio.Task[RunView] | None]:
        """Start (or find) a run: its id and the task driving it here, if any.

        No task means the run ``request_id`` names already ended or paused, or that another
        instance drives it.
        """
        fresh_id = record.new_run_id()
        expected = self._expected(workflow_name, version)
        if expected is not None:
            # The router call overlaps the insert (services.orchestrator.workflow.ahead).
            self.graph.ask_ahead(
                expected, tenant_id=tenant_id, run_id=fresh_id, input=input, user_id=user_id,
                context=_detached(),
            )  # fmt: skip
        try:
            existing, run_id, workflow, began = await self.begin(
                tenant_id, workflow_name, version, input,
                request_id=request_id, session_id=session_id, user_id=user_id, run_id=fresh_id,
            )  # fmt: skip
        except BaseException:
            self.graph.drop_ahead(tenant_id, fresh_id)
            raise
        if existing is not None or workflow is not expected:
            # A retry of a started run, or a tenant pinned to another version.
            self.graph.drop_ahead(tenant_id, fresh_id)
        if existing is not None:
            return run_id, self.active.get(run_id)
        given = dict(input)
        task = self.spawn(
            tenant_id,
            run_id,
            lambda: self.execute(
                workflow, tenant_id, run_id, given, user_id=user_id, began=began, new=True
            ),
        )
        return run_id, task

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
        run_id, task = await self.start(
            tenant_id, workflow_name, version, input,
            request_id=request_id, session_id=session_id, user_id=user_id,
        )  # fmt: skip
        if not wait:
            return run_id, None
        if task is None:
            return run_id, await self.graph.get(tenant_id, run_id)
        return run_id, await self.awaited(tenant_id, run_id, task)

    async def awaited(self, tenant_id: str, run_id: str, task: asyncio.Task[RunView]) -> RunView:
        """The view ``task`` ends with; for a run cancelled meanwhile, the cancellation's.

        The view is read after the run's outcome committed; a run driven here needs no read.
        """
        try:
            return await asyncio.shield(task)
        except (Exception, asyncio.CancelledError):
            # A run halted by a cancellation ends its task early; the caller's own
            # cancellation (the task still running) goes on as usual.
            if not task.done() or run_id not in self.cancelling:
                raise
        _, view = await self.outcome(tenant_id, run_id)
        if view is None:
            raise errors.NotFound(f"run {run_id} not found")
        return view

    async def answered(self, tenant_id: str, run_id: str, task: asyncio.Task[RunView]) -> RunView:
        """Like :meth:`awaited`, but as soon as the run's outcome committed.

        The count of its usage that follows is not waited for: a streamed answer ends with
        the commit. A run that ends any other way (failed, cancelled) is awaited as usual.
        """
        recorded = self.recorded.get(run_id)
        if recorded is not None:
            await asyncio.wait({recorded, task}, return_when=asyncio.FIRST_COMPLETED)
            if recorded.done():
                return recorded.result()
        return await self.awaited(tenant_id, run_id, task)

    async def outcome(self, tenant_id: str, run_id: str) -> tuple[store.RunRow, RunView | None]:
        """The run once it ended or paused, waiting for whichever instance drives it."""
        while True:
            task = self.cancelling.get(run_id) or self.active.get(run_id)
            if task is not None:
                await asyncio.wait({task})  # its failure is the row's business, read below
                continue
            row = await self._row(tenant_id, run_id)
            if row.final or row.status == "WAITING_FOR_HUMAN":
                return row, await self.graph.get(tenant_id, run_id)
            await asyncio.sleep(self.poll_s)

    async def resume(
        self, tenant_id: str, run_id: str, step_id: str, value: Mapping[str, Any]
    ) -> RunView:
        """Give a waiting run the human's input and drive it on."""
        row = await self._row(tenant_id, run_id)
        if row.status != "WAITING_FOR_HUMAN" or run_id in self.cancelling:
            status = "being cancelled" if run_id in self.cancelling else row.status
            raise errors.FailedPrecondition(f"run {run_id} is {status}, not waiting")
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
        return await self.awaited(tenant_id, run_id, task)

    async def cancel(self, tenant_id: str, run_id: str, reason: str) -> RunView:
        """Stop a run, undoing its committed steps in reverse, each once; its final view.

        A run executing here is halted at its next safe point first; a paused run, or one
        whose orchestrator died, is taken over. A run another live instance executes is
        refused (FAILED_PRECONDITION): that instance holds its lease.
        """
        row = await self._row(tenant_id, run_id)
        if row.final:
            raise errors.FailedPrecondition(f"run {run_id} already ended {row.status}")
        task = self.cancelling.get(run_id)
        if task is None:
            task = asyncio.create_task(self._cancel(tenant_id, run_id, reason), context=_detached())
            self.cancelling[run_id] = task
            task.add_done_callback(lambda _: self.cancelling.pop(run_id, None))
        # Shielded: a caller that goes away does not leave the run half undone.
        return await asyncio.shield(task)

    async def _cancel(self, tenant_id: str, run_id: str, reason: str) -> RunView:
        try:
            running = self.active.get(run_id)
            if running is not None:
                await self._halt(run_id, running)
            if not await store.claim(self.engine, tenant_id, run_id, self.owner, self.lease_s):
                row = await self._row(tenant_id, run_id)
                if row.final:
                    raise errors.FailedPrecondition(f"run {run_id} already ended {row.status}")
                raise errors.FailedPrecondition(
                    f"run {run_id} is executing in another orchestrator instance; "
                    "cancel it again once it pauses or ends there"
                )
            row = await self._row(tenant_id, run_id)
            workflow = self.resolve(row.workflow, row.version)
            began = row.started_at or row.created_at
            undo = self.spawn(
                tenant_id, run_id, lambda: self._undo(workflow, tenant_id, run_id, reason, began)
            )
            return await undo
        finally:
            if run_id not in self.active:
                self.hub.finish(run_id)

    async def _halt(self, run_id: str, task: asyncio.Task[RunView]) -> None:
        """Stop the task driving ``run_id`` at its next safe point (or, failing that, now)."""
        current = self.drives.get(run_id)
        if current is not None:
            current.halted = True
        done, _ = await asyncio.wait({task}, timeout=self.stop_grace_s)
        if not done:
            # A call that never returns: interrupt it. Its write-ahead event stays without
            # an outcome, for an operator to reconcile.
            _log.warning("run reached no safe point; interrupting it", extra={"run_id": run_id})
            task.cancel()
            await asyncio.wait({task})

    async def _undo(
        self, workflow: Workflow, tenant_id: str, run_id: str, reason: str, began: datetime
    ) -> RunView:
        view = await cancel.undo(self.graph, workflow, tenant_id, run_id, reason)
        status = view.status if view.status == "FAILED" else "CANCELLED"
        if status == "CANCELLED" and view.compensations:
            status = "COMPENSATED"
        _log.info("run cancelled", extra={"run_id": run_id, "status": status, "reason": reason})
        latency_ms = int((datetime.now(UTC) - began).total_seconds() * 1000)
        await self.commit(view, latency_ms, status=status)
        return view

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
        if run_id in self.active or run_id in self.cancelling:
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

    async def requested(self, tenant_id: str, run_id: str) -> None:
        """A run's ``agent.run.requested`` event: recover it if nobody drives it.

        The orchestrators share the event's consumer, so it often comes to the one that
        started the run, which by then is driving it or has just finished it (the hub still
        holds its events) and knows without asking the database. A run that failed here is
        left to :meth:`recover_loop` once its lease lapses.
        """
        if run_id not in self.hub:
            await self.recover(tenant_id, run_id)

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
