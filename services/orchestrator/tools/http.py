"""JSON over HTTP to third-party providers, their error envelopes mapped to domain errors.

A provider's ``{"error": {"code": …}}`` travels in the raised error's metadata as
``provider_code``, so a tool can turn a specific refusal (e.g. "already refunded") into the
idempotent success it stands for.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from services.kit import errors

JsonObject = dict[str, Any]
PROVIDER_CODE = "provider_code"
_IN_USE = "idempotency_key_in_use"
_MISMATCH = "idempotency_key_mismatch"


class JsonClient:
    """Calls to one provider's JSON API."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, *, provider: str, api_key: str = ""
    ) -> None:
        """Use ``session`` for ``base_url``; ``api_key`` goes out as a bearer token."""
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.provider = provider
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def request(
        self, method: str, path: str, *, body: JsonObject | None = None, idempotency_key: str = ""
    ) -> JsonObject:
        """Send one request; a 2xx answer's JSON object, else a mapped :class:`DomainError`."""
        headers = dict(self._headers)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        try:
            async with self._session.request(
                method, self._base_url + path, json=body, headers=headers
            ) as response:
                text = await response.text()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except aiohttp.ClientError as error:
            raise errors.Unavailable(
                f"{self.provider} is unreachable: {type(error).__name__}",
                metadata={"provider": self.provider},
            ) from error
        payload = _parse(text)
        if 200 <= status < 300 and payload is not None:
            return payload
        raise _to_error(self.provider, status, payload or {}, retry_after)


def _parse(text: str) -> JsonObject | None:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _to_error(
    provider: str, status: int, payload: JsonObject, retry_after: str | None
) -> errors.DomainError:
    detail = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    assert isinstance(detail, dict)
    code = str(detail.get("code", ""))
    message = f"{provider}: {detail.get('message') or f'HTTP {status}'}"
    metadata = {"provider": provider, PROVIDER_CODE: code, "http_status": str(status)}
    if status == 402:
        return errors.FailedPrecondition(message, metadata=metadata)
    if status == 404:
        return errors.NotFound(message, metadata=metadata)
    if status == 409:
        if code == _IN_USE:  # the same request is still running: retry later
            return errors.Aborted(message, metadata=metadata)
        if code == _MISMATCH:
            return errors.AlreadyExists(message, metadata=metadata)
        return errors.FailedPrecondition(message, metadata=metadata)
    if status == 429:
        delay = float(retry_after) if retry_after and retry_after.isdigit() else None
        return errors.ResourceExhausted(message, metadata=metadata, retry_after_s=delay)
    if status in (401, 403):
        return errors.Internal(f"{provider} refused the platform's credentials", metadata=metadata)
    if 400 <= status < 500:
        return errors.InvalidArgument(message, metadata=metadata)
    return errors.Unavailable(message, metadata=metadata)


def provider_code(error: errors.DomainError) -> str:
    """The provider's own error code carried by ``error`` ('' when there is none)."""
    return error.metadata.get(PROVIDER_CODE, "")
