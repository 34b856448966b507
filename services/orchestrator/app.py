"""Composition root of the orchestrator service.

Tools: the built-in catalogue (``services.orchestrator.tools``) is treated as platform
tools, available to every tenant; their ToolSpecs are published by ``all_specs()`` and are
not registered per tenant with ``ControlService.RegisterTool`` (tenant-registered tools are
not callable by workflows yet). Workflows are loaded and checked against that catalogue at
start; an invalid one stops the service with FAILED_PRECONDITION WORKFLOW_INVALID.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from nats.aio.msg import Msg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit import channels, db, events, valkey
from services.kit.resilience import Resilience
from services.kit.settings import ServiceSettings
from services.kit.telemetry import Telemetry
from services.orchestrator import adapters
from services.orchestrator.metering import Sweeper
from services.orchestrator.models import Models, TierModel
from services.orchestrator.outbox import Relay
from services.orchestrator.runs import Runs
from services.orchestrator.servicer import OrchestratorServicer
from services.orchestrator.stream import RunHub
from services.orchestrator.tools import SmtpConfig, ToolsConfig, build_registry
from services.orchestrator.workflow import WORKFLOWS_DIR, Ports, WorkflowEngine, load_workflows
from supportmesh.events.v1 import events_pb2
from supportmesh.orchestrator.v1 import orchestrator_service_pb2 as pb
from supportmesh.orchestrator.v1 import orchestrator_service_pb2_grpc as pb_grpc

_log = logging.getLogger("supportmesh.orchestrator")

SERVICE_NAMES = (pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name,)
REQUESTED = next(spec for spec in events.CONSUMERS if spec.durable == "orchestrator-requested")


class OrchestratorSettings(ServiceSettings):
    """Orchestrator settings, read from ``ORCHESTRATOR_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRATOR_", frozen=True, extra="ignore")

    service_name: str = "orchestrator"
    router_target: str = Field("", description="RouterService host:port; empty: default tiers.")
    knowledge_target: str = Field("127.0.0.1:9", description="KnowledgeService host:port.")
    payment_url: str = Field("http://127.0.0.1:9", description="Payment provider base URL.")
    payment_api_key: str = Field("", description="Payment provider bearer key.")
    crm_url: str = Field("http://127.0.0.1:9", description="CRM base URL.")
    crm_api_key: str = Field("", description="CRM bearer key; empty: none sent.")
    mail_url: str = Field("smtp://127.0.0.1:25", description="SMTP server as smtp://host:port.")
    workflows_dir: Path = Field(WORKFLOWS_DIR, description="Directory of workflow YAML files.")
    models: dict[str, TierModel] = Field(
        default_factory=dict,
        description="Tier → OpenAI-compatible model, as JSON; tiers left out: embedded.",
    )
    model_api_key: str = Field(
        "", description="API key of every configured tier whose own api_key is left empty."
    )
    lease_s: float = Field(10.0, description="How long a run's lease lasts without renewal.")
    recovery_every_s: float = Field(2.0, description="How often lapsed leases are looked for.")
    outbox_poll_s: float = Field(0.5, description="How often the outbox relay polls.")
    outbox_settle_s: float = Field(
        0.02, description="How long a woken outbox relay gathers commits before it reads."
    )
    usage_sweep_every_s: float = Field(
        30.0, description="How often committed runs' usage is checked for a missed count."
    )
    usage_horizon_s: float = Field(
        86_400.0, description="How far back a start's usage sweep looks (below the marker TTL)."
    )

    def tier_models(self) -> dict[str, TierModel]:
        """The configured tiers, each with its API key (``model_api_key`` when left empty)."""
        return {
            tier: model
            if model.api_key
            else model.model_copy(update={"api_key": self.model_api_key})
            for tier, model in self.models.items()
        }


