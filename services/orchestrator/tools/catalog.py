"""The catalog of tools: every ToolSpec, and the registry wired to real dependencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.resilience import Resilience
from services.orchestrator.tools import crm, knowledge, mail, orders, payment
from services.orchestrator.tools.http import JsonClient
from services.orchestrator.tools.registry import ToolRegistry
from services.orchestrator.tools.spec import ToolFn
from supportmesh.spec.v1 import tool_pb2

TOOL_NAMES = (
    "orders.create", "orders.get", "orders.cancel",
    "payment.charge", "payment.refund", "payment.capture",
    "crm.create_lead", "crm.update_lead_status", "crm.revert_lead_status",
    "mail.send", "mail.send_cancellation",
    "knowledge.search",
)  # fmt: skip


@dataclass(frozen=True)
class ToolsConfig:
    """Where the tools' third parties are."""

    payment_url: str
    """Base URL of the payment provider's API."""
    crm_url: str
    """Base URL of the CRM's API."""
    smtp: mail.SmtpConfig
    """The SMTP server mail goes through."""
    payment_api_key: str = ""
    """Bearer key for the payment provider."""
    crm_api_key: str = ""
    """Bearer key for the CRM."""


def all_specs() -> list[tool_pb2.ToolSpec]:
    """Every tool's spec, by name, for ``ControlService.RegisterTool``."""
    found = [
        *orders.specs(),
        *payment.specs(),
        *crm.specs(),
        *mail.specs(),
        *knowledge.specs(),
    ]
    return sorted(found, key=lambda spec: spec.name)


def build_registry(
    config: ToolsConfig,
    *,
    resilience: Resilience,
    engine: AsyncEngine,
    http: aiohttp.ClientSession,
    knowledge_channel: grpc.aio.Channel,
) -> ToolRegistry:
    """A registry of every tool over the given dependencies (the caller owns their lifetimes)."""
    payment_client = JsonClient(
        http, config.payment_url, provider=payment.DEPENDENCY, api_key=config.payment_api_key
    )
    crm_client = JsonClient(
        http, config.crm_url, provider=crm.DEPENDENCY, api_key=config.crm_api_key
    )
    implementations: list[tuple[str, list[tool_pb2.ToolSpec], dict[str, ToolFn]]] = [
        (orders.DEPENDENCY, orders.specs(), orders.OrderTools(engine).bindings()),
        (payment.DEPENDENCY, payment.specs(), payment.PaymentTools(payment_client).bindings()),
        (crm.DEPENDENCY, crm.specs(), crm.CrmTools(crm_client).bindings()),
        (mail.DEPENDENCY, mail.specs(), mail.MailTools(config.smtp).bindings()),
        (
            knowledge.DEPENDENCY,
            knowledge.specs(),
            knowledge.KnowledgeTools(knowledge_channel).bindings(),
        ),
    ]
    registry = ToolRegistry(resilience)
    for dependency, specs, bindings in implementations:
        for spec in specs:
            registry.add(spec, bindings[spec.name], dependency=dependency)
    return registry


@asynccontextmanager
async def open_registry(
    config: ToolsConfig,
    *,
    resilience: Resilience,
    engine: AsyncEngine,
    knowledge_channel: grpc.aio.Channel,
) -> AsyncIterator[ToolRegistry]:
    """:func:`build_registry` with an HTTP session it opens and closes itself."""
    async with aiohttp.ClientSession() as http:
        yield build_registry(
            config,
            resilience=resilience,
            engine=engine,
            http=http,
            knowledge_channel=knowledge_channel,
        )
