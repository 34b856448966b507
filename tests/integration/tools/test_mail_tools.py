"""mail.send / send_cancellation over SMTP to the mail sandbox."""

from __future__ import annotations

import uuid

from services.orchestrator.tools import ToolRegistry
from tests.integration.tools.conftest import Sandboxes, key


async def test_send_replayed_with_its_key_delivers_one_email(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    email = {"to": to, "subject": "Order confirmed", "body": "Thanks for your order."}
    same = key("mail.send", tenant)
    first = await registry.call("mail.send", tenant, email, same)
    assert await registry.call("mail.send", tenant, email, same) == first
    inbox = sandboxes.mail.mailboxes.messages(to)
    assert len(inbox) == 1
    assert inbox[0]["message_id"] == first["message_id"]
    assert inbox[0]["headers"]["X-Supportmesh-Tenant"] == tenant
    assert inbox[0]["body"].strip() == "Thanks for your order."


async def test_cancellation_refers_to_the_original_and_is_deduplicated(
    registry: ToolRegistry, sandboxes: Sandboxes, tenant: str
) -> None:
    to = f"{uuid.uuid4().hex[:8]}@example.com"
    sent = await registry.call(
        "mail.send", tenant, {"to": to, "subject": "Order confirmed", "body": "Yes."},
        key("mail.send", tenant),
    )  # fmt: skip
    cancel_key = key("mail.send_cancellation", tenant)
    cancelled = await registry.call("mail.send_cancellation", tenant, sent, cancel_key)
    assert await registry.call("mail.send_cancellation", tenant, sent, cancel_key) == cancelled
    inbox = sandboxes.mail.mailboxes.messages(to)
    assert [item["subject"] for item in inbox] == ["Order confirmed", "Cancelled: Order confirmed"]
    assert inbox[1]["in_reply_to"] == sent["message_id"]
    assert sent["message_id"] in inbox[1]["body"]