@dataclass
class OrchestratorApp:
    """The servicer and its background work (outbox relay, recovery, usage sweep, consumer)."""

    settings: OrchestratorSettings
    telemetry: Telemetry
    service_names: tuple[str, ...] = SERVICE_NAMES
    runs: Runs | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def register(self, server: grpc.aio.Server) -> None:
        """Add the OrchestratorService to a server."""
        assert self.runs is not None, "start() first"
        pb_grpc.add_OrchestratorServiceServicer_to_server(OrchestratorServicer(self.runs), server)

    async def start(self) -> None:
        """Open connections, load workflows, start the relay, recovery loop and consumer."""
        s, infra = self.settings, self.settings.infra
        engine = db.create_engine(infra.database_url, pool_size=20, max_overflow=20)
        self._stack.push_async_callback(engine.dispose)
        redis = valkey.connect(infra.redis_url, decode_responses=True) if infra.redis_url else None
        if redis is not None:
            self._stack.push_async_callback(redis.aclose)
        http = await self._stack.enter_async_context(aiohttp.ClientSession())
        knowledge = channels.create_channel(s.knowledge_target, s, self.telemetry)
        self._stack.push_async_callback(knowledge.close)
        router = None
        if s.router_target:
            router = channels.create_channel(s.router_target, s, self.telemetry)
            self._stack.push_async_callback(router.close)
        mail = urlsplit(s.mail_url)
        config = ToolsConfig(
            payment_url=s.payment_url, payment_api_key=s.payment_api_key, crm_url=s.crm_url,
            crm_api_key=s.crm_api_key,
            smtp=SmtpConfig(host=mail.hostname or "127.0.0.1", port=mail.port or 25),
        )  # fmt: skip
        registry = build_registry(
            config, resilience=Resilience(self.telemetry.registry), engine=engine, http=http,
            knowledge_channel=knowledge,
        )  # fmt: skip
        specs = {spec.name: spec for spec in registry.specs()}
        loaded = load_workflows(s.workflows_dir, known_tools=specs)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            infra.database_url, min_size=2, max_size=20, open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row,
                    "options": "-c search_path=checkpoints"},
        )  # fmt: skip
        await pool.open()
        self._stack.push_async_callback(pool.close)
        nats, js = await events.connect(infra.nats_url)
        self._stack.push_async_callback(nats.close)
        relay = Relay(engine, js, poll_s=s.outbox_poll_s, settle_s=s.outbox_settle_s)
        hub = RunHub()
        models = Models(s.tier_models(), hub=hub)
        self._stack.push_async_callback(models.aclose)
        ports = Ports(
            router=adapters.RouterClient(router),
            tools=adapters.RegistryTools(registry, engine, relay.wake, hub),
            models=models,
            knowledge=adapters.ToolKnowledge(registry),
            human=adapters.HumanQueue(),
        )
        graph = WorkflowEngine(ports, AsyncPostgresSaver(pool))
        workflows = {name: {wf.version: wf} for name, wf in loaded.items()}
        self.runs = Runs(engine, workflows, graph, relay.wake, redis, lease_s=s.lease_s, hub=hub)
        self._tasks.append(asyncio.create_task(relay.run(), name="outbox-relay"))
        self._tasks.append(
            asyncio.create_task(self.runs.recover_loop(s.recovery_every_s), name="recovery")
        )
        if redis is not None:
            sweeper = Sweeper(engine, redis, horizon_s=s.usage_horizon_s)
            self._tasks.append(
                asyncio.create_task(sweeper.run(s.usage_sweep_every_s), name="usage-sweep")
            )
        consumer = events.Consumer(js, REQUESTED, self._requested)
        await consumer.start()
        self._stack.push_async_callback(consumer.stop)
        _log.info("orchestrator started", extra={"workflows": sorted(loaded)})

    async def _requested(self, msg: Msg) -> None:
        """agent.run.requested: recover a run nobody is driving; a malformed event raises."""
        event = events_pb2.RunEvent.FromString(msg.data)
        if not event.tenant_id or not event.run_id:
            raise ValueError("agent.run.requested without tenant_id or run_id")
        assert self.runs is not None
        await self.runs.requested(event.tenant_id, event.run_id)

    async def stop(self) -> None:
        """Stop background work and close connections."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()


def build(settings: OrchestratorSettings, telemetry: Telemetry) -> OrchestratorApp:
    """Wire the orchestrator from settings; connections open in ``start()``."""
    return OrchestratorApp(settings, telemetry)
