"""In-process sandboxes on free ports, and an HTTP client for them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.sandbox.crm import CrmSandbox
from services.sandbox.mail import MailSandbox
from services.sandbox.payment import PaymentSandbox


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def payment() -> AsyncIterator[PaymentSandbox]:
    """A payment sandbox without webhooks."""
    sandbox = PaymentSandbox()
    await sandbox.run(port=0)
    try:
        yield sandbox
    finally:
        await sandbox.close()


@pytest.fixture
async def crm() -> AsyncIterator[CrmSandbox]:
    """A CRM sandbox."""
    sandbox = CrmSandbox()
    await sandbox.run(port=0)
    try:
        yield sandbox
    finally:
        await sandbox.close()


@pytest.fixture
async def mail() -> AsyncIterator[MailSandbox]:
    """A mail sandbox (SMTP and its HTTP reader)."""
    sandbox = MailSandbox()
    await sandbox.run(port=0)
    try:
        yield sandbox
    finally:
        await sandbox.close()
