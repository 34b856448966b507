"""Mail tools: send an email and send its cancellation, over SMTP.

The Message-ID is derived from the idempotency key, so a retried or replayed send carries
the same Message-ID and the receiving side files it once. smtplib runs in a worker thread;
its socket timeout matches the tool's, so an abandoned attempt does not linger.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate

from services.kit import errors
from services.orchestrator.tools.spec import IRREVERSIBLE, JsonObject, ToolFn, obj, tool_spec
from supportmesh.spec.v1 import tool_pb2

DEPENDENCY = "mail"
TIMEOUT_S = 10.0
_EMAIL = {"type": "string", "format": "email", "maxLength": 320}
_MESSAGE_ID = {"type": "string", "minLength": 3, "maxLength": 998}


def specs() -> list[tool_pb2.ToolSpec]:
    """The mail tools' specs."""
    send_in = obj(
        {
            "to": _EMAIL,
            "subject": {"type": "string", "minLength": 1, "maxLength": 200},
            "body": {"type": "string", "maxLength": 100_000},
            "reply_to": _EMAIL,
        },
        ("to", "subject", "body"),
    )
    cancel_in = obj(
        {
            "to": _EMAIL,
            "message_id": _MESSAGE_ID,
            "subject": {"type": "string", "maxLength": 200},
            "reason": {"type": "string", "maxLength": 2000},
        },
        ("to", "message_id"),
        closed=False,
    )
    out = obj(
        {"message_id": _MESSAGE_ID, "to": _EMAIL, "subject": {"type": "string"}},
        ("message_id", "to", "subject"),
    )
    return [
        _spec("mail.send", "Send an email to a customer.", send_in, out, "mail.send_cancellation"),
        _spec(
            "mail.send_cancellation",
            "Tell the recipient of an earlier email to disregard it.",
            cancel_in,
            out,
        ),
    ]


def _spec(
    name: str,
    description: str,
    input_schema: JsonObject,
    output_schema: JsonObject,
    compensation: str = "",
) -> tool_pb2.ToolSpec:
    return tool_spec(
        name, description, input_schema=input_schema, output_schema=output_schema,
        side_effect=IRREVERSIBLE, compensation=compensation, timeout_s=TIMEOUT_S,
        retention=timedelta(days=7), max_concurrency=4,
    )  # fmt: skip


@dataclass(frozen=True)
class SmtpConfig:
    """Where and as whom mail is sent."""

    host: str
    """SMTP server host."""
    port: int
    """SMTP server port."""
    sender: str = "support@supportmesh.local"
    """The From address."""
    domain: str = "supportmesh.local"
    """Right-hand side of generated Message-IDs."""


def message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID a call with ``idempotency_key`` sends (same key, same id)."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]
    return f"<{digest}@{domain}>"


class MailTools:
    """The mail tools' implementations over one SMTP server."""

    def __init__(self, config: SmtpConfig) -> None:
        """Send through the server ``config`` names."""
        self._config = config

    def bindings(self) -> dict[str, ToolFn]:
        """Implementation by tool name."""
        return {"mail.send": self.send, "mail.send_cancellation": self.send_cancellation}

    async def send(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Send ``data['body']`` to ``data['to']``."""
        message = self._message(tenant_id, key, str(data["to"]), str(data["subject"]))
        if data.get("reply_to"):
            message["Reply-To"] = str(data["reply_to"])
        message.set_content(str(data["body"]))
        return await self._send(message)

    async def send_cancellation(self, tenant_id: str, data: JsonObject, key: str) -> JsonObject:
        """Send a cancellation referring to the earlier ``data['message_id']``."""
        original = str(data["message_id"])
        subject = f"Cancelled: {data.get('subject') or 'our previous message'}"
        message = self._message(tenant_id, key, str(data["to"]), subject)
        message["In-Reply-To"] = original
        message["References"] = original
        reason = str(data.get("reason") or "it no longer applies")
        message.set_content(f"Please disregard our previous message ({original}): {reason}.")
        return await self._send(message)

    def _message(self, tenant_id: str, key: str, to: str, subject: str) -> EmailMessage:
        message = EmailMessage()
        message["Message-ID"] = message_id(key, self._config.domain)
        message["From"] = self._config.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["X-Supportmesh-Tenant"] = tenant_id
        return message

    async def _send(self, message: EmailMessage) -> JsonObject:
        await asyncio.to_thread(_deliver, self._config, message)
        return {
            "message_id": str(message["Message-ID"]),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
        }


def _deliver(config: SmtpConfig, message: EmailMessage) -> None:
    """Hand ``message`` to the SMTP server (blocking; runs in a worker thread)."""
    try:
        with smtplib.SMTP(config.host, config.port, timeout=TIMEOUT_S) as client:
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as error:
        raise errors.InvalidArgument("the mail server refused the recipient", field="to") from error
    except smtplib.SMTPResponseException as error:
        if 400 <= error.smtp_code < 500:  # transient: try again later
            raise errors.Unavailable(f"mail server: {error.smtp_code}") from error
        raise errors.InvalidArgument(
            f"mail server refused the message: {error.smtp_code}"
        ) from error
    except TimeoutError as error:
        raise errors.DeadlineExceeded("mail server did not answer in time") from error
    except (smtplib.SMTPException, OSError) as error:
        raise errors.Unavailable(f"mail server unreachable: {type(error).__name__}") from error
