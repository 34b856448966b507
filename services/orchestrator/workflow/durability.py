"""When a run's checkpoints reach PostgreSQL: before and after side effects, and at the end.

LangGraph checkpoints every super-step. Writing each one through (two round trips and a
serialisation per step) was most of a run's cost, yet only some of them carry a guarantee:

- **Before a side effect is requested** (a side-effecting tool call, a compensation, a
  hand-off to a human) the run's state must be durable. A crash after the request then
  resumes at that very step with the same inputs, and the call replays under the same
  idempotency key: the provider sees one charge, one order, one email.
- **After a side effect completed**, the checkpoint that records it (the ``completed`` or
  ``compensations`` saga entries) is written through at once, so a later crash does not
  make the call replay at all, and a compensation owed is never forgotten.
- **When an invocation ends** (the run finished, waits for a human, or paused), its last
  checkpoint and pending writes are written before the caller records the outcome.

Checkpoints in between (plan, route, read-only tools, model steps, gates, repair) stay in
memory. A crash loses only them: recovery resumes from the last durable checkpoint and
re-runs those read-only steps, whose results nothing outside the run has acted on yet.
One invocation per thread at a time (the run's lease) is assumed; another process reading
a running thread sees its last durable checkpoint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    copy_checkpoint,
    writes_sort_key,
)


@dataclass
class _Writes:
    """One ``aput_writes`` call, kept to be replayed on the real saver."""

    config: RunnableConfig
    writes: list[tuple[str, Any]]
    task_id: str
    task_path: str


@dataclass
class _Held:
    """What a held thread has not written yet."""

    empty: bool  # known to have no durable checkpoint, so reads need no round trip
    config: RunnableConfig | None = None  # as passed to aput: it names the parent
    checkpoint: Checkpoint | None = None
    metadata: CheckpointMetadata | None = None
    versions: ChannelVersions = field(default_factory=dict)  # changed since the last write
    durable_id: str = ""  # the newest checkpoint the real saver has
    writes: list[_Writes] = field(default_factory=list)  # to the newest checkpoint only
    writes_done: int = 0  # how many of ``writes`` the real saver has


def _thread(config: RunnableConfig) -> str:
    return str(config["configurable"]["thread_id"])


def _held_here(config: RunnableConfig) -> bool:
    return not config["configurable"].get("checkpoint_ns", "")


def _at(thread_id: str, checkpoint_id: str) -> RunnableConfig:
    """The config naming one checkpoint of a thread (the root namespace's)."""
    configurable = {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}
    return {"configurable": configurable}


class DeferredCheckpointer(BaseCheckpointSaver[Any]):
    """A saver that keeps held threads' checkpoints in memory until :meth:`flush`.

    Threads not held (another run's reads, history, deletes) go straight to ``inner``.
    ``write_through`` names state channels whose change is written through at once.
    """

    def __init__(self, inner: BaseCheckpointSaver[Any], write_through: Collection[str]) -> None:
        """Defer writes to ``inner`` for held threads."""
        super().__init__(serde=inner.serde)
        self.inner = inner
        self._write_through = frozenset(write_through)
        self._held: dict[str, _Held] = {}

    def hold(self, thread_id: str, *, empty: bool = False) -> None:
        """Keep ``thread_id``'s checkpoints in memory; ``empty``: it has none stored."""
        self._held[thread_id] = _Held(empty=empty)

    def release(self, thread_id: str) -> None:
        """Forget whatever of ``thread_id`` was not flushed (a crash loses the same)."""
        self._held.pop(thread_id, None)

    async def flush(self, thread_id: str) -> None:
        """Write ``thread_id``'s newest checkpoint and its pending writes to ``inner``."""
        held = self._held.get(thread_id)
        if held is None:
            return
        checkpoint = held.checkpoint
        if checkpoint is not None and held.durable_id != checkpoint["id"]:
            assert held.config is not None
            assert held.metadata is not None
            # ``versions`` gathers every channel changed since the last write, and the
            # checkpoint holds their newest values: the saver stores exactly those blobs.
            await self.inner.aput(held.config, checkpoint, held.metadata, held.versions)
            held.durable_id, held.versions, held.empty = checkpoint["id"], {}, False
        while held.writes_done < len(held.writes):
            call = held.writes[held.writes_done]
            await self.inner.aput_writes(call.config, call.writes, call.task_id, call.task_path)
            held.writes_done += 1

    # BaseCheckpointSaver

    @property
    def config_specs(self) -> list[Any]:
        """The inner saver's configurable fields."""
        return list(self.inner.config_specs)

    def get_next_version(self, current: Any, channel: None) -> Any:
        """Versions as the inner saver numbers them, so its stored ones stay comparable."""
        return self.inner.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The held checkpoint of a held thread, else the inner saver's."""
        held = self._held.get(_thread(config)) if _held_here(config) else None
        if held is None:
            return await self.inner.aget_tuple(config)
        wanted = config["configurable"].get("checkpoint_id")
        checkpoint = held.checkpoint
        if checkpoint is None or (wanted and wanted != checkpoint["id"]):
            if held.empty and not wanted:
                return None
            return await self.inner.aget_tuple(config)
        assert held.config is not None
        assert held.metadata is not None
        parent = held.config["configurable"].get("checkpoint_id")
        return CheckpointTuple(
            config=_at(_thread(config), checkpoint["id"]),
            checkpoint=copy_checkpoint(checkpoint),
            metadata=held.metadata.copy(),
            parent_config=_at(_thread(config), str(parent)) if parent else None,
            pending_writes=self._pending(held),
        )

    @staticmethod
    def _pending(held: _Held) -> list[tuple[str, str, Any]]:
        """The held writes as a saver returns them: one per (task, index), in sort order."""
        kept: dict[tuple[str, int], tuple[str, str, str, Any]] = {}
        for call in held.writes:
            for index, (channel, value) in enumerate(call.writes):
                key = (call.task_id, WRITES_IDX_MAP.get(channel, index))
                if key[1] >= 0 and key in kept:
                    continue  # a regular write is kept once, a special one replaced
                kept[key] = (call.task_path, call.task_id, channel, value)
        ordered = sorted(kept.items(), key=lambda item: writes_sort_key(item[1][0], *item[0]))
        return [(task_id, channel, value) for _, (_, task_id, channel, value) in ordered]

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """History comes from the inner saver (a held thread's newest step is not in it)."""
        async for found in self.inner.alist(config, filter=filter, before=before, limit=limit):
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Hold the checkpoint of a held thread (writing it through after a side effect)."""
        thread = _thread(config)
        held = self._held.get(thread) if _held_here(config) else None
        if held is None:
            return await self.inner.aput(config, checkpoint, metadata, new_versions)
        held.config, held.checkpoint, held.metadata = config, checkpoint, metadata.copy()
        held.versions = {**held.versions, **new_versions}
        held.writes, held.writes_done = [], 0
        if self._write_through.intersection(new_versions):
            await self.flush(thread)
        return _at(thread, checkpoint["id"])

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Hold a held thread's writes to its newest checkpoint; older ones are superseded."""
        held = self._held.get(_thread(config)) if _held_here(config) else None
        if held is None:
            await self.inner.aput_writes(config, writes, task_id, task_path)
            return
        checkpoint = held.checkpoint
        if (
            checkpoint is not None
            and config["configurable"].get("checkpoint_id") != checkpoint["id"]
        ):
            # Writes to a checkpoint a newer one already folded in change nothing.
            return
        # Without a held checkpoint they are writes to the stored one the run resumed from.
        held.writes.append(_Writes(config, list(writes), task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete the thread everywhere."""
        if thread_id in self._held:
            self._held[thread_id] = _Held(empty=True)
        await self.inner.adelete_thread(thread_id)

    # The engine is asynchronous; synchronous readers see what the inner saver has.

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The inner saver's checkpoint."""
        return self.inner.get_tuple(config)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """The inner saver's history."""
        return self.inner.list(config, filter=filter, before=before, limit=limit)
