"""JetStream: the one place that declares streams and consumers, plus publish, consume and DLQ.

Streams keep the seed's subjects on file storage with a de-duplication window, so a publisher
that retries with the same ``Nats-Msg-Id`` is stored once. Every consumer acks explicitly and
is redelivered with the seed's backoff (1 s, 5 s, 25 s) up to ``max_deliver``; after that the
server emits a MAX_DELIVERIES advisory, which a stream captures durably and the
dead-letter forwarder turns into a copy of the original message on
``dlq.<stream>.<consumer>`` in the DLQ stream (7-day retention) for manual inspection.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

_log = logging.getLogger("supportmesh.events")

DAY_S = 86_400.0

# Subjects from the seeds.
AGENT_RUN_REQUESTED = "agent.run.requested"
AGENT_RUN_STARTED = "agent.run.started"
AGENT_RUN_COMPLETED = "agent.run.completed"
# A run paused for a human (ResumeRun continues it).
AGENT_RUN_WAITING = "agent.run.waiting"
TOOL_CALL_REQUESTED = "tool.call.requested"
TOOL_CALL_SUCCEEDED = "tool.call.succeeded"
TOOL_CALL_FAILED = "tool.call.failed"
INGEST_DOC_PROCESSED = "ingest.doc.processed"
# Work items for the ingestion workers (a work queue: each is taken by one worker).
INGEST_DOC_REQUESTED = "ingest.doc.requested"
USAGE_METERED = "usage.metered"
BILLING_INVOICE_GENERATED = "billing.invoice.generated"

MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
DLQ_STREAM = "DLQ"
ADVISORY_STREAM = "DLQ_ADVISORIES"
SEED_BACKOFF_S = (1.0, 5.0, 25.0)


@dataclass(frozen=True)
class StreamSpec:
    """A stream to declare."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 7 * DAY_S
    duplicate_window_s: float = 120.0
    # WORK_QUEUE removes a message once acked, so the stream's depth is the backlog.
    retention: js_api.RetentionPolicy = js_api.RetentionPolicy.LIMITS

    def config(self) -> js_api.StreamConfig:
        """The nats-py configuration for this stream."""
        return js_api.StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=self.retention,
            storage=js_api.StorageType.FILE,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
            discard=js_api.DiscardPolicy.OLD,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer to declare."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    backoff_s: tuple[float, ...] = SEED_BACKOFF_S
    # One first delivery plus one redelivery per backoff step: the seed's "3 retries".
    max_deliver: int = len(SEED_BACKOFF_S) + 1
    max_ack_pending: int = 1000

    def config(self) -> js_api.ConsumerConfig:
        """The nats-py configuration for this consumer."""
        return js_api.ConsumerConfig(
            durable_name=self.durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            filter_subjects=list(self.filter_subjects),
            max_deliver=self.max_deliver,
            backoff=list(self.backoff_s),
            max_ack_pending=self.max_ack_pending,
        )


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("AGENT_RUNS", ("agent.run.>",)),
    StreamSpec("TOOL_CALLS", ("tool.call.>",)),
    StreamSpec("INGEST", (INGEST_DOC_PROCESSED,)),
    StreamSpec("INGEST_WORK", (INGEST_DOC_REQUESTED,), retention=js_api.RetentionPolicy.WORK_QUEUE),
    StreamSpec("USAGE", (USAGE_METERED,), max_age_s=35 * DAY_S),
    StreamSpec("BILLING", ("billing.invoice.>",), max_age_s=400 * DAY_S),
    StreamSpec(DLQ_STREAM, ("dlq.>",), max_age_s=7 * DAY_S),
    StreamSpec(ADVISORY_STREAM, (MAX_DELIVERIES_ADVISORY + ".>",), max_age_s=7 * DAY_S),
)

CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec("AGENT_RUNS", "orchestrator-requested", (AGENT_RUN_REQUESTED,)),
    ConsumerSpec("AGENT_RUNS", "router-outcomes", (AGENT_RUN_COMPLETED,)),
    ConsumerSpec("AGENT_RUNS", "analytics-runs", ("agent.run.>",)),
    ConsumerSpec("TOOL_CALLS", "analytics-tools", ("tool.call.>",)),
    ConsumerSpec("USAGE", "billing-usage", (USAGE_METERED,)),
    ConsumerSpec("USAGE", "analytics-usage", (USAGE_METERED,)),
    ConsumerSpec("INGEST", "analytics-ingest", (INGEST_DOC_PROCESSED,)),
    # Ingestion workers share this one durable consumer (KEDA scales them on its backlog).
    ConsumerSpec("INGEST_WORK", "knowledge-ingest", (INGEST_DOC_REQUESTED,), max_ack_pending=64),
    ConsumerSpec(
        ADVISORY_STREAM, "dlq-forwarder", (MAX_DELIVERIES_ADVISORY + ".>",), backoff_s=(1.0, 5.0)
    ),
)


