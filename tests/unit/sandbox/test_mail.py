"""The mail sandbox: SMTP round trip with smtplib, mailboxes over HTTP, Message-ID dedup."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage

import aiohttp

from services.sandbox.mail import MailSandbox


def send(port: int, message: EmailMessage) -> None:
    """Send with the standard library's SMTP client."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message)


def message(message_id: str, to: str = "ada@example.com, bob@example.com") -> EmailMessage:
    """A plain-text message."""
    built = EmailMessage()
    built["From"] = "support@example.com"
    built["To"] = to
    built["Subject"] = "Your order"
    built["Message-ID"] = message_id
    built.set_content("It shipped.")
    return built


async def test_smtp_round_trip_and_http_reader(
    mail: MailSandbox, http: aiohttp.ClientSession
) -> None:
    await asyncio.to_thread(send, mail.port, message("<m1@example.com>"))
    async with http.get(f"{mail.http_url}/messages", params={"to": "Ada@Example.com"}) as reply:
        found = (await reply.json())["messages"]
    assert len(found) == 1
    assert found[0]["subject"] == "Your order"
    assert found[0]["body"].strip() == "It shipped."
    assert found[0]["message_id"] == "<m1@example.com>"
    assert len(mail.mailboxes.messages("bob@example.com")) == 1
    async with http.delete(f"{mail.http_url}/messages") as reply:
        assert reply.status == 200
    assert mail.mailboxes.messages() == []


async def test_a_resent_message_id_is_filed_once(mail: MailSandbox) -> None:
    for _ in range(2):
        await asyncio.to_thread(send, mail.port, message("<same@example.com>", "cy@example.com"))
    await asyncio.to_thread(send, mail.port, message("<other@example.com>", "cy@example.com"))
    ids = [item["message_id"] for item in mail.mailboxes.messages("cy@example.com")]
    assert ids == ["<same@example.com>", "<other@example.com>"]
    assert mail.mailboxes.duplicates == 1
