"""A mail sandbox: an SMTP server (aiosmtpd) keeping a mailbox per recipient, read over HTTP.

SMTP accepts any sender and recipient. A message whose ``Message-ID`` already sits in a
recipient's mailbox is accepted but not stored again, so a resent message appears once.
HTTP for tests and development: ``GET /messages?to=<address>`` lists a mailbox (every
message without ``to``), ``DELETE /messages`` empties them all.
"""

from __future__ import annotations

import asyncio
import email
import time
from email import policy
from email.message import EmailMessage

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.sandbox._http import HttpSandbox, JsonObject, cli, serve


class Mailboxes:
    """Received messages by recipient, de-duplicated per mailbox by Message-ID."""

    def __init__(self) -> None:
        """Start empty."""
        self.boxes: dict[str, list[JsonObject]] = {}
        self.duplicates = 0

    def deliver(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """File ``raw`` in each recipient's mailbox unless its Message-ID is already there."""
        message = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        record = _summary(message, sender)
        for recipient in recipients:
            box = self.boxes.setdefault(recipient.lower(), [])
            message_id = record["message_id"]
            if message_id and any(item["message_id"] == message_id for item in box):
                self.duplicates += 1
                continue
            box.append({**record, "recipient": recipient.lower()})

    def messages(self, to: str | None = None) -> list[JsonObject]:
        """One mailbox's messages, or every mailbox's, oldest first."""
        if to is not None:
            return list(self.boxes.get(to.lower(), []))
        merged = [item for box in self.boxes.values() for item in box]
        return sorted(merged, key=lambda item: float(item["received_at"]))


def _summary(message: EmailMessage, sender: str) -> JsonObject:
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    return {
        "message_id": str(message.get("Message-ID", "")).strip(),
        "envelope_from": sender,
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "in_reply_to": str(message.get("In-Reply-To", "")),
        "references": str(message.get("References", "")),
        "body": text,
        "headers": {name: str(value) for name, value in message.items()},
        "received_at": time.time(),
    }


class _Handler:
    """aiosmtpd's handler: every accepted DATA goes to the mailboxes."""

    def __init__(self, mailboxes: Mailboxes) -> None:
        self._mailboxes = mailboxes

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        self._mailboxes.deliver(str(envelope.mail_from or ""), list(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"


class MailSandbox:
    """The SMTP server plus its HTTP window onto the mailboxes."""

    def __init__(self, *, hostname: str = "sandbox.mail.test") -> None:
        """``hostname`` is what the server calls itself in its greeting."""
        self.hostname = hostname
        self.mailboxes = Mailboxes()
        app = web.Application()
        app.add_routes([web.get("/messages", self._list), web.delete("/messages", self._clear)])
        self.http = HttpSandbox(app)
        self.port = 0
        self.host = "127.0.0.1"
        self._server: asyncio.Server | None = None

    @property
    def http_port(self) -> int:
        """Port of the HTTP window."""
        return self.http.port

    @property
    def http_url(self) -> str:
        """Base URL of the HTTP window."""
        return self.http.url

    async def run(self, port: int = 0, host: str = "127.0.0.1", http_port: int = 0) -> int:
        """Start SMTP on ``port`` and HTTP on ``http_port`` (0: free ones); return SMTP's."""
        loop = asyncio.get_running_loop()
        handler = _Handler(self.mailboxes)

        def protocol() -> SMTP:
            return SMTP(handler, hostname=self.hostname, loop=loop)

        self._server = await loop.create_server(protocol, host, port)
        self.host, self.port = host, int(self._server.sockets[0].getsockname()[1])
        await self.http.run(http_port, host)
        return self.port

    async def close(self) -> None:
        """Stop both servers."""
        await self.http.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"messages": self.mailboxes.messages(request.query.get("to"))})

    async def _clear(self, request: web.Request) -> web.Response:
        self.mailboxes.boxes.clear()
        return web.json_response({})


class _Standalone(MailSandbox):
    """The sandbox with its HTTP port fixed from the command line."""

    def __init__(self, http_port: int) -> None:
        super().__init__()
        self._http_port = http_port

    async def run(self, port: int = 0, host: str = "127.0.0.1", http_port: int = 0) -> int:
        """Start both servers on the configured ports."""
        bound = await super().run(port, host, self._http_port)
        print(f"mail sandbox HTTP on {host}:{self.http_port}", flush=True)
        return bound


def main(argv: list[str] | None = None) -> None:
    """``python -m services.sandbox.mail --port P --http-port H``."""
    parser = cli("Mail sandbox (SMTP, with an HTTP mailbox reader).")
    parser.add_argument("--http-port", type=int, default=0, help="port of the HTTP reader")
    args = parser.parse_args(argv)
    serve(_Standalone(args.http_port), args.host, args.port, "mail (SMTP)")


if __name__ == "__main__":
    main()