async def declare(
    js: JetStreamContext,
    streams: Sequence[StreamSpec] = STREAMS,
    consumers: Sequence[ConsumerSpec] = CONSUMERS,
) -> None:
    """Create or update every stream and consumer; safe to run at every start."""
    for stream in streams:
        try:
            await js.stream_info(stream.name)
            await js.update_stream(stream.config())
        except NotFoundError:
            await js.add_stream(stream.config())
    for consumer in consumers:
        await js.add_consumer(consumer.stream, consumer.config())


async def publish(
    js: JetStreamContext, subject: str, event: Message, msg_id: str, *, timeout_s: float = 2.0
) -> int:
    """Publish a protobuf event with a de-duplication id; returns the stream sequence."""
    ack = await js.publish(
        subject, event.SerializeToString(), headers={"Nats-Msg-Id": msg_id}, timeout=timeout_s
    )
    return int(ack.seq)


Handler = Callable[[Msg], Awaitable[None]]


@dataclass
class Consumer:
    """Runs a handler over a durable pull consumer: ack on success, nak with backoff on error."""

    js: JetStreamContext
    spec: ConsumerSpec
    handler: Handler
    batch: int = 32
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    async def start(self) -> None:
        """Bind to the declared consumer and start fetching."""
        self._sub = await self.js.pull_subscribe_bind(self.spec.durable, stream=self.spec.stream)
        self._task = asyncio.create_task(self._run(), name=f"consumer:{self.spec.durable}")

    async def stop(self) -> None:
        """Stop fetching; unacked messages are redelivered to the next consumer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._sub.unsubscribe()

    async def _run(self) -> None:
        while True:
            try:
                messages = await self._sub.fetch(self.batch, timeout=1.0)
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a broken fetch (reconnect, leader change) is retried
                _log.warning("fetch failed; retrying", exc_info=True, extra=self._labels)
                await asyncio.sleep(1.0)
                continue
            for msg in messages:
                try:
                    await self._handle(msg)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - an ack/nak that failed is redelivered anyway
                    _log.warning(
                        "ack failed; the server redelivers", exc_info=True, extra=self._labels
                    )

    @property
    def _labels(self) -> dict[str, str]:
        return {"consumer": self.spec.durable, "stream": self.spec.stream}

    async def _handle(self, msg: Msg) -> None:
        heartbeat = asyncio.create_task(_keep_in_progress(msg))
        try:
            await self.handler(msg)
        except Exception:  # noqa: BLE001 - any handler failure means "retry later"
            delivered = msg.metadata.num_delivered
            delay = self.spec.backoff_s[min(delivered, len(self.spec.backoff_s)) - 1]
            _log.warning(
                "handler failed; redelivery scheduled",
                exc_info=True,
                extra={"consumer": self.spec.durable, "delivered": delivered, "delay_s": delay},
            )
            heartbeat.cancel()
            await msg.nak(delay=delay)
        else:
            heartbeat.cancel()
            await msg.ack()


async def _keep_in_progress(msg: Msg, every_s: float = 0.5) -> None:
    # The first backoff step (1 s) doubles as ack wait: tell the server a slow handler is alive.
    while True:
        await asyncio.sleep(every_s)
        await msg.in_progress()


async def forward_dead_letter(js: JetStreamContext, advisory: Msg) -> None:
    """Copy the message named by a MAX_DELIVERIES advisory into the DLQ stream."""
    info = json.loads(advisory.data)
    stream, consumer, seq = info["stream"], info["consumer"], int(info["stream_seq"])
    try:
        original = await js.get_msg(stream, seq)
    except NotFoundError:
        _log.error("dead letter vanished before forwarding", extra={"stream": stream, "seq": seq})
        return
    headers = {
        "Nats-Msg-Id": f"{stream}:{seq}:{consumer}",
        "Dlq-Stream": stream,
        "Dlq-Consumer": consumer,
        "Dlq-Subject": original.subject,
        "Dlq-Sequence": str(seq),
        "Dlq-Deliveries": str(info.get("deliveries", "")),
    }
    await js.publish(f"dlq.{stream}.{consumer}", original.data or b"", headers=headers)
    _log.warning("message dead-lettered", extra={"stream": stream, "consumer": consumer})


def dead_letter_forwarder(js: JetStreamContext) -> Consumer:
    """The consumer that feeds the DLQ stream from max-deliveries advisories."""
    spec = next(spec for spec in CONSUMERS if spec.durable == "dlq-forwarder")

    async def handle(msg: Msg) -> None:
        await forward_dead_letter(js, msg)

    return Consumer(js, spec, handle)


async def connect(url: str) -> tuple[NatsClient, JetStreamContext]:
    """Connect to NATS and return the client and its JetStream context."""
    client = NatsClient()
    await client.connect(url, name="supportmesh", max_reconnect_attempts=-1)
    return client, client.jetstream()
